"""What tools/analysis/attention_stats.py and visualize_masking.py run
(mmhybrid.analysis.attention_tools) end to end on tiny checkpoints, and the CLI
once."""
import csv
import math
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mmhybrid.analysis.attention_tools import (attention_stats_report,
                                               masking_schedule_figure)
from mmhybrid.testing import DEMO_ARCH

ARCH = dict(DEMO_ARCH)
HYBRID_CFG = 'configs/demo/hybrid-distill_vit-tiny-p8_1xb32-300i_shapes.py'
PROBE_CFG = 'configs/demo/linear-probe_vit-tiny-p8_1xb64-200i_shapes.py'


@pytest.fixture(scope='module')
def student_ckpt(tmp_path_factory):
    """A tiny student saved as HybridDistill saves one (mmpretrain layout:

    ``backbone.*`` and ``neck.*``), with non-trivial attention.
    """
    from mmpretrain.registry import MODELS
    torch.manual_seed(0)
    vit = MODELS.build(
        dict(
            type='HybridViT',
            arch=ARCH,
            img_size=64,
            patch_size=8,
            out_type='raw'))
    vit.init_weights()
    with torch.no_grad():
        for layer in vit.layers:  # sharper, position-dependent attention
            layer.attn.qkv.weight.mul_(20)
        vit.pos_embed.normal_(0, 1.0)
    sd = {f'backbone.{k}': v for k, v in vit.state_dict().items()}
    sd['neck.proj.weight'] = torch.randn(96, 96)
    sd['neck.proj.bias'] = torch.zeros(96)
    path = tmp_path_factory.mktemp('student') / 'iter_10.pth'
    torch.save(dict(state_dict=sd, meta=dict(iter=10)), path)
    return str(path)


