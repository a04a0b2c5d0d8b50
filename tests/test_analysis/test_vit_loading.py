"""A ViT for analysis from any supported checkpoint layout, and the image
reader."""
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from timm.models.vision_transformer import VisionTransformer as TimmViT

from mmhybrid.analysis.vit_loading import (CLIP_MEAN, IMAGENET_MEAN,
                                           infer_vit_kwargs, load_images,
                                           parse_arch, vit_from_checkpoint,
                                           vit_from_config)
from mmhybrid.testing import DEMO_ARCH
from mmhybrid.utils.checkpoint import CheckpointError

EMBED, DEPTH, HEADS = 48, 2, 3


def _perturb(module: nn.Module, seed: int, scale: float = 0.05) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    module.eval()
    return module


def _x(n=2, size=32, seed=3):
    return torch.randn(
        n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_parse_arch():
    assert parse_arch('b') == 'b'
    assert parse_arch('Base') == 'base'
    assert parse_arch('96,4,3') == dict(
        embed_dims=96, num_layers=4, num_heads=3, feedforward_channels=384)
    assert parse_arch('96,4,3,200')['feedforward_channels'] == 200
    d = dict(embed_dims=8, num_layers=1, num_heads=2, feedforward_channels=16)
    assert parse_arch('{"embed_dims": 8, "num_layers": 1, "num_heads": 2, '
                      '"feedforward_channels": 16}') == d
    assert parse_arch('dict(embed_dims=8, num_layers=1, num_heads=2, '
                      'feedforward_channels=16)') == d
    with pytest.raises(ValueError):
        parse_arch('gigantic')


def test_timm_checkpoint_arch_read_off_the_weights(tmp_path):
    torch.manual_seed(0)
    src = _perturb(
        TimmViT(
            img_size=32,
            patch_size=8,
            embed_dim=EMBED,
            depth=DEPTH,
            num_heads=HEADS,
            mlp_ratio=2,
            num_classes=0), 1)
    path = tmp_path / 'timm_vit.pth'
    torch.save({'model': src.state_dict()}, path)
    vit = vit_from_checkpoint(str(path), 'auto', num_heads=HEADS)
    assert vit.img_size == (32, 32) and vit.patch_size == (8, 8)
    assert vit.grid_hw == (4, 4) and vit.model.num_heads == HEADS
    assert vit.mean == IMAGENET_MEAN
    x = _x()
    with torch.no_grad():
        ours = vit.model.forward_distill(x).tokens
        ref = src.forward_features(x)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    # a wrong --arch is refused with both shapes named
    with pytest.raises(CheckpointError, match='width'):
        vit_from_checkpoint(str(path), 'timm', arch='b')
    # another image size resizes the position embedding
    vit = vit_from_checkpoint(str(path), 'timm', num_heads=HEADS, img_size=48)
    assert vit.grid_hw == (6, 6)


def test_checkpoint_file_is_read_once(tmp_path, monkeypatch):
    """The architecture and the weights come from one read of the file (a
    CLIP-L or ViT-L checkpoint is over a gigabyte)."""
    torch.manual_seed(0)
    src = TimmViT(
        img_size=32,
        patch_size=8,
        embed_dim=EMBED,
        depth=DEPTH,
        num_heads=HEADS,
        mlp_ratio=2,
        num_classes=0)
    path = tmp_path / 'timm_vit.pth'
    torch.save({'model': src.state_dict()}, path)
    reads = []
    real = torch.load

    def counting_load(f, *args, **kwargs):
        reads.append(str(f))
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch, 'load', counting_load)
    vit_from_checkpoint(str(path), 'auto', num_heads=HEADS)
    assert reads == [str(path)]


def test_openai_clip_checkpoint_gets_clip_norm_and_quick_gelu(tmp_path):
    from mmpretrain.models.utils.clip_generator_helper import \
        VisionTransformer as ClipVisionTransformer
    torch.manual_seed(9)
    tower = _perturb(
        ClipVisionTransformer(
            input_resolution=32,
            patch_size=8,
            width=EMBED,
            layers=DEPTH,
            heads=HEADS,
            output_dim=24), 10)
    sd = {f'visual.{k}': v for k, v in tower.state_dict().items()}
    sd['logit_scale'] = torch.tensor(4.6)  # text-side tensor, ignored
    path = tmp_path / 'clip.pt'
    torch.save(sd, path)
    vit = vit_from_checkpoint(str(path), 'auto', num_heads=HEADS)
    assert vit.mean == CLIP_MEAN
    assert 'openai_clip' in vit.source
    seen = []
    h = tower.ln_post.register_forward_hook(lambda m, i, o: seen.append(o))
    x = _x(seed=4)
    with torch.no_grad():
        tower(x)
        ours = vit.model.forward_distill(x).tokens
    h.remove()
    torch.testing.assert_close(ours, seen[0], rtol=0, atol=1e-5)


