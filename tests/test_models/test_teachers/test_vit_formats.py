"""Official ViT checkpoint layouts load into ``HybridViT`` and reproduce the source.

Every checkpoint here is made by an independent implementation where one exists on
this machine (timm, mmpretrain's OpenAI-CLIP port, mmpretrain's own models), saved
in the file wrapping its authors use, and read back through the real loading path
(:func:`load_vit_weights`). The loaded ``HybridViT`` is then run and compared with
the source model's own forward.
"""
import random

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.registry import MODELS
from safetensors.torch import save_file
from timm.models.vision_transformer import Block as TimmBlock
from timm.models.vision_transformer import VisionTransformer as TimmViT

from mmhybrid.models.teachers import load_vit_weights
from mmhybrid.models.teachers.vit_formats import FORMATS
from mmhybrid.testing import tiny_vit_cfg
from mmhybrid.utils.checkpoint import CheckpointError

EMBED, DEPTH, HEADS = 48, 2, 3
ARCH = dict(embed_dims=EMBED, num_layers=DEPTH, num_heads=HEADS,
            feedforward_channels=2 * EMBED)
# OpenAI CLIP's MLP is 4x wide
CLIP_ARCH = dict(ARCH, feedforward_channels=4 * EMBED)
ATOL = 1e-5


def _perturb(module: nn.Module, seed: int, scale: float = 0.05) -> nn.Module:
    """Make every parameter non-trivial (LN weights != 1, biases != 0), so a
    tensor that is dropped, transposed or swapped shows up in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    module.eval()  # mmpretrain backbones' train() returns None
    return module


def _timm_vit(seed=0, img_size=32, embed_dim=EMBED, depth=DEPTH,
              num_heads=HEADS, mlp_ratio=2, num_classes=0, **kw) -> TimmViT:
    torch.manual_seed(seed)
    model = TimmViT(
        img_size=img_size, patch_size=8, embed_dim=embed_dim, depth=depth,
        num_heads=num_heads, mlp_ratio=mlp_ratio, class_token=True,
        global_pool='token', num_classes=num_classes, **kw)
    return _perturb(model, seed + 100)


def _hybrid(arch=ARCH, img_size=32, seed=123, **kw):
    """A randomly initialised HybridViT (weights differ from every source)."""
    torch.manual_seed(seed)
    kw.setdefault('norm_cfg', dict(type='LN', eps=1e-6))
    model = MODELS.build(tiny_vit_cfg(arch, img_size=img_size, patch_size=8,
                                      **kw))
    model.init_weights()
    model.eval()
    return model


def _images(n=2, size=32, seed=7):
    return torch.randn(n, 3, size, size,
                       generator=torch.Generator().manual_seed(seed))


def _tokens(model, x):
    with torch.no_grad():
        return model.forward_distill(x).tokens


def _timm_tokens(timm_model, x):
    with torch.no_grad():
        return timm_model.forward_features(x)


def _assert_untouched(model, before):
    """A refused checkpoint must leave the model's weights as they were."""
    after = model.state_dict()
    assert set(after) == set(before)
    for k in before:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0)


@pytest.fixture(scope='module')
def timm_model():
    return _timm_vit()


@pytest.fixture(scope='module')
def timm_ckpt(tmp_path_factory, timm_model):
    path = tmp_path_factory.mktemp('timm') / 'vit_tiny_timm.pth'
    torch.save(timm_model.state_dict(), path)
    return str(path)


# --------------------------------------------------------------------------- timm
@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
@pytest.mark.parametrize('fmt', ['auto', 'timm'])
def test_timm_state_dict(tmp_path, timm_model, suffix, fmt):
    sd = timm_model.state_dict()
    assert 'blocks.1.mlp.fc2.weight' in sd and 'norm.weight' in sd
    path = str(tmp_path / f'timm_vit{suffix}')
    if suffix == '.safetensors':
        save_file({k: v.contiguous() for k, v in sd.items()}, path)
    else:
        torch.save(sd, path)

    model = _hybrid()
    x = _images()
    assert (_tokens(model, x) - _timm_tokens(timm_model, x)).abs().max() > 1e-2
    assert load_vit_weights(model, path, fmt) == 'timm'

    out = _tokens(model, x)
    assert out.shape == (2, 1 + 16, EMBED)
    torch.testing.assert_close(out, _timm_tokens(timm_model, x),
                               rtol=0, atol=ATOL)


