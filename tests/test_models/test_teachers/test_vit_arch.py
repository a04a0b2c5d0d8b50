"""ViTArch: one architecture read off ViT weights for teachers, converters
and analysis; head counts of the published widths, never a silent guess."""
import pytest
import torch
from mmpretrain.registry import MODELS

from mmhybrid.analysis.vit_loading import infer_vit_kwargs
from mmhybrid.converters import default_backbone_cfg, timm_model_kwargs
from mmhybrid.utils.sizes import as_pair
from mmhybrid.vit_checkpoints import (LAYER_SCALE_INIT, ViTArch, ViTArchError,
                                      load_vit_state_dict)


def vit_shapes(width,
               depth,
               mlp,
               patch=14,
               grid=16,
               layer_scale=False,
               device='meta'):
    """A state dict in mmpretrain's keys with a ViT's shapes.

    Meta tensors by default: nothing is allocated, so ViT-g costs nothing.
    """

    def t(*shape):
        return torch.zeros(shape, device=device)

    sd = {
        'cls_token': t(1, 1, width),
        'pos_embed': t(1, 1 + grid * grid, width),
        'patch_embed.projection.weight': t(width, 3, patch, patch),
        'patch_embed.projection.bias': t(width),
        'ln1.weight': t(width),
        'ln1.bias': t(width),
    }
    for i in range(depth):
        p = f'layers.{i}.'
        sd.update({
            p + 'ln1.weight': t(width),
            p + 'ln1.bias': t(width),
            p + 'attn.qkv.weight': t(3 * width, width),
            p + 'attn.qkv.bias': t(3 * width),
            p + 'attn.proj.weight': t(width, width),
            p + 'attn.proj.bias': t(width),
            p + 'ln2.weight': t(width),
            p + 'ln2.bias': t(width),
            p + 'ffn.layers.0.0.weight': t(mlp, width),
            p + 'ffn.layers.0.0.bias': t(mlp),
            p + 'ffn.layers.1.weight': t(width, mlp),
            p + 'ffn.layers.1.bias': t(width),
        })
        if layer_scale:
            sd[p + 'attn.gamma1.weight'] = t(width)
            sd[p + 'ffn.gamma2.weight'] = t(width)
    return sd


def test_vit_h14_has_16_heads_of_80_channels():
    # MAE / CLIP ViT-H/14: 1280 wide, 32 blocks, MLP 5120, 16x16 grid at 224
    arch = ViTArch.from_state_dict(vit_shapes(1280, 32, 5120))
    assert (arch.embed_dims, arch.num_layers, arch.num_heads,
            arch.feedforward_channels) == (1280, 32, 16, 5120)
    assert arch.embed_dims // arch.num_heads == 80
    assert arch.patch_size == (14, 14) and arch.grid == (16, 16)
    assert arch.img_size == (224, 224)
    assert arch.qkv_bias and arch.patch_bias and arch.final_norm
    assert not (arch.pre_norm or arch.fc_norm or arch.layer_scale)


def test_vit_g14_has_16_heads():
    # EVA / OpenCLIP ViT-g/14: 1408 wide, 40 blocks, MLP 6144
    arch = ViTArch.from_state_dict(vit_shapes(1408, 40, 6144))
    assert (arch.num_layers, arch.num_heads) == (40, 16)


@pytest.mark.parametrize('width,heads', [(192, 3), (384, 6), (768, 12),
                                         (1024, 16), (1280, 16), (1408, 16),
                                         (1664, 16)])
def test_published_width_gives_its_heads_at_any_depth(width, heads):
    # a depth no zoo entry has (a truncated teacher): the width decides
    sd = vit_shapes(width, 2, 4 * width, grid=2)
    assert ViTArch.from_state_dict(sd).num_heads == heads


def test_mmpretrain_zoo_entry_wins_over_the_width():
    # mmpretrain's 'small' is 768 wide with 8 heads (not ViT-B's 12)
    assert ViTArch.from_state_dict(vit_shapes(768, 8, 2304)).num_heads == 8


