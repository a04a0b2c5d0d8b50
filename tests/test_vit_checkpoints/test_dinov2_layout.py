"""The official DINOv2 layout converts to mmpretrain's DINOv2 keys, tensor for
tensor.

facebookresearch/dinov2 publishes its backbones as plain state dicts
(``dinov2_vit{s,b,l,g}14{,_reg4}_pretrain.pth``). Each test writes such a file
from a random tiny mmpretrain ``VisionTransformer`` with layer scale, as
mmpretrain's own DINOv2 weights are built, through :func:`published_keys`: the
table written the other way, from the published names to mmpretrain's. Reading
the file back must give the model's own tensors.
"""
from typing import Dict

import pytest
import torch
from mmpretrain.models import VisionTransformer

from mmhybrid.models.backbones.register_vit import RegisterViT
from mmhybrid.utils.checkpoint import CheckpointError
from mmhybrid.vit_checkpoints import (ViTArch, detect_format, load_vit_weights,
                                      read_vit_layout)

EMBED, DEPTH, HEADS, PATCH, IMG = 32, 2, 2, 14, 56
ARCH = dict(
    embed_dims=EMBED,
    num_layers=DEPTH,
    num_heads=HEADS,
    feedforward_channels=2 * EMBED)
NUM_REGISTERS = 4


def published_keys(depth: int, swiglu: bool = False) -> Dict[str, str]:
    """DINOv2's published key -> mmpretrain ``VisionTransformer`` key, for
    every tensor of the encoder (``mask_token`` and ``register_tokens`` are not
    in mmpretrain's model: the tests add them)."""
    table = {
        'cls_token': 'cls_token',
        'pos_embed': 'pos_embed',
        'patch_embed.proj.weight': 'patch_embed.projection.weight',
        'patch_embed.proj.bias': 'patch_embed.projection.bias',
        'norm.weight': 'ln1.weight',
        'norm.bias': 'ln1.bias',
    }
    # ViT-g's SwiGLU MLP keeps its names in mmpretrain's SwiGLUFFNFused
    mlp = {
        'mlp.w12': 'ffn.w12',
        'mlp.w3': 'ffn.w3'
    } if swiglu else {
        'mlp.fc1': 'ffn.layers.0.0',
        'mlp.fc2': 'ffn.layers.1'
    }
    block = {
        'norm1': 'ln1',
        'attn.qkv': 'attn.qkv',
        'attn.proj': 'attn.proj',
        'norm2': 'ln2',
        **mlp
    }
    for i in range(depth):
        for src, dst in block.items():
            for param in ('weight', 'bias'):
                pub, ours = f'{src}.{param}', f'{dst}.{param}'
                table[f'blocks.{i}.{pub}'] = f'layers.{i}.{ours}'
        table[f'blocks.{i}.ls1.gamma'] = f'layers.{i}.attn.gamma1.weight'
        table[f'blocks.{i}.ls2.gamma'] = f'layers.{i}.ffn.gamma2.weight'
    return table


def _mmpretrain_vit(seed: int, swiglu: bool = False) -> VisionTransformer:
    """A tiny mmpretrain ViT with layer scale, as DINOv2's.

    Every tensor is perturbed (LN weights not 1, biases not 0, layer scale not
    its init value), so a dropped or swapped tensor shows.
    """
    torch.manual_seed(seed)
    model = VisionTransformer(
        arch=dict(ARCH),
        img_size=IMG,
        patch_size=PATCH,
        layer_scale_init_value=0.1,
        out_type='raw',
        layer_cfgs=dict(ffn_type='swiglu_fused') if swiglu else dict())
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    model.eval()
    return model


def _published_file(model: VisionTransformer, path: str, swiglu: bool,
                    registers: bool) -> Dict[str, torch.Tensor]:
    """Write ``model`` as DINOv2's ``*_pretrain.pth``; return its tensors."""
    own = model.state_dict()
    table = published_keys(DEPTH, swiglu)
    # the table names every tensor of the model, and only those
    assert sorted(table.values()) == sorted(own)
    sd = {pub: own[mm].clone() for pub, mm in table.items()}
    g = torch.Generator().manual_seed(7)
    sd['mask_token'] = torch.randn(1, EMBED, generator=g)
    if registers:
        sd['register_tokens'] = torch.randn(
            1, NUM_REGISTERS, EMBED, generator=g)
    torch.save(sd, path)
    return sd