def test_timm_layer_scale(tmp_path):
    """timm's LayerScale (``ls1.gamma``/``ls2.gamma``, DeiT-3/CaiT style)."""
    src = _timm_vit(seed=3, init_values=0.1)
    sd = src.state_dict()
    assert 'blocks.0.ls1.gamma' in sd and 'blocks.0.ls2.gamma' in sd
    path = str(tmp_path / 'deit3_like.pth')
    torch.save(sd, path)
    model = _hybrid(layer_scale_init_value=0.1)
    assert load_vit_weights(model, path) == 'timm'
    x = _images()
    torch.testing.assert_close(_tokens(model, x), _timm_tokens(src, x),
                               rtol=0, atol=ATOL)


# ---------------------------------------------------------- facebookresearch MAE
def _mae_decoder_tensors(seed=5, dec_dim=32, dec_depth=1, num_patches=16,
                         patch=8):
    """The decoder half of facebookresearch/mae ``MaskedAutoencoderViT``:
    its blocks are timm ``Block``s, as in ``models_mae.py``."""
    torch.manual_seed(seed)
    dec = nn.Module()
    dec.decoder_embed = nn.Linear(EMBED, dec_dim)
    dec.mask_token = nn.Parameter(torch.randn(1, 1, dec_dim) * 0.02)
    dec.decoder_pos_embed = nn.Parameter(
        torch.randn(1, num_patches + 1, dec_dim), requires_grad=False)
    dec.decoder_blocks = nn.ModuleList(
        TimmBlock(dec_dim, 4, mlp_ratio=4., qkv_bias=True)
        for _ in range(dec_depth))
    dec.decoder_norm = nn.LayerNorm(dec_dim)
    dec.decoder_pred = nn.Linear(dec_dim, patch**2 * 3)
    return dec.state_dict()


def test_facebookresearch_mae_pretrain_checkpoint(tmp_path, timm_model):
    decoder = _mae_decoder_tensors()
    assert {'mask_token', 'decoder_pos_embed', 'decoder_embed.weight',
            'decoder_blocks.0.attn.qkv.weight', 'decoder_norm.weight',
            'decoder_pred.bias'} <= set(decoder)
    sd = dict(timm_model.state_dict())
    sd.update(decoder)
    path = str(tmp_path / 'mae_pretrain_vit_tiny.pth')
    torch.save({'model': sd}, path)

    model = _hybrid()
    assert load_vit_weights(model, path) == 'timm'
    x = _images()
    torch.testing.assert_close(_tokens(model, x), _timm_tokens(timm_model, x),
                               rtol=0, atol=ATOL)


# ----------------------------------------------------------------------- DINO
def test_dino_released_backbone_checkpoint(tmp_path, timm_model):
    """``dino_vitbase16_pretrain.pth``: a plain timm-like state dict."""
    path = str(tmp_path / 'dino_vittiny8_pretrain.pth')
    torch.save(timm_model.state_dict(), path)
    model = _hybrid()
    assert load_vit_weights(model, path) == 'timm'
    x = _images(seed=11)
    torch.testing.assert_close(_tokens(model, x), _timm_tokens(timm_model, x),
                               rtol=0, atol=ATOL)


def _dino_heads(prefix):
    """Tensors of DINO's ``DINOHead`` (3-layer MLP + weight-normed last layer)."""
    return {
        f'{prefix}head.mlp.0.weight': torch.randn(64, EMBED),
        f'{prefix}head.mlp.0.bias': torch.randn(64),
        f'{prefix}head.mlp.2.weight': torch.randn(64, 64),
        f'{prefix}head.mlp.2.bias': torch.randn(64),
        f'{prefix}head.mlp.4.weight': torch.randn(16, 64),
        f'{prefix}head.mlp.4.bias': torch.randn(16),
        f'{prefix}head.last_layer.weight_g': torch.ones(100, 1),
        f'{prefix}head.last_layer.weight_v': torch.randn(100, 16),
    }


