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


@pytest.fixture(autouse=True)
def _mmpretrain_default_scope():
    """Each test builds in mmpretrain's scope, whatever an earlier in-process
    Runner (which registers its own default scope) left behind."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        yield
