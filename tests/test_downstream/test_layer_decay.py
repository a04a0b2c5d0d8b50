"""ViTLayerDecayOptimWrapperConstructor: depths, lr and weight decay by hand,
and the same constructor inside real mmpretrain, mmseg and mmdet models."""
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, DefaultScope

from mmhybrid.engine.optimizers import (ViTLayerDecayOptimWrapperConstructor,
                                        get_vit_layer_depth)
from .conftest import DEMO, ROOT


class _Block(nn.Module):

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.ln = nn.LayerNorm(4)


class _ToyViT(nn.Module):

    def __init__(self, num_layers=2):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, 4))
        self.patch_embed = nn.Module()
        self.patch_embed.projection = nn.Conv2d(3, 4, 2, 2)
        self.layers = nn.ModuleList(_Block() for _ in range(num_layers))
        self.ln1 = nn.LayerNorm(4)


class _ToyModel(nn.Module):

    def __init__(self, backbone_num_layers_attr=True):
        super().__init__()
        self.backbone = _ToyViT()
        if backbone_num_layers_attr:
            self.backbone.num_layers = 2
        self.neck = nn.Module()
        self.neck.conv = nn.Conv2d(4, 4, 1)
        self.head = nn.Module()
        self.head.fc = nn.Linear(4, 3)


# (depth, lr scale, weight decay) by hand for rate 0.5, 2 blocks, wd 0.1:
# scale = 0.5 ** (num_layers + 1 - depth)
EXPECTED = {
    'backbone.cls_token': (0, 0.125, 0.0),
    'backbone.pos_embed': (0, 0.125, 0.0),
    'backbone.patch_embed.projection.weight': (0, 0.125, 0.1),
    'backbone.patch_embed.projection.bias': (0, 0.125, 0.0),
    'backbone.layers.0.fc.weight': (1, 0.25, 0.1),
    'backbone.layers.0.fc.bias': (1, 0.25, 0.0),
    'backbone.layers.0.ln.weight': (1, 0.25, 0.0),
    'backbone.layers.0.ln.bias': (1, 0.25, 0.0),
    'backbone.layers.1.fc.weight': (2, 0.5, 0.1),
    'backbone.layers.1.fc.bias': (2, 0.5, 0.0),
    'backbone.layers.1.ln.weight': (2, 0.5, 0.0),
    'backbone.layers.1.ln.bias': (2, 0.5, 0.0),
    'backbone.ln1.weight': (3, 1.0, 0.0),
    'backbone.ln1.bias': (3, 1.0, 0.0),
    'neck.conv.weight': (3, 1.0, 0.1),
    'neck.conv.bias': (3, 1.0, 0.0),
    'head.fc.weight': (3, 1.0, 0.1),
    'head.fc.bias': (3, 1.0, 0.0),
}


def _constructor(rate=0.5, lr=2.0, wd=0.1, **paramwise):
    return ViTLayerDecayOptimWrapperConstructor(
        dict(
            type='OptimWrapper',
            optimizer=dict(type='AdamW', lr=lr, weight_decay=wd)),
        dict(layer_decay_rate=rate, **paramwise))


def _by_name(optim_wrapper):
    """param name -> (lr, weight_decay, layer_depth) in the built optimizer."""
    out = {}
    for group in optim_wrapper.optimizer.param_groups:
        for name in group['param_names']:
            out[name] = (group['lr'], group['weight_decay'],
                         group['layer_depth'])
    return out


@pytest.mark.parametrize('num_layers_attr', [True, False])
def test_hand_computed_lr_and_decay(num_layers_attr):
    model = _ToyModel(num_layers_attr)
    wrapper = _constructor()(model)
    got = _by_name(wrapper)
    assert set(got) == set(EXPECTED) == {
        n
        for n, _ in model.named_parameters()
    }
    for name, (depth, scale, wd) in EXPECTED.items():
        lr, decay, d = got[name]
        assert d == depth, name
        assert lr == pytest.approx(2.0 * scale), name
        assert decay == pytest.approx(wd), name
    # every parameter exactly once; groups share (depth, lr, wd)
    params = [p for g in wrapper.optimizer.param_groups for p in g['params']]
    assert len(params) == len({id(p) for p in params}) == len(EXPECTED)
    keys = [(g['layer_depth'], g['lr'], g['weight_decay'])
            for g in wrapper.optimizer.param_groups]
    assert len(keys) == len(set(keys))