def test_dino_full_training_checkpoint_loads_teacher(tmp_path, timm_model):
    """DINO's ``checkpoint.pth`` (``{'student': {'module.backbone.*', ...},
    'teacher': {'backbone.*', 'head.*'}, ...}``): the EMA teacher's backbone is
    read, its projection head ignored; the student's weights are not used."""
    backbone = timm_model.state_dict()
    teacher = {f'backbone.{k}': v for k, v in backbone.items()}
    teacher.update(_dino_heads(''))
    student = {f'module.backbone.{k}': torch.randn_like(v)
               for k, v in backbone.items()}
    student.update(_dino_heads('module.'))
    path = str(tmp_path / 'dino_checkpoint.pth')
    torch.save(dict(student=student, teacher=teacher, epoch=100,
                    dino_loss={'center': torch.zeros(1, 100)}), path)
    model = _hybrid()
    assert load_vit_weights(model, path) == 'timm'
    x = _images()
    torch.testing.assert_close(_tokens(model, x), _timm_tokens(timm_model, x),
                               rtol=0, atol=ATOL)


# ----------------------------------------------------------------------- DeiT
def test_deit_checkpoint_head_ignored(tmp_path):
    src = _timm_vit(seed=4, num_classes=10)
    sd = src.state_dict()
    assert sd['head.weight'].shape == (10, EMBED) and 'head.bias' in sd
    path = str(tmp_path / 'deit_tiny_patch8_32.pth')
    torch.save({'model': sd}, path)
    model = _hybrid()
    assert load_vit_weights(model, path) == 'timm'
    x = _images()
    torch.testing.assert_close(_tokens(model, x), _timm_tokens(src, x),
                               rtol=0, atol=ATOL)


# ----------------------------------------------------------------- OpenAI CLIP
CLIP_TEACHER_KW = dict(
    pre_norm=True,
    norm_cfg=dict(type='LN', eps=1e-5),
    # scoped: mmcv builds activations from mmengine's root registry
    layer_cfgs=dict(act_cfg=dict(type='mmpretrain.QuickGELU')))


@pytest.fixture(scope='module')
def clip_tower():
    """A tiny OpenAI-CLIP visual tower, from mmpretrain's independent port
    (``clip_generator_helper``: ``nn.MultiheadAttention``, ``conv1`` without
    bias, ``class_embedding``, ``ln_pre``/``ln_post``, QuickGELU)."""
    from mmpretrain.models.utils.clip_generator_helper import \
        VisionTransformer as ClipVisionTransformer
    torch.manual_seed(9)
    tower = ClipVisionTransformer(
        input_resolution=32, patch_size=8, width=EMBED, layers=DEPTH,
        heads=HEADS, output_dim=24)
    return _perturb(tower, 10)


@pytest.fixture(scope='module')
def clip_ckpt(tmp_path_factory, clip_tower):
    sd = {f'visual.{k}': v for k, v in clip_tower.state_dict().items()}
    assert 'visual.conv1.bias' not in sd  # OpenAI CLIP's conv1 has no bias
    # a few tensors of the text tower, which the teacher must ignore
    sd['token_embedding.weight'] = torch.randn(100, 32)
    sd['positional_embedding'] = torch.randn(8, 32)
    sd['transformer.resblocks.0.ln_1.weight'] = torch.ones(32)
    sd['transformer.resblocks.0.attn.in_proj_weight'] = torch.randn(96, 32)
    sd['ln_final.weight'] = torch.ones(32)
    sd['text_projection'] = torch.randn(32, 24)
    sd['logit_scale'] = torch.tensor(4.6052)
    path = tmp_path_factory.mktemp('clip') / 'clip_vit_tiny_8.pt'
    torch.save(sd, path)
    return str(path)