@pytest.mark.parametrize('fmt', ['auto', 'dinov2'])
@pytest.mark.parametrize(
    'swiglu', [False, True], ids=['vit_s_b_l14', 'vit_g14_swiglu'])
@pytest.mark.parametrize('registers', [False, True], ids=['plain', 'reg4'])
def test_published_dinov2_file_converts_tensor_for_tensor(
        tmp_path, registers, swiglu, fmt):
    model = _mmpretrain_vit(0, swiglu)
    path = str(tmp_path / 'dinov2_vit14_pretrain.pth')
    published = _published_file(model, path, swiglu, registers)

    raw = torch.load(path, weights_only=True)
    assert detect_format(raw) == 'dinov2'
    vit = read_vit_layout(raw, fmt)
    assert vit.fmt == 'dinov2'
    assert vit.ignored == ['mask_token']  # iBOT's, not the encoder's
    own = model.state_dict()
    extra = {'register_tokens'} if registers else set()
    assert set(vit.state_dict) == set(own) | extra
    for k, v in own.items():
        torch.testing.assert_close(
            vit.state_dict[k],
            v,
            rtol=0,
            atol=0,
            msg=lambda m, k=k: f'{k}: {m}')
    if registers:
        assert vit.state_dict['register_tokens'].shape == (1, NUM_REGISTERS,
                                                           EMBED)
        torch.testing.assert_close(
            vit.state_dict['register_tokens'],
            published['register_tokens'],
            rtol=0,
            atol=0)
    if not swiglu:
        arch = ViTArch.from_state_dict(vit.state_dict, HEADS)
        assert arch.layer_scale and arch.patch_size == (PATCH, PATCH)
        assert arch.grid == (IMG // PATCH, IMG // PATCH)


@pytest.mark.parametrize('swiglu', [False, True])
def test_dinov2_file_loads_into_mmpretrain_vit_and_reproduces_it(
        tmp_path, swiglu):
    """Through the real loading path: every tensor, the source's tokens."""
    src = _mmpretrain_vit(0, swiglu)
    path = str(tmp_path / 'dinov2_vit14_pretrain.pth')
    _published_file(src, path, swiglu, registers=False)
    model = _mmpretrain_vit(1, swiglu)
    x = torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = src(x)[0]
        assert (model(x)[0] - want).abs().max() > 1e-2
        assert load_vit_weights(model, path) == 'dinov2'
        torch.testing.assert_close(model(x)[0], want, rtol=0, atol=1e-6)


def test_registers_into_a_vit_without_them_is_named(tmp_path):
    path = str(tmp_path / 'dinov2_vits14_reg4_pretrain.pth')
    _published_file(_mmpretrain_vit(0), path, False, registers=True)
    with pytest.raises(CheckpointError) as info:
        load_vit_weights(_mmpretrain_vit(1), path)
    msg = str(info.value)
    assert path in msg and '(read as dinov2 layout)' in msg
    assert 'unexpected keys (1): register_tokens' in msg


def test_timm_layer_scale_without_dinov2_tokens_stays_timm(tmp_path):
    """A timm ViT with layer scale (DeiT III, timm's DINOv2 ports) has the
    block names but neither ``mask_token`` nor ``register_tokens``."""
    path = str(tmp_path / 'x.pth')
    sd = _published_file(_mmpretrain_vit(0), path, False, registers=False)
    del sd['mask_token']
    assert detect_format(sd) == 'timm'


def test_reg4_file_loads_into_register_vit(tmp_path):
    """A ``_reg4`` file fills mmhybrid's ``RegisterViT`` (mmpretrain's ViT with
    DINOv2's registers) through the real loading path, registers included."""
    src = _mmpretrain_vit(0)
    path = str(tmp_path / 'dinov2_vits14_reg4_pretrain.pth')
    published = _published_file(src, path, False, registers=True)
    torch.manual_seed(1)
    model = RegisterViT(
        num_register_tokens=NUM_REGISTERS,
        arch=dict(ARCH),
        img_size=IMG,
        patch_size=PATCH,
        layer_scale_init_value=0.1,
        out_type='raw')
    assert load_vit_weights(model, path) == 'dinov2'
    got = model.state_dict()
    for k, v in src.state_dict().items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=0)
    torch.testing.assert_close(
        got['register_tokens'], published['register_tokens'], rtol=0, atol=0)