def test_student_checkpoint_and_config(tmp_path):
    """A HybridDistill student checkpoint ({'state_dict': backbone.*, neck.*})
    through a config and as a bare file give the same model."""
    from mmengine.config import Config
    from mmpretrain.models import VisionTransformer
    torch.manual_seed(1)
    arch = dict(DEMO_ARCH)
    vit = _perturb(VisionTransformer(arch=arch, img_size=64, patch_size=8), 2)
    sd = {f'backbone.{k}': v for k, v in vit.state_dict().items()}
    sd['neck.proj.weight'] = torch.randn(96, 96)
    path = tmp_path / 'student.pth'
    torch.save(dict(state_dict=sd, meta=dict(iter=1)), path)

    a = vit_from_checkpoint(str(path), arch='96,4,3')
    cfg = Config.fromfile(
        'configs/demo/hybrid-distill_vit-tiny-p8_1xb32-300i_shapes.py')
    b = vit_from_config(cfg, 'student', str(path))
    for k, v in a.model.state_dict().items():
        torch.testing.assert_close(v, b.model.state_dict()[k], rtol=0, atol=0)
    assert b.mean == IMAGENET_MEAN
    with pytest.raises(ValueError, match='--checkpoint'):
        vit_from_config(cfg, 'student')
    # a teacher of the config: its own checkpoint entry is used
    cfg.model.teacher_rel.checkpoint = str(path)
    c = vit_from_config(cfg, 'teacher_rel')
    assert str(path) in c.source
    # an MAE config's backbone (MAEViT) maps onto HybridViT too
    mae = Config.fromfile('configs/demo/mae_vit-tiny-p8_1xb32-300i_shapes.py')
    d = vit_from_config(mae, 'student', str(path))
    assert d.model.num_layers == 4


def test_load_images(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / 'a' / 'b').mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (40, 80, 3), dtype=np.uint8)).save(
        tmp_path / 'a' / 'wide.png')
    Image.fromarray(rng.integers(0, 255, (30, 20), dtype=np.uint8)).save(
        tmp_path / 'a' / 'b' / 'gray.jpg')
    (tmp_path / 'notes.txt').write_text('not an image')
    imgs, paths = load_images(str(tmp_path), 32)
    assert imgs.shape == (2, 3, 32, 32) and imgs.dtype == torch.uint8
    assert [os.path.basename(p) for p in paths] == ['gray.jpg', 'wide.png']
    one, p1 = load_images(str(tmp_path), (16, 24), num_images=1, seed=0)
    assert one.shape == (1, 3, 16, 24)
    assert load_images(str(tmp_path), 16, 1, seed=0)[1] == p1  # seeded
    # centre crop of the wide image keeps its middle
    big = np.zeros((10, 30, 3), np.uint8)
    big[:, 10:20] = 255
    (tmp_path / 'c').mkdir()
    Image.fromarray(big).save(tmp_path / 'c' / 'bar.png')
    img, _ = load_images(str(tmp_path / 'c'), 10)
    assert img.float().mean() > 250
    with pytest.raises(FileNotFoundError):
        load_images(str(tmp_path / 'missing'), 32)
    with pytest.raises(FileNotFoundError):
        load_images(str(tmp_path / 'a' / 'b' / 'none'), 32)


def test_infer_kwargs_flags():
    sd = {
        'patch_embed.projection.weight': torch.zeros(16, 3, 4, 4),
        'pos_embed': torch.zeros(1, 1 + 9, 16),
        'cls_token': torch.zeros(1, 1, 16),
        'pre_norm.weight': torch.ones(16),
        'layers.0.ffn.layers.0.0.weight': torch.zeros(32, 16),
        'layers.0.attn.gamma1.weight': torch.ones(16),
    }
    kw = infer_vit_kwargs(sd, 'timm', num_heads=2)
    assert kw['arch'] == dict(
        embed_dims=16, num_layers=1, num_heads=2, feedforward_channels=32)
    assert kw['img_size'] == (12, 12) and kw['patch_size'] == 4
    assert kw['pre_norm'] and not kw['final_norm'] and not kw['qkv_bias']
    assert kw['layer_scale_init_value'] > 0
    no_cls = {k: v for k, v in sd.items() if k != 'cls_token'}
    no_cls['pos_embed'] = torch.zeros(1, 9, 16)
    with pytest.raises(CheckpointError, match='cls_token'):
        infer_vit_kwargs(no_cls, 'timm', num_heads=2)