def _clip_tokens(tower, x):
    """All tokens after ``ln_post`` (before ``proj``), from the tower's own
    forward."""
    seen = []
    handle = tower.ln_post.register_forward_hook(
        lambda mod, inp, out: seen.append(out))
    try:
        with torch.no_grad():
            projected, _ = tower(x)
    finally:
        handle.remove()
    (tokens, ) = seen
    # the hook caught what ``proj`` was applied to
    torch.testing.assert_close(projected, tokens @ tower.proj)
    return tokens


def test_openai_clip_visual_tower(clip_tower, clip_ckpt):
    """The CLIP teacher as the shipped configs build it: with ``pre_norm``
    mmpretrain's patch conv has no bias, like OpenAI's ``conv1``."""
    model = _hybrid(CLIP_ARCH, **CLIP_TEACHER_KW)
    assert 'patch_embed.projection.bias' not in model.state_dict()
    assert load_vit_weights(model, clip_ckpt, 'auto') == 'openai_clip'
    x = _images(seed=3)
    ref = _clip_tokens(clip_tower, x)
    assert ref.shape == (2, 17, EMBED)
    torch.testing.assert_close(_tokens(model, x), ref, rtol=0, atol=ATOL)


# ---------------------------------------------------------------- mmpretrain
def _mmengine_checkpoint(model, path):
    """Save as ``Runner.save_checkpoint`` does: meta, state_dict, message_hub
    (whose HistoryBuffers must pass the safe loader)."""
    from mmengine.logging import MessageHub
    from mmengine.runner.checkpoint import save_checkpoint, weights_to_cpu
    hub = MessageHub.get_instance('mmhybrid_test_vit_formats')
    hub.update_scalar('train/loss', 0.5)
    save_checkpoint(
        dict(meta=dict(epoch=1, iter=10, mmengine_version='0.10.7'),
             state_dict=weights_to_cpu(model.state_dict()),
             message_hub=hub.state_dict()), path)


def test_mmpretrain_image_classifier_checkpoint(tmp_path):
    torch.manual_seed(21)
    clf = MODELS.build(
        dict(type='ImageClassifier',
             backbone=dict(type='VisionTransformer', arch=ARCH, img_size=32,
                           patch_size=8, out_type='raw'),
             head=dict(type='VisionTransformerClsHead', num_classes=10,
                       in_channels=EMBED)))
    clf.init_weights()
    _perturb(clf, 22)
    sd = clf.state_dict()
    assert any(k.startswith('head.') for k in sd)
    path = str(tmp_path / 'vit_tiny_in1k.pth')
    _mmengine_checkpoint(clf, path)
    raw = torch.load(path, weights_only=False)
    assert {'meta', 'state_dict', 'message_hub'} <= set(raw)

    model = _hybrid()
    assert load_vit_weights(model, path) == 'mmpretrain'
    x = _images()
    with torch.no_grad():
        ref = clf.backbone(x)[0]
    torch.testing.assert_close(_tokens(model, x), ref, rtol=0, atol=ATOL)


def test_mmpretrain_mae_checkpoint(tmp_path):
    torch.manual_seed(31)
    mae = MODELS.build(
        dict(type='MAE',
             backbone=dict(type='MAEViT', arch=ARCH, img_size=32,
                           patch_size=8),
             neck=dict(type='MAEPretrainDecoder', num_patches=16,
                       patch_size=8, embed_dim=EMBED, decoder_embed_dim=32,
                       decoder_depth=1, decoder_num_heads=4),
             head=dict(type='MAEPretrainHead', patch_size=8,
                       loss=dict(type='PixelReconstructionLoss',
                                 criterion='L2'))))
    mae.init_weights()
    _perturb(mae, 32)
    sd = mae.state_dict()
    assert any(k.startswith('neck.') for k in sd)
    path = str(tmp_path / 'mae_vit-tiny-p8.pth')
    _mmengine_checkpoint(mae, path)

    model = _hybrid()
    assert load_vit_weights(model, path) == 'mmpretrain'
    # zero missing/unexpected keys, every backbone tensor copied exactly
    want = mae.backbone.state_dict()
    got = model.state_dict()
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)
    x = _images()
    with torch.no_grad():
        ref = mae.backbone(x, mask=None)[0]  # the unmasked encoder
    assert ref.shape == (2, 17, EMBED)
    torch.testing.assert_close(_tokens(model, x), ref, rtol=0, atol=ATOL)