def test_custom_keys_multiply_and_frozen_params_are_left_out():
    model = _ToyModel()
    model.backbone.layers[0].fc.weight.requires_grad_(False)
    wrapper = _constructor(custom_keys={
        'head': dict(lr_mult=10.0),
        'neck.conv.weight': dict(decay_mult=0.5)
    })(
        model)
    got = _by_name(wrapper)
    assert 'backbone.layers.0.fc.weight' not in got
    assert got['head.fc.weight'][0] == pytest.approx(20.0)
    assert got['head.fc.weight'][1] == pytest.approx(0.1)
    assert got['neck.conv.weight'][1] == pytest.approx(0.05)
    assert got['backbone.layers.1.fc.weight'][0] == pytest.approx(1.0)


def test_bad_settings_are_refused():
    with pytest.raises(KeyError, match='bias_decay_mult'):
        _constructor(bias_decay_mult=0.0)
    with pytest.raises(ValueError, match='layer_decay_rate'):
        _constructor(rate=1.5)
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ValueError, match='backbone.layers'):
        _constructor()(model)


def test_depth_rule_matches_mmpretrain_vit():
    """For every parameter of mmpretrain's ViT, the name-based depth equals the
    ViT's own ``get_layer_depth`` (the rule mmpretrain's constructor uses)."""
    from mmpretrain.models import VisionTransformer
    vit = VisionTransformer(
        arch=dict(
            embed_dims=32, num_layers=3, num_heads=2, feedforward_channels=64),
        img_size=32,
        patch_size=8)
    for name, _ in vit.named_parameters():
        full = 'backbone.' + name
        depth, _max = vit.get_layer_depth(full, 'backbone.')
        assert get_vit_layer_depth(full, 3) == depth, name
    assert get_vit_layer_depth('decode_head.conv_seg.weight', 3) == 4
    # the stem also holds a pre-norm (CLIP-style ViTs) in our rule
    assert get_vit_layer_depth('backbone.pre_norm.weight', 3) == 0


def test_registered_in_mmengine_root_and_seen_from_every_scope():
    import mmdet.registry
    import mmpretrain.registry
    import mmseg.registry
    assert OPTIM_WRAPPER_CONSTRUCTORS.get(
        'ViTLayerDecayOptimWrapperConstructor') is \
        ViTLayerDecayOptimWrapperConstructor
    for reg in (mmpretrain.registry, mmseg.registry, mmdet.registry):
        assert reg.OPTIM_WRAPPER_CONSTRUCTORS.get(
            'ViTLayerDecayOptimWrapperConstructor') is \
            ViTLayerDecayOptimWrapperConstructor


@pytest.mark.parametrize('task', ['ft', 'ade20k', 'coco'])
def test_in_real_models_of_each_library(task):
    """Build the tiny demo model of each library and its optimizer from the
    config, as the runner does; check every trainable parameter's lr/decay."""
    cfg = Config.fromfile(osp.join(ROOT, DEMO[task]))
    scope = cfg.default_scope
    from mmengine.registry import MODELS
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(cfg.model)
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    got = _by_name(wrapper)
    base_lr = cfg.optim_wrapper.optimizer.lr
    wd = cfg.optim_wrapper.optimizer.weight_decay
    rate = cfg.optim_wrapper.paramwise_cfg.layer_decay_rate
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert set(got) == set(trainable)
    n_layers = 4
    for name, p in trainable.items():
        lr, decay, depth = got[name]
        if name.startswith('backbone.layers.'):
            assert depth == int(name.split('.')[2]) + 1, name
        elif name in ('backbone.cls_token', 'backbone.pos_embed') or \
                name.startswith('backbone.patch_embed.'):
            assert depth == 0, name
        else:
            assert depth == n_layers + 1, name
        assert lr == pytest.approx(base_lr * rate**(n_layers + 1 - depth))
        no_decay = p.ndim <= 1 or name.endswith(
            ('.bias', 'pos_embed', 'cls_token'))
        assert decay == pytest.approx(0.0 if no_decay else wd), name
    # the heads (decode head / roi head / cls head) get the base lr
    heads = [n for n in got if not n.startswith('backbone.')]
    assert heads and all(got[n][0] == pytest.approx(base_lr) for n in heads)
