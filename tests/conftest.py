import os
import os.path as osp
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import mmhybrid  # noqa: E402,F401  (registers components, safe-load allow-list)

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope='session')
def repo_root():
    return ROOT


@pytest.fixture(scope='session')
def shapes_imagenet(tmp_path_factory):
    """A small ImageNet-style folder of the built-in generated data."""
    from mmhybrid.datasets import make_imagenet_style
    root = tmp_path_factory.mktemp('shapes') / 'imagenet'
    return make_imagenet_style(str(root), num_train=64, num_val=20, size=64,
                               seed=0)


def _tiny_demo_teacher(path, seed, pre_norm=False):
    """A tiny ViT saved as mmpretrain saves a classifier: {'state_dict':
    {'backbone.*', 'head.*'}, 'meta': ...}."""
    from mmpretrain.models import VisionTransformer
    torch.manual_seed(seed)
    vit = VisionTransformer(
        arch=dict(embed_dims=96, num_layers=4, num_heads=3,
                  feedforward_channels=384),
        img_size=64, patch_size=8, pre_norm=pre_norm)
    vit.init_weights()
    sd = {f'backbone.{k}': v for k, v in vit.state_dict().items()}
    sd['head.layers.head.weight'] = torch.randn(5, 96)
    sd['head.layers.head.bias'] = torch.zeros(5)
    torch.save(dict(state_dict=sd, meta=dict(iter=1)), path)
    return str(path)


@pytest.fixture(scope='session')
def demo_teachers(tmp_path_factory):
    d = tmp_path_factory.mktemp('teachers')
    return (_tiny_demo_teacher(d / 'tc.pth', 1),
            _tiny_demo_teacher(d / 'tm.pth', 2))


DEMO_CONFIG = 'configs/demo/hybrid-distill_vit-tiny-p8_1xb32-300i_shapes.py'


@pytest.fixture(scope='session')
def demo_train_cmd(shapes_imagenet, demo_teachers):
    """``cmd(work_dir, iters, extra=())``: the command line of a short
    ``tools/train.py`` run of the demo HybridDistill config on the generated
    data and the tiny teachers (batch 8, no loader workers, one warm-up
    iteration, a checkpoint at the end); ``extra`` adds ``--cfg-options``."""
    tc, tm = demo_teachers

    def cmd(work_dir, iters, extra=()):
        return [
            sys.executable, 'tools/train.py', DEMO_CONFIG, '--work-dir',
            str(work_dir), '--cfg-options',
            f'train_dataloader.dataset.data_root={shapes_imagenet}',
            f'model.teacher_feat.checkpoint={tc}',
            f'model.teacher_rel.checkpoint={tm}',
            f'train_cfg.max_iters={iters}', 'param_scheduler.0.end=1',
            'param_scheduler.1.begin=1', f'param_scheduler.1.end={iters}',
            'train_dataloader.batch_size=8', 'train_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False',
            f'default_hooks.checkpoint.interval={iters}', *extra
        ]

    return cmd


@pytest.fixture(autouse=True)
def _mmpretrain_default_scope():
    """Each test builds in mmpretrain's scope, whatever an earlier in-process
    Runner (which registers its own default scope) left behind."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        yield