# ---------------------------------------------------------------- strictness
@pytest.mark.parametrize('layout', ['timm', 'mmpretrain'])
def test_missing_key_is_named(tmp_path, timm_model, layout):
    if layout == 'timm':
        sd = dict(timm_model.state_dict())
        del sd['blocks.1.norm2.weight']
    else:
        src = _hybrid(seed=5)
        sd = {f'backbone.{k}': v for k, v in src.state_dict().items()}
        del sd['backbone.layers.1.ln2.weight']
    path = str(tmp_path / f'{layout}_missing.pth')
    torch.save(sd, path)
    model = _hybrid()
    before = model.state_dict()
    with pytest.raises(CheckpointError) as e:
        load_vit_weights(model, path)
    msg = str(e.value)
    assert path in msg and f'{layout} layout' in msg
    assert 'missing keys (1): layers.1.ln2.weight' in msg
    assert 'unexpected' not in msg
    _assert_untouched(model, before)


def test_unexpected_key_is_named(tmp_path, timm_model):
    sd = dict(timm_model.state_dict())
    sd['blocks.0.attn.relative_position_bias_table'] = torch.zeros(9, HEADS)
    sd['dist_token'] = torch.zeros(1, 1, EMBED)
    path = str(tmp_path / 'timm_extra.pth')
    torch.save(sd, path)
    model = _hybrid()
    before = model.state_dict()
    with pytest.raises(CheckpointError) as e:
        load_vit_weights(model, path)
    msg = str(e.value)
    assert path in msg
    assert ('unexpected keys (2): dist_token, '
            'layers.0.attn.relative_position_bias_table') in msg
    assert 'missing' not in msg
    _assert_untouched(model, before)


@pytest.mark.parametrize('depth', [1, 3])
def test_wrong_depth(tmp_path, depth):
    src = _timm_vit(seed=6, depth=depth)
    path = str(tmp_path / f'timm_depth{depth}.pth')
    torch.save(src.state_dict(), path)
    model = _hybrid()
    with pytest.raises(CheckpointError) as e:
        load_vit_weights(model, path)
    msg = str(e.value)
    assert path in msg
    if depth == 1:  # the model's block 1 has no weights in the file
        assert 'missing keys (12)' in msg and 'layers.1.attn.qkv.weight' in msg
    else:  # the file's block 2 has no place in the model
        assert 'unexpected keys (12)' in msg
        assert 'layers.2.ffn.layers.0.0.weight' in msg


def test_wrong_mlp_width_names_key_and_shapes(tmp_path):
    src = _timm_vit(seed=7, mlp_ratio=3)
    path = str(tmp_path / 'timm_mlp3.pth')
    torch.save(src.state_dict(), path)
    model = _hybrid()
    before = model.state_dict()
    with pytest.raises(CheckpointError) as e:
        load_vit_weights(model, path)
    msg = str(e.value)
    assert path in msg
    assert 'layers.0.ffn.layers.0.0.weight' in msg
    assert '(144, 48)' in msg and '(96, 48)' in msg
    _assert_untouched(model, before)


def test_wrong_embed_width_names_key_and_shapes(tmp_path):
    src = _timm_vit(seed=8, embed_dim=64, num_heads=4)
    path = str(tmp_path / 'timm_w64.pth')
    torch.save(src.state_dict(), path)
    model = _hybrid()
    with pytest.raises(CheckpointError) as e:
        load_vit_weights(model, path)
    msg = str(e.value)
    assert path in msg
    assert 'cls_token has shape (1, 1, 64)' in msg
    assert 'expects (1, 1, 48)' in msg


def test_nonexistent_path(tmp_path):
    path = str(tmp_path / 'nowhere' / 'teacher.pth')
    with pytest.raises(CheckpointError, match='not found') as e:
        load_vit_weights(_hybrid(), path)
    assert path in str(e.value)