def _read_csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def _check_outputs(out, layers=4, heads=3, grid=8, patch=8):
    rows = _read_csv(osp.join(out, 'attention_stats.csv'))
    assert len(rows) == layers * heads
    assert {(int(r['layer']), int(r['head']))
            for r in rows} == {(i, h)
                               for i in range(layers)
                               for h in range(heads)}
    max_dist = patch * math.hypot(grid - 1, grid - 1)
    for r in rows:
        assert 0.0 <= float(r['attn_distance_px']) <= max_dist
        assert 0.0 <= float(r['attn_entropy_nats']) <= math.log(grid**2) + 1e-4
        assert 0.0 <= float(r['nmi']) <= 1.0
    png = osp.join(out, 'attention_stats.png')
    assert osp.getsize(png) > 1000
    with open(png, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    summary = open(osp.join(out, 'summary.txt')).read().splitlines()
    assert sum(ln.startswith('layer') for ln in summary) == layers
    return rows


def test_attention_stats_checkpoint_source(tmp_path, student_ckpt,
                                           shapes_imagenet):
    out = tmp_path / 'ckpt'
    attention_stats_report(
        student_ckpt,
        osp.join(shapes_imagenet, 'val'),
        str(out),
        arch='96,4,3',
        num_images=6,
        batch_size=4,
        device='cpu')
    rows = _check_outputs(str(out))
    assert rows[0]['model'] == 'iter_10' and rows[0]['num_images'] == '6'
    # the scaled-up q/k make the attention far from uniform
    assert min(float(r['attn_entropy_nats'])
               for r in rows) < math.log(64) - 0.5


def test_attention_stats_config_source_matches(tmp_path, student_ckpt,
                                               shapes_imagenet):
    a, b = tmp_path / 'a', tmp_path / 'b'
    common = dict(
        data=osp.join(shapes_imagenet, 'val'),
        num_images=5,
        device='cpu',
        name='student')
    attention_stats_report(
        HYBRID_CFG, out=str(a), checkpoint=student_ckpt, **common)
    attention_stats_report(student_ckpt, out=str(b), arch='96,4,3', **common)
    ra, rb = _check_outputs(str(a)), _check_outputs(str(b))
    for x, y in zip(ra, rb):
        for k in ('attn_distance_px', 'attn_entropy_nats', 'nmi'):
            assert float(x[k]) == pytest.approx(float(y[k]), abs=1e-5)


def test_attention_stats_teacher_of_config_and_errors(tmp_path, demo_teachers,
                                                      shapes_imagenet):
    tc, tm = demo_teachers
    out = tmp_path / 'tm'
    attention_stats_report(
        HYBRID_CFG,
        osp.join(shapes_imagenet, 'val'),
        str(out),
        component='teacher_rel',
        num_images=3,
        device='cpu',
        cfg_options={'model.teacher_rel.checkpoint': tm})
    rows = _check_outputs(str(out))
    assert rows[0]['model'] == 'teacher_rel'
    # a config source without weights, and a bad file, fail with a message
    with pytest.raises(SystemExit, match='checkpoint'):
        attention_stats_report(PROBE_CFG, shapes_imagenet, str(tmp_path / 'x'))
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(b'not a checkpoint')
    with pytest.raises(SystemExit, match='attention_stats'):
        attention_stats_report(str(bad), shapes_imagenet, str(tmp_path / 'y'))


def test_visualize_masking_config_and_checkpoint(tmp_path, demo_teachers,
                                                 shapes_imagenet, capsys):
    tc, tm = demo_teachers
    out = tmp_path / 'masking.png'
    masking_schedule_figure(
        HYBRID_CFG,
        osp.join(shapes_imagenet, 'val'),
        str(out),
        num_images=3,
        device='cpu',
        cfg_options={
            'model.teacher_feat.checkpoint': tc,
            'model.teacher_rel.checkpoint': tm,
            'train_cfg.max_iters': 100
        })
    text = capsys.readouterr().out
    # the demo config's hook: linear 0 -> 0.5 over max_iters
    assert 'iter 0/100: ratio 0.00, 64/64 kept' in text
    assert 'iter 50/100: ratio 0.25, 48/64 kept' in text
    assert 'iter 100/100: ratio 0.50, 32/64 kept' in text
    from PIL import Image
    with Image.open(out) as im:
        w, h = im.size
    assert w > h > 100  # 3 rows, 7 columns
    # checkpoint source, explicit schedule, deterministic top-k
    out2 = tmp_path / 'dir'
    out2.mkdir()
    masking_schedule_figure(
        tc,
        shapes_imagenet,
        str(out2),
        arch='96,4,3',
        num_images=2,
        final_ratio=0.75,
        schedule='cosine',
        selection='topk',
        points='0,0.5,1')
    text = capsys.readouterr().out
    assert '50% of training: ratio 0.37, 40/64 kept' in text
    assert 'ratio 0.75, 16/64 kept' in text
    assert osp.isfile(out2 / 'masking_schedule.png')
    # a config without the hook (the unmasked study student) keeps every token
    masking_schedule_figure(
        HYBRID_CFG,
        shapes_imagenet,
        str(tmp_path / 'nomask.png'),
        num_images=1,
        cfg_options={
            'model.teacher_feat.checkpoint': tc,
            'custom_hooks': []
        })
    text = capsys.readouterr().out
    assert 'ratio 0.00, 64/64 kept' in text and 'ratio 0.50' not in text


def test_one_seed_gives_nested_kept_sets(repo_root):
    """select_kept_tokens with the same seed at a smaller keep count keeps a
    subset: what lets visualize_masking.py draw one set shrinking over the
    schedule (it seeds a fresh generator per schedule point)."""
    from mmhybrid.models.utils.token_masking import select_kept_tokens
    imp = torch.rand(2, 64, generator=torch.Generator().manual_seed(0))
    sets = []
    for k in (64, 48, 32, 16):
        g = torch.Generator().manual_seed(0)
        sets.append(
            [set(r.tolist()) for r in select_kept_tokens(imp, k, 'sample', g)])
    for bigger, smaller in zip(sets, sets[1:]):
        for a, b in zip(bigger, smaller):
            assert b <= a


@pytest.mark.slow
def test_attention_stats_cli(repo_root, tmp_path, student_ckpt,
                             shapes_imagenet):
    out = tmp_path / 'cli'
    proc = subprocess.run([
        sys.executable, 'tools/analysis/attention_stats.py', student_ckpt,
        '--arch', '96,4,3', '--data', shapes_imagenet, '--out',
        str(out), '--num-images', '4'
    ],
                          cwd=repo_root,
                          capture_output=True,
                          text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert 'layer  3:' in proc.stdout
    _check_outputs(str(out))


@pytest.mark.slow
def test_device_check_compares_every_metric(tmp_path):
    """What tools/analysis/gpu_check.py runs, on cpu against cpu (the GPU run
    is the device check's): a ViT-B checkpoint, stats on both devices, every
    metric compared, the masking figure written."""
    from mmhybrid.analysis.attention_tools import device_check
    got = device_check(
        str(tmp_path / 'out'),
        num_images=2,
        img_size=32,
        work=str(tmp_path / 'work'),
        devices=('cpu', 'cpu'))
    assert set(got['max_abs_diff']) == {'distance', 'entropy', 'nmi'}
    assert all(v == 0.0 for v in got['max_abs_diff'].values())
    assert osp.getsize(tmp_path / 'out' / 'masking.png') > 1000
    assert 'visualize_masking cpu' in got['seconds']


THREE = 'configs/demo/hybrid-distill_vit-tiny-p8_3-teachers_1xb32-4e_shapes.py'


@pytest.fixture(scope='module')
def three_teachers(demo_teachers, tmp_path_factory):
    """The three-teacher demo config's ``--cfg-options`` with tiny files:

    FrozenTeachers ``sup`` and ``mae``, the ZooTeacher ``dino``.
    """
    from mmhybrid.testing import save_zoo_demo_teacher
    dino = save_zoo_demo_teacher(
        str(tmp_path_factory.mktemp('zoo') / 'dino.pth'), 3)
    tc, tm = demo_teachers
    return {
        'model.teachers.sup.teacher.checkpoint': tc,
        'model.teachers.dino.teacher.checkpoint': dino,
        'model.teachers.mae.teacher.checkpoint': tm,
    }


def test_attention_stats_of_a_teachers_config(tmp_path, demo_teachers,
                                              three_teachers, shapes_imagenet):
    val = osp.join(shapes_imagenet, 'val')
    common = dict(num_images=4, device='cpu', cfg_options=three_teachers)
    # the ZooTeacher through its own forward: its 56-px images, 7-px patches
    attention_stats_report(
        THREE, val, str(tmp_path / 'dino'), component='dino', **common)
    rows = _check_outputs(str(tmp_path / 'dino'), grid=8, patch=7)
    assert rows[0]['model'] == 'dino'
    summary = (tmp_path / 'dino' / 'summary.txt').read_text()
    dino = three_teachers['model.teachers.dino.teacher.checkpoint']
    assert f'weights: {dino} (ZooTeacher(VisionTransformer))' in summary
    assert 'at 56x56' in summary
    # a FrozenTeacher of the config: the same numbers as the same file as
    # the two-teacher config's relation teacher
    attention_stats_report(
        THREE, val, str(tmp_path / 'mae'), component='mae', **common)
    attention_stats_report(
        HYBRID_CFG,
        val,
        str(tmp_path / 'rel'),
        component='teacher_rel',
        num_images=4,
        device='cpu',
        name='mae',
        cfg_options={'model.teacher_rel.checkpoint': demo_teachers[1]})
    assert _read_csv(tmp_path / 'mae' / 'attention_stats.csv') == _read_csv(
        tmp_path / 'rel' / 'attention_stats.csv')
    # a name that is no teacher of the config: one line listing them
    with pytest.raises(SystemExit) as err:
        attention_stats_report(
            THREE,
            val,
            str(tmp_path / 'x'),
            component='teacher_feat',
            **common)
    assert str(err.value) == (
        "attention_stats: component 'teacher_feat' is not a teacher of the "
        "config: expected 'student' or one of its teachers (sup, dino, mae)")


def test_visualize_masking_ranks_by_a_teacher_name(tmp_path, three_teachers,
                                                   shapes_imagenet, capsys):
    val = osp.join(shapes_imagenet, 'val')
    opts = dict(three_teachers, **{'train_cfg.max_iters': 100})
    # the config's importance_source='dino': the ZooTeacher's [CLS] attention
    # over its own 8x8 grid
    masking_schedule_figure(
        THREE, val, str(tmp_path / 'm.png'), num_images=2, cfg_options=opts)
    text = capsys.readouterr().out
    assert 'ZooTeacher(VisionTransformer)' in text
    assert 'iter 100/100: ratio 0.50, 32/64 kept' in text
    # 'rel': the first teacher with a relation target
    masking_schedule_figure(
        THREE,
        val,
        str(tmp_path / 'r.png'),
        importance='rel',
        num_images=1,
        cfg_options=opts)
    assert three_teachers['model.teachers.mae.teacher.checkpoint'] in \
        capsys.readouterr().out
    with pytest.raises(
            SystemExit,
            match=r"importance_source 'clip': "
            r"expected 'feat', 'rel' or a teacher of the config "
            r'\(sup, dino, mae\)$'):
        masking_schedule_figure(
            THREE,
            val,
            str(tmp_path / 'x.png'),
            importance='clip',
            cfg_options=opts)


def test_components_and_importance_teacher_of_the_flagship_configs():
    """Read off the configs only (nothing built): the ViT-B three-teacher
    config's components and ranking teacher, and the two-teacher form's."""
    from mmengine.config import Config

    from mmhybrid.analysis.attention_tools import importance_component
    from mmhybrid.analysis.vit_loading import config_components
    three = Config.fromfile(
        'configs/hybrid-distill_vit-base-p16_dinov2-b14-clip-b16-mae-b16_'
        '8xb256-amp-coslr-300e_in1k.py')
    assert set(
        config_components(three)) == {'student', 'dinov2', 'clip', 'mae'}
    assert importance_component(three) == 'dinov2'
    assert importance_component(three, 'rel') == 'mae'
    two = Config.fromfile(HYBRID_CFG)
    assert config_components(two) == ('student', 'teacher_feat', 'teacher_rel')
    assert importance_component(two, 'rel') == 'teacher_rel'
    with pytest.raises(ValueError, match="'dinov2': expected 'feat' or"):
        importance_component(two, 'dinov2')
