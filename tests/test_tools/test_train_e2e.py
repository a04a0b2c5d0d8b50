"""tools/train.py, tools/dist_train.sh end to end on the demo config (CPU)."""
import glob
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mmhybrid.testing import DEMO_ARCH
from mmhybrid.testing import DEMO_CONFIG as CONFIG
from mmhybrid.testing import DemoRun
from mmhybrid.utils.scalars import read_scalars

pytestmark = pytest.mark.slow


def _options(data, teachers, iters, extra=()):
    return DemoRun(data, teachers, iters, extra=extra).options()


def _train(repo_root, work_dir, data, teachers, iters, extra=(), args=()):
    cmd = [
        sys.executable, 'tools/train.py', CONFIG, '--work-dir',
        str(work_dir), *args
    ] + _options(data, teachers, iters, extra)
    proc = subprocess.run(
        cmd, cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _scalars(work_dir):
    return read_scalars(work_dir, required=True)


def test_train_loss_falls_and_checkpoint_is_student_only(
        repo_root, tmp_path, shapes_imagenet, demo_teachers):
    work = tmp_path / 'run'
    _train(repo_root, work, shapes_imagenet, demo_teachers, 40,
           ['default_hooks.checkpoint.interval=40'])
    recs = [r for r in _scalars(work) if 'loss' in r]
    assert len(recs) == 40
    first = sum(r['loss'] for r in recs[:5]) / 5
    last = sum(r['loss'] for r in recs[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    ratios = [r['mask_ratio'] for r in recs]
    assert ratios[0] == pytest.approx(0.0)
    assert ratios == sorted(ratios) and ratios[-1] > 0.45

    ckpt = torch.load(work / 'iter_40.pth', weights_only=True)
    keys = list(ckpt['state_dict'])
    assert not [k for k in keys if 'teacher' in k]
    assert {k.split('.')[0]
            for k in keys} <= {'backbone', 'neck', 'data_preprocessor'}
    # the student loads into mmpretrain's own ViT with zero missing keys
    from mmpretrain.models import VisionTransformer
    vit = VisionTransformer(arch=dict(DEMO_ARCH), img_size=64, patch_size=8)
    backbone = {
        k[len('backbone.'):]: v
        for k, v in ckpt['state_dict'].items() if k.startswith('backbone.')
    }
    result = vit.load_state_dict(backbone, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_resume_continues_schedule(repo_root, tmp_path, shapes_imagenet,
                                   demo_teachers):
    full = tmp_path / 'full'
    _train(repo_root, full, shapes_imagenet, demo_teachers, 12,
           ['default_hooks.checkpoint.interval=6'])
    resumed = tmp_path / 'resumed'
    _train(repo_root, resumed, shapes_imagenet, demo_teachers, 12,
           ['default_hooks.checkpoint.interval=6'],
           ['--resume', str(full / 'iter_6.pth')])
    a = {r['iter']: r for r in _scalars(full) if 'loss' in r}
    b = {r['iter']: r for r in _scalars(resumed) if 'loss' in r}
    assert min(b) == 7 and max(b) == 12  # counter restored
    for it in range(7, 13):
        assert b[it]['mask_ratio'] == pytest.approx(a[it]['mask_ratio'])
        assert b[it]['lr'] == pytest.approx(a[it]['lr'])


def test_dist_train_two_processes_gloo(repo_root, tmp_path, shapes_imagenet,
                                       demo_teachers):
    work = tmp_path / 'dist'
    env = dict(
        os.environ, PYTHON=sys.executable, PORT='29517', OMP_NUM_THREADS='1')
    cmd = [
        'bash', 'tools/dist_train.sh', CONFIG, '2', '--work-dir',
        str(work)
    ] + _options(shapes_imagenet, demo_teachers, 6,
                 ['default_hooks.checkpoint.interval=6'])
    proc = subprocess.run(
        cmd,
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=600,
        env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert osp.isfile(work / 'iter_6.pth')
    log = open(glob.glob(osp.join(work, '*', '*.log'))[0]).read()
    assert 'Distributed training: True' in log


FLEXIBLE = ('configs/demo/'
            'hybrid-distill_vit-tiny-p8_1xb32-flexible-ddp-300i_shapes.py')


def _train_flexible(repo_root, work, data, teachers, port, args=()):
    """4 iterations of the FlexibleRunner + DDPStrategy config (the FSDP /
    DeepSpeed path) through the real launcher, one gloo process, checkpoints at
    2 and 4."""
    env = dict(
        os.environ, PYTHON=sys.executable, PORT=str(port), OMP_NUM_THREADS='1')
    cmd = [
        'bash', 'tools/dist_train.sh', FLEXIBLE, '1', '--work-dir',
        str(work), *args
    ] + _options(data, teachers, 4, [
        'default_hooks.checkpoint.interval=2', 'train_dataloader.num_workers=0'
    ])
    proc = subprocess.run(
        cmd,
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=600,
        env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope='module')
def flexible_work(repo_root, tmp_path_factory, shapes_imagenet, demo_teachers):
    work = tmp_path_factory.mktemp('flexible') / 'full'
    _train_flexible(repo_root, work, shapes_imagenet, demo_teachers, 29519)
    return work


def test_flexible_runner_ddp_strategy_trains_with_mmhybrid_hooks(
        flexible_work):
    log = open(glob.glob(osp.join(flexible_work, '*', '*.log'))[0]).read()
    assert 'Distributed launcher: pytorch' in log
    # the strategy ran it: its runtime environment lists the launcher and the
    # randomness settings (mmengine's Runner logs neither entry)
    assert '\n    launcher: pytorch\n    randomness: {' in log
    # the hooks tools/train.py adds, and the config's own, ran
    for hook in ('ExactResumeHook', 'NonFiniteLossHook',
                 'ProgressiveMaskingHook'):
        assert hook in log, hook
    recs = [r for r in _scalars(flexible_work) if 'loss' in r]
    assert [r['iter'] for r in recs] == [1, 2, 3, 4]
    assert recs[-1]['mask_ratio'] > recs[0]['mask_ratio']
    ckpt = torch.load(flexible_work / 'iter_4.pth', weights_only=True)
    assert ckpt['meta']['iter'] == 4
    assert 'rng_state' in ckpt  # ExactResumeHook's part of the checkpoint
    assert not [k for k in ckpt['state_dict'] if 'teacher' in k]


def test_flexible_runner_resumes_exactly(repo_root, tmp_path, flexible_work,
                                         shapes_imagenet, demo_teachers):
    resumed = tmp_path / 'resumed'
    _train_flexible(repo_root, resumed, shapes_imagenet, demo_teachers, 29520,
                    ['--resume', str(flexible_work / 'iter_2.pth')])
    full = {r['iter']: r for r in _scalars(flexible_work) if 'loss' in r}
    again = {r['iter']: r for r in _scalars(resumed) if 'loss' in r}
    assert sorted(again) == [3, 4]
    for it in (3, 4):
        assert again[it]['loss'] == full[it]['loss'], it
        assert again[it]['mask_ratio'] == full[it]['mask_ratio'], it


def test_leave_together_destroys_the_process_group(tmp_path):
    """tools/train.py ends a distributed run with a barrier and an explicit
    destroy_process_group (left to interpreter shutdown, a gloo rank can abort
    after a finished run); outside one it does nothing."""
    import torch.distributed as dist

    from mmhybrid.apis.train import leave_together
    leave_together()  # not distributed: nothing to do
    dist.init_process_group(
        'gloo',
        init_method=f'file://{tmp_path / "store"}',
        rank=0,
        world_size=1)
    try:
        leave_together()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