_NOT_CHECKPOINTS = {
    'random': random.Random(0).randbytes(4096),
    # a byte that is no pickle opcode: torch reports "Weights only load
    # failed ... Unsupported operand", which is corruption, not an unsafe file
    'bad_opcode': b'\xdb' + random.Random(1).randbytes(1024),
    'text': b'hello, this is not a checkpoint\n' * 8,
    'png': b'\x89PNG\r\n\x1a\n' + random.Random(2).randbytes(256),
    'empty': b'',
}


@pytest.mark.parametrize('kind', sorted(_NOT_CHECKPOINTS))
@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
def test_not_a_checkpoint_is_not_readable(tmp_path, kind, suffix):
    path = str(tmp_path / f'{kind}{suffix}')
    with open(path, 'wb') as f:
        f.write(_NOT_CHECKPOINTS[kind])
    with pytest.raises(CheckpointError) as e:
        load_vit_weights(_hybrid(), path)
    msg = str(e.value)
    assert path in msg and 'not a readable' in msg
    assert 'refused' not in msg


def test_truncated_checkpoint_not_readable(tmp_path, timm_ckpt):
    path = str(tmp_path / 'truncated.pth')
    with open(timm_ckpt, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(CheckpointError) as e:
        load_vit_weights(_hybrid(), path)
    msg = str(e.value)
    assert path in msg and 'not a readable' in msg


def test_unknown_format_lists_allowed(timm_ckpt):
    with pytest.raises(CheckpointError) as e:
        load_vit_weights(_hybrid(), timm_ckpt, 'caffe2')
    msg = str(e.value)
    assert timm_ckpt in msg and "'caffe2'" in msg
    for fmt in FORMATS:
        assert repr(fmt) in msg


def test_undetectable_layout_asks_for_format(tmp_path):
    path = str(tmp_path / 'mystery.pth')
    torch.save({'encoder.stem.weight': torch.zeros(8, 3, 3, 3),
                'encoder.fc.weight': torch.zeros(4, 8)}, path)
    with pytest.raises(CheckpointError) as e:
        load_vit_weights(_hybrid(), path, 'auto')
    msg = str(e.value)
    assert path in msg and 'checkpoint_format' in msg


def test_wrong_explicit_format_fails_loudly(timm_ckpt):
    model = _hybrid()
    before = model.state_dict()
    with pytest.raises(CheckpointError) as e:
        load_vit_weights(model, timm_ckpt, 'openai_clip')
    msg = str(e.value)
    assert timm_ckpt in msg and 'missing keys' in msg
    _assert_untouched(model, before)


# ------------------------------------------------------------ pos_embed resize
def test_pos_embed_resized_on_load(timm_model, timm_ckpt):
    model = _hybrid(img_size=48)
    assert model.pos_embed.shape == (1, 1 + 36, EMBED)
    assert load_vit_weights(model, timm_ckpt) == 'timm'

    # reference resize, done by hand from the file's 4x4 grid to 6x6
    src = timm_model.pos_embed.detach()
    grid = src[:, 1:].reshape(1, 4, 4, EMBED).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(6, 6), mode='bicubic',
                         align_corners=False)
    want = torch.cat([src[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)
    torch.testing.assert_close(model.pos_embed.detach(), want,
                               rtol=0, atol=1e-6)

    x = _images(size=48)
    out = _tokens(model, x)
    assert out.shape == (2, 1 + 36, EMBED)
    # a timm ViT at 48 px with the same weights and the resized pos_embed
    big = _timm_vit(seed=50, img_size=48)
    sd = dict(timm_model.state_dict())
    sd['pos_embed'] = want
    big.load_state_dict(sd, strict=True)
    torch.testing.assert_close(out, _timm_tokens(big, x), rtol=0, atol=ATOL)


# ------------------------------------------------ mmpretrain's CLIP files
def _mmpretrain_clip_converter():
    """``convert_clip`` of mmpretrain's own
    ``tools/model_converters/openai-clip_to_mmpretrain-clip.py``, as the
    installed package ships it (``mmpretrain/.mim/tools``)."""
    import importlib.util
    import os.path as osp

    import mmpretrain
    path = osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'tools',
                    'model_converters', 'openai-clip_to_mmpretrain-clip.py')
    spec = importlib.util.spec_from_file_location('openai_clip_converter', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.convert_clip


# OpenAI CLIP's text tower and projections, tiny: what the converter keeps
# (unrenamed) next to the image tower
CLIP_TEXT_KEYS = {
    'positional_embedding': (8, 32),
    'text_projection': (32, 24),
    'logit_scale': (),
    'token_embedding.weight': (100, 32),
    'transformer.resblocks.0.ln_1.weight': (32, ),
    'transformer.resblocks.0.attn.in_proj_weight': (96, 32),
    'transformer.resblocks.0.attn.out_proj.weight': (32, 32),
    'transformer.resblocks.0.mlp.c_fc.weight': (128, 32),
    'ln_final.weight': (32, ),
    'ln_final.bias': (32, ),
}


def _openai_clip_file_tensors(clip_tower):
    """A whole OpenAI CLIP state dict: image tower under ``visual.``, text
    tower at the top level."""
    g = torch.Generator().manual_seed(40)
    sd = {f'visual.{k}': v for k, v in clip_tower.state_dict().items()}
    sd.update({k: torch.randn(shape, generator=g)
               for k, shape in CLIP_TEXT_KEYS.items()})
    return sd


def _mmpretrain_clip_file(tmp_path, clip_tower, prefix, final_norm=True):
    """An mmpretrain CLIP file: the converter's output as it writes it
    (``visual.``-prefixed image tower, ``visual_proj.proj``, the text tower
    unchanged), or that file with the image tower moved under ``prefix``;
    without the final norm (``visual.ln1``) when ``final_norm`` is False.
    Returns the path and the keys that are not part of the image encoder."""
    sd = _mmpretrain_clip_converter()(_openai_clip_file_tensors(clip_tower))
    assert {'visual.pre_norm.weight', 'visual.ln1.weight',
            'visual.layers.0.attn.qkv.weight', 'visual.cls_token',
            'visual.pos_embed', 'visual_proj.proj',
            'visual.patch_embed.projection.weight'} <= set(sd)
    assert sd['visual.cls_token'].shape == (1, 1, EMBED)
    assert sd['visual.pos_embed'].shape == (1, 17, EMBED)
    if not final_norm:
        del sd['visual.ln1.weight'], sd['visual.ln1.bias']
    sd = {(prefix + k[len('visual.'):] if k.startswith('visual.') else k): v
          for k, v in sd.items()}
    path = str(tmp_path / f'clip_{prefix or "bare."}pth')
    torch.save(sd, path)
    return path, set(CLIP_TEXT_KEYS) | {'visual_proj.proj'}


def _clip_tokens_before_ln_post(tower, x):
    seen = []
    handle = tower.ln_post.register_forward_hook(
        lambda mod, inp, out: seen.append(inp[0]))
    try:
        with torch.no_grad():
            tower(x)
    finally:
        handle.remove()
    return seen[0]


@pytest.mark.parametrize('prefix', ['visual.', 'backbone.', ''])
def test_mmpretrain_clip_file_every_prefix(tmp_path, clip_tower, prefix):
    """``vit-large-p14_clip-openai-pre_3rdparty`` style files: image tower
    under ``visual.`` (as the converter writes it), ``backbone.`` or bare;
    the text tower and ``visual_proj.proj`` are ignored, not errors; the
    shipped teacher (``final_norm=True``) reproduces the tokens after
    ``ln_post``."""
    from mmhybrid.models.teachers.vit_formats import read_vit_layout
    path, not_encoder = _mmpretrain_clip_file(tmp_path, clip_tower, prefix)
    raw = torch.load(path, weights_only=True)
    vit = read_vit_layout(raw)
    assert vit.fmt == 'mmpretrain'
    assert set(vit.ignored) == not_encoder
    for fmt in ('auto', 'mmpretrain'):
        model = _hybrid(CLIP_ARCH, **CLIP_TEACHER_KW)
        assert load_vit_weights(model, path, fmt) == 'mmpretrain'
        x = _images(seed=3)
        torch.testing.assert_close(_tokens(model, x),
                                   _clip_tokens(clip_tower, x), rtol=0,
                                   atol=ATOL)


@pytest.mark.parametrize('file_norm', [True, False])
@pytest.mark.parametrize('model_norm', [True, False])
def test_mmpretrain_clip_file_with_or_without_final_norm(
        tmp_path, clip_tower, file_norm, model_norm):
    """The final norm may be absent from the file or from the model: the
    feature tokens are then what :class:`FrozenTeacher` documents."""
    path, _ = _mmpretrain_clip_file(tmp_path, clip_tower, 'visual.',
                                    final_norm=file_norm)
    model = _hybrid(CLIP_ARCH, final_norm=model_norm, **CLIP_TEACHER_KW)
    load_vit_weights(model, path)
    x = _images(seed=4)
    raw = _clip_tokens_before_ln_post(clip_tower, x)
    if not model_norm:  # the last block's tokens, as mmpretrain's configs
        want = raw
    elif file_norm:  # CLIP's ln_post
        want = _clip_tokens(clip_tower, x)
    else:  # a LayerNorm without affine
        want = F.layer_norm(raw, (EMBED, ), eps=1e-5)
    torch.testing.assert_close(_tokens(model, x), want, rtol=0, atol=ATOL)


def test_ignored_keys_and_final_norm_are_reported(tmp_path, clip_tower):
    from mmengine.logging import MMLogger
    path, not_encoder = _mmpretrain_clip_file(tmp_path, clip_tower, 'visual.',
                                              final_norm=False)
    log_file = tmp_path / 'load.log'
    logger = MMLogger.get_instance('test_ignored_keys_are_reported',
                                   log_file=str(log_file))
    load_vit_weights(_hybrid(CLIP_ARCH, **CLIP_TEACHER_KW), path,
                     logger=logger)
    log = log_file.read_text()
    assert f'ignored {len(not_encoder)} tensors that are not part of the ' \
           'ViT encoder' in log
    for k in ('text_projection', 'visual_proj.proj', 'token_embedding.weight'):
        assert k in log
    assert 'the file has no final norm' in log
    assert 'missing' not in log and 'unexpected' not in log


def test_mmpretrain_clip_file_missing_key_is_one_line_error(
        tmp_path, clip_tower):
    path, _ = _mmpretrain_clip_file(tmp_path, clip_tower, 'visual.')
    sd = torch.load(path, weights_only=True)
    del sd['visual.layers.1.attn.qkv.weight']
    torch.save(sd, path)
    model = _hybrid(CLIP_ARCH, **CLIP_TEACHER_KW)
    before = model.state_dict()
    with pytest.raises(CheckpointError) as e:
        load_vit_weights(model, path)
    msg = str(e.value)
    assert '\n' not in msg
    assert msg.startswith(path) and 'mmpretrain layout' in msg
    assert msg.endswith('missing keys (1): layers.1.attn.qkv.weight')
    _assert_untouched(model, before)


def test_half_a_final_norm_is_a_missing_key(tmp_path, clip_tower):
    path, _ = _mmpretrain_clip_file(tmp_path, clip_tower, 'visual.')
    sd = torch.load(path, weights_only=True)
    del sd['visual.ln1.bias']
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r'missing keys \(1\): ln1\.bias'):
        load_vit_weights(_hybrid(CLIP_ARCH, **CLIP_TEACHER_KW), path)


def test_bare_openai_clip_visual_tower(tmp_path, clip_tower):
    """``model.visual.state_dict()`` saved alone (no ``visual.`` prefix)."""
    path = str(tmp_path / 'clip_visual_only.pth')
    torch.save(clip_tower.state_dict(), path)
    model = _hybrid(CLIP_ARCH, **CLIP_TEACHER_KW)
    assert load_vit_weights(model, path) == 'openai_clip'
    x = _images(seed=5)
    torch.testing.assert_close(_tokens(model, x), _clip_tokens(clip_tower, x),
                               rtol=0, atol=ATOL)
