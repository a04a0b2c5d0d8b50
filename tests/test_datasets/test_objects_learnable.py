"""The built-in object task is what makes the demo's numbers mean something.

Guard it against regressions by training the demo's own teachers for their full
budget (seeded; about two minutes on two cores).
"""
import os.path as osp
import subprocess
import sys

import pytest

from mmhybrid.miniature.configs import model_options, schedule_options
from mmhybrid.miniature.data import builtin_data, data_options
from mmhybrid.miniature.measures import (attention_stats_of, head_spread,
                                         last_scalar)
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


def train(repo_root, config, work_dir, data, iters, loaders=('train', )):
    cmd = [
        sys.executable, 'tools/train.py', config, '--work-dir', work_dir,
        '--cfg-options', 'randomness.seed=0', f'train_cfg.max_iters={iters}',
        *schedule_options(iters), f'default_hooks.checkpoint.interval={iters}',
        *data_options(data, 0, loaders)
    ]
    if 'val' in loaders:
        cmd.append(f'train_cfg.val_interval={iters}')
    proc = subprocess.run(
        cmd, cwd=repo_root, capture_output=True, text=True, timeout=900)
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


def test_demo_mae_attention_is_local_and_diverse(repo_root, objects, tmp_path):
    """After the demo's 600 MAE iterations the first block attends nearer than
    a random initialisation (as the demo initialises its ViTs) does, its heads
    differ more from each other, and its queries differ more in what they
    attend to.

    Measured (seed 0): layer-1 distance 32.24 vs 32.67 px, head spread 0.84 vs
    0.36 px, layer-1 NMI 0.083 vs 0.028.
    """
    ckpt = train(repo_root, f'{DEMO}/mae_vit-tiny-p8_1xb32-300i_shapes.py',
                 str(tmp_path / 'mae'), objects, 600)
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
