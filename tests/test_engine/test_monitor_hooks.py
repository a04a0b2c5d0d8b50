"""AttentionDiversityHook and KNNMonitorHook in a demo run (tools/train.py on
the generated shapes, tiny teachers), against the offline tools on the
checkpoint the run saved; and tools/analysis/plot_training.py on that run.

The run: 7 iterations, checks every 3 (iterations 3 and 6) and at the end (7,
from ``after_train_epoch``), the attention images from the first training batch
(the demo config has no val set), a k-NN bank of half the train images and the
20 val images as queries.
"""
import glob
import os.path as osp
import subprocess
import sys

import pytest

from mmhybrid.analysis.attention_metrics import layer_scalars
from mmhybrid.analysis.attention_report import read_csv
from mmhybrid.analysis.attention_tools import attention_stats_report
from mmhybrid.analysis.knn import knn_eval_report
from mmhybrid.analysis.training_plots import plot_training
from mmhybrid.testing import DEMO_CONFIG, DemoRun
from mmhybrid.utils.scalars import read_scalars

pytestmark = pytest.mark.slow

ITERS = 7
TOL = 1e-5  # the CSV keeps 6 decimals; the computations are the same
LAYERS = 4  # the demo's tiny ViTs

MONITOR_CFG = '''
_base_ = [{base!r}]
_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=64, edge='short', backend='pillow'),
    dict(type='CenterCrop', crop_size=64),
    dict(type='PackInputs'),
]
custom_hooks = [
    dict(type='ProgressiveMaskingHook', final_ratio=0.5, schedule='linear'),
    dict(type='AttentionDiversityHook', interval=3, num_images=6,
         collapse_after=0.0),
    dict(type='KNNMonitorHook', interval=3, by_epoch=False, bank_size=0.5,
         num_workers=0,
         val_dataset=dict(type='CustomDataset', data_root={data!r},
                          data_prefix='val', pipeline=_test_pipeline)),
]
'''


@pytest.fixture(scope='module')
def monitored_run(repo_root, tmp_path_factory, shapes_imagenet, demo_teachers):
    """(work dir, config, teacher options) of the demo run with both hooks."""
    tmp = tmp_path_factory.mktemp('monitored')
    cfg = tmp / 'monitor_cfg.py'
    cfg.write_text(
        MONITOR_CFG.format(
            base=osp.join(repo_root, DEMO_CONFIG), data=shapes_imagenet))
    work = tmp / 'work'
    cmd = [
        sys.executable, 'tools/train.py',
        str(cfg), '--work-dir',
        str(work)
    ] + DemoRun(
        shapes_imagenet,
        demo_teachers,
        ITERS,
        warmup=1,
        num_workers=0,
        checkpoint_interval=ITERS).options()
    proc = subprocess.run(
        cmd, cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    teachers = {
        'model.teacher_feat.checkpoint': demo_teachers[0],
        'model.teacher_rel.checkpoint': demo_teachers[1]
    }
    return str(work), str(cfg), teachers


def _records(work_dir, key):
    return {r['step']: r for r in read_scalars(work_dir) if key in r}


def test_attention_scalars_equal_offline_tool(monitored_run, tmp_path):
    work, cfg, teachers = monitored_run
    student = _records(work, 'attn_distance/student_layer00')
    refs = _records(work, 'attn_distance/teacher_rel_layer00')
    assert sorted(student) == [3, 6, ITERS]
    assert sorted(refs) == [0]  # once, at the start
    for rec in student.values():
        for key in ('attn_collapse/spread_ratio', 'attn_collapse/nmi_ratio'):
            assert rec[key] > 0
    # the images the hook used, as it wrote them
    (images, ) = glob.glob(osp.join(work, '*', 'attention_monitor', 'images'))
    assert len(glob.glob(osp.join(images, '*.png'))) == 6
    checkpoint = osp.join(work, f'iter_{ITERS}.pth')
    for component, rec, ckpt in (('student', student[ITERS],
                                  checkpoint), ('teacher_rel', refs[0], None),
                                 ('teacher_feat', refs[0], None)):
        out = tmp_path / component
        attention_stats_report(
            cfg,
            images,
            str(out),
            component=component,
            num_images=100,
            device='cpu',
            name=component,
            cfg_options=teachers,
            **(dict(checkpoint=ckpt) if ckpt else {}))
        offline = layer_scalars(
            read_csv(str(out / 'attention_stats.csv'))[component])
        for metric in ('distance', 'spread', 'nmi'):
            logged = [
                rec[f'attn_{metric}/{component}_layer{i:02d}']
                for i in range(LAYERS)
            ]
            assert logged == pytest.approx(
                list(offline[metric]), abs=TOL), (component, metric)
    # the text log has one summary line per check
    log = open(glob.glob(osp.join(work, '*', '*.log'))[0]).read()
    assert log.count('attention at iter') == 3
    assert 'attention is collapsing' not in log  # random teachers: no
    # relation teacher diversity to fall short of


def test_knn_top1_logged_equals_knn_eval(monitored_run, shapes_imagenet):
    work, cfg, teachers = monitored_run
    knn = _records(work, 'knn/top1')
    assert sorted(knn) == [3, 6, ITERS]
    result = knn_eval_report(
        cfg,
        shapes_imagenet,
        checkpoint=osp.join(work, f'iter_{ITERS}.pth'),
        bank_size=0.5,
        resize=64,  # the hook's val pipeline: no resize of the 64 px images
        num_workers=0,
        cfg_options=teachers)
    assert (result['num_bank'], result['num_val']) == (32, 20)
    assert knn[ITERS]['knn/top1'] == pytest.approx(result['top1'], abs=1e-9)


def test_plot_training_writes_pngs(monitored_run, repo_root, tmp_path):
    work, _, _ = monitored_run
    out = tmp_path / 'plots'
    proc = subprocess.run([
        sys.executable, 'tools/analysis/plot_training.py', work, '--out',
        str(out)
    ],
                          cwd=repo_root,
                          capture_output=True,
                          text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ('losses', 'mask_ratio', 'attention', 'knn_top1'):
        png = out / f'{name}.png'
        assert f'{name}: {png}' in proc.stdout
        data = png.read_bytes()
        assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 5000, name
    # a folder without a run
    with pytest.raises(FileNotFoundError, match='scalars.json'):
        plot_training(str(tmp_path))