def test_unknown_width_is_an_error_unless_heads_are_given():
    sd = vit_shapes(96, 2, 384, patch=8, grid=4)
    with pytest.raises(ViTArchError, match='96-wide ViT.*pass num_heads'):
        ViTArch.from_state_dict(sd)
    assert ViTArch.from_state_dict(sd, num_heads=3).num_heads == 3
    with pytest.raises(ViTArchError, match='width 96 is not divisible into 5'):
        ViTArch.from_state_dict(sd, num_heads=5)


def test_not_a_vit_and_non_square_grid_are_named():
    sd = vit_shapes(192, 1, 768, grid=2)
    del sd['cls_token']
    with pytest.raises(ViTArchError, match=r"missing \['cls_token'\]"):
        ViTArch.from_state_dict(sd)
    sd = vit_shapes(192, 1, 768, grid=2)
    sd['pos_embed'] = torch.zeros(1, 1 + 6, 192, device='meta')
    with pytest.raises(ViTArchError, match='6 patch positions.*not a square'):
        ViTArch.from_state_dict(sd)


def test_arch_of_another_width_or_depth_is_named():
    sd = vit_shapes(192, 2, 768, grid=2)
    with pytest.raises(
            ViTArchError,
            match='has width 768 and depth 12; the checkpoint has '
            'width 192 and depth 2'):
        ViTArch.from_state_dict(
            sd,
            arch=dict(embed_dims=768, num_layers=12, num_heads=12),
            arch_name='--arch b')


def test_converters_and_analysis_read_the_same_arch():
    """Same ViT-H/14 weights -> same heads, MLP and layer scale in the
    converter's target, the timm export and the analysis model."""
    sd = vit_shapes(1280, 32, 5120, layer_scale=True)
    arch = ViTArch.from_state_dict(sd)
    conv = default_backbone_cfg(arch, 224)
    analysis = infer_vit_kwargs(sd, 'timm')
    assert conv['arch'] == analysis['arch'] == dict(
        embed_dims=1280,
        num_layers=32,
        num_heads=16,
        feedforward_channels=5120)
    assert conv['layer_scale_init_value'] == LAYER_SCALE_INIT
    assert analysis['layer_scale_init_value'] == LAYER_SCALE_INIT
    assert timm_model_kwargs(arch, 224)['init_values'] == LAYER_SCALE_INIT
    assert timm_model_kwargs(arch, 224)['num_heads'] == 16


def test_kwargs_build_a_model_with_exactly_these_tensors():
    # a one-block ViT-H/14 (real tensors, 2x2 grid): strict load, with layer
    # scale and without a patch bias (OpenAI CLIP has none)
    sd = vit_shapes(1280, 1, 5120, grid=2, layer_scale=True, device='cpu')
    del sd['patch_embed.projection.bias']
    arch = ViTArch.from_state_dict(sd, num_heads=16)
    assert not arch.patch_bias and arch.layer_scale
    model = MODELS.build(
        dict(type='HybridViT', **arch.vit_kwargs(), out_type='raw'))
    load_vit_state_dict(model, sd, 'vit_h14_one_block.pth', 'mmpretrain')
    assert model.num_heads == 16 and tuple(model.img_size) == (28, 28)


def test_as_pair():
    assert as_pair(224) == (224, 224)
    assert as_pair([224]) == (224, 224)
    assert as_pair((512, 1024)) == (512, 1024)
    assert as_pair(16, float) == (16.0, 16.0)


def test_teacher_of_the_wrong_arch_names_what_the_file_holds(tmp_path):
    """A teacher configured narrower than its file: the error says what the
    file is, read by the same ViTArch."""
    from mmhybrid.testing import tiny_vit_cfg
    from mmhybrid.utils.checkpoint import CheckpointError
    sd = vit_shapes(64, 2, 128, patch=8, grid=4, device='cpu')
    model = MODELS.build(
        tiny_vit_cfg(
            dict(
                embed_dims=48,
                num_layers=2,
                num_heads=3,
                feedforward_channels=96)))
    with pytest.raises(
            CheckpointError,
            match='the file holds a ViT of width 64, depth 2, MLP '
            '128, patch 8x8, 4x4 position grid'):
        load_vit_state_dict(model, sd, 'wide.pth', 'mmpretrain')
