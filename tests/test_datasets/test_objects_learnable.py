"""The built-in object task is what makes the demo's numbers mean something.

Guard it against regressions by training the demo's own teachers for their full
budget (seeded; about two minutes on two cores).
"""
import os
import os.path as osp
import subprocess
import sys

import pytest

from mmhybrid.analysis.attention_report import uniform_reference
from mmhybrid.miniature.configs import model_options, schedule_options
from mmhybrid.miniature.data import builtin_data, data_options
from mmhybrid.miniature.measures import (attention_stats_of, head_spread,
                                         knn_eval, last_scalar, premise)
from mmhybrid.miniature.stages import save_random_init

pytestmark = pytest.mark.slow

DEMO = 'configs/demo'
PROBE = f'{DEMO}/linear-probe_vit-tiny-p8_1xb64-200i_shapes.py'


@pytest.fixture(scope='module')
def objects(tmp_path_factory):
    # the demo's defaults (tools/demo/run_demo.py)
    return builtin_data(
        str(tmp_path_factory.mktemp('data') / 'objects'),
        num_train=5000,
        num_val=500,
        img_size=64)


def train(repo_root,
          config,
          work_dir,
          data,
          iters,
          loaders=('train', ),
          threads=None):
    """One seeded ``tools/train.py`` run; ``threads``: its OMP threads (the
    study's stages run two at a time with one thread each)."""
    cmd = [
        sys.executable, 'tools/train.py', config, '--work-dir', work_dir,
        '--cfg-options', 'randomness.seed=0', f'train_cfg.max_iters={iters}',
        *schedule_options(iters), f'default_hooks.checkpoint.interval={iters}',
        *data_options(data, 0, loaders)
    ]
    if 'val' in loaders:
        cmd.append(f'train_cfg.val_interval={iters}')
    env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
    proc = subprocess.run(
        cmd,
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=900,
        env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return osp.join(work_dir, f'iter_{iters}.pth')


def test_supervised_demo_teacher_learns_the_shapes(repo_root, objects,
                                                   tmp_path):
    """Measured 96.4 % after 300 iterations; 85 % leaves room for platform
    differences and still fails for the old scene task (56-64 %)."""
    work = str(tmp_path / 'sup')
    train(repo_root, f'{DEMO}/vit-tiny-p8_sup_1xb32-300i_shapes.py', work,
          objects, 300, ('train', 'val', 'test'))
    top1 = last_scalar(work, 'accuracy/top1')
    assert top1 >= 85.0, top1


@pytest.fixture(scope='module')
def demo_mae(repo_root, objects, tmp_path_factory):
    """The demo's and the study's relation teacher Tm: 600 MAE iterations."""
    return train(repo_root, f'{DEMO}/mae_vit-tiny-p8_1xb32-300i_shapes.py',
                 str(tmp_path_factory.mktemp('mae')), objects, 600)


def test_demo_mae_attention_is_local_and_diverse(repo_root, objects, demo_mae,
                                                 tmp_path):
    """After the demo's 600 MAE iterations the first block attends nearer than
    a random initialisation (as the demo initialises its ViTs) does, its heads
    differ more from each other, and its queries differ more in what they
    attend to.

    Measured (seed 0): layer-1 distance 32.24 vs 32.67 px, head spread 0.84 vs
    0.36 px, layer-1 NMI 0.083 vs 0.028.
    """
    ckpt = demo_mae
    opts = data_options(objects, 0,
                        ('val', )) + model_options('probe', 64, 8, 5)
    val = osp.join(objects.root, 'val')
    mae = attention_stats_of(osp.join(repo_root, PROBE), opts, ckpt, val, 64)
    rand_ckpt = save_random_init(
        osp.join(repo_root, PROBE), opts, 0, str(tmp_path / 'random.pth'))
    rand = attention_stats_of(
        osp.join(repo_root, PROBE), opts, rand_ckpt, val, 64)
    assert mae['distance'][0].mean() < rand['distance'][0].mean() - 0.25
    assert head_spread(mae) > 1.8 * head_spread(rand)
    assert mae['nmi'][0].mean() > 2 * rand['nmi'][0].mean()
    assert (mae['nmi'] > 0).all()


@pytest.fixture(scope='module')
def study_premise(repo_root, objects, tmp_path_factory):
    """The study's teachers for their full budgets, seed 0, one thread each as
    in the study: Tc (mmpretrain's MoCoV3 with the tiny ViT, 600 iterations)
    and Tm (the MAE, 1800 iterations), on the premise
    (:func:`mmhybrid.miniature.measures.premise`)."""
    work = str(tmp_path_factory.mktemp('tc'))
    tc = train(
        repo_root,
        f'{DEMO}/mocov3_vit-tiny-p8_1xb32-600i_shapes.py',
        work,
        objects,
        600,
        threads=1)
    tm = train(
        repo_root,
        f'{DEMO}/mae_vit-tiny-p8_1xb32-300i_shapes.py',
        work + '/mae',
        objects,
        1800,
        threads=1)
    opts = data_options(objects, 0,
                        ('val', )) + model_options('probe', 64, 8, 5)
    probe, val = osp.join(repo_root, PROBE), osp.join(objects.root, 'val')
    rand = save_random_init(probe, opts, 0, work + '/random.pth')
    stats = {
        k: attention_stats_of(probe, opts, ckpt, val, 64)
        for k, ckpt in (('tc', tc), ('tm', tm), ('rand', rand))
    }
    return premise(stats['tc'], stats['tm'], knn_eval(probe, opts, tc,
                                                      objects),
                   knn_eval(probe, opts, tm, objects),
                   uniform_reference((8, 8), 8)['distance'], stats['rand'])


def test_study_feature_teacher_is_the_better_classifier_with_collapsed_nmi(
        study_premise):
    """What the chosen recipe (issue 21: MoCo v3, 600 iterations at batch 32,
    against the MAE of 1800) does give, measured on seed 0 in the trials:

    k-NN 91.4 % against the MAE's 91.0 %, and the NMI half of the collapse in
    the last two blocks (0.016 / 0.013 against the MAE's 0.144 / 0.126).
    docs/study/report.md has every recipe tried.
    """
    p = study_premise
    assert p['knn_tc'] > p['knn_tm']
    assert p['checks']['Tc block 3 NMI <= 0.5 x Tm']
    assert p['checks']['Tc block 4 NMI <= 0.5 x Tm']


@pytest.mark.xfail(
    strict=True,
    reason='issue 21: no teacher recipe within the study\'s budget produced '
    'the whole premise (docs/study/report.md: Tc\'s heads in the last blocks '
    'differ more than the MAE\'s, not half as much; the MAE\'s block 1 near '
    'uniform)')
def test_study_teachers_have_the_papers_premise(study_premise):
    """The premise as issue 21 states it: in the last two blocks Tc's head
    spread and NMI at most half the MAE's, Tc the better classifier, and the
    MAE's first block local (<= 0.75 x uniform) with heads that differ.

    A recipe that produces it turns this into an XPASS: then drop the xfail.
    """
    assert study_premise['holds'], study_premise['checks']
