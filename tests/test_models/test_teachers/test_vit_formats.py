"""Official ViT checkpoint layouts load into ``HybridViT`` and reproduce the
source.

Every checkpoint here is made by an independent implementation where one exists
on this machine (timm, mmpretrain's OpenAI-CLIP port, mmpretrain's own models),
saved in the file wrapping its authors use, and read back through the real
loading path (:func:`load_vit_weights`). One parametrised test covers every
layout (cases as data: source, writer, format, layout read): each compares
every loaded tensor with what an independent converter makes of the source
(mmpretrain's own converters, run as a user runs them) and the loaded model's
tokens with the source model's own forward.
"""
import dataclasses
import os.path as osp
import random
import subprocess
import sys
from functools import partial
from typing import Callable, Dict, Optional

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.registry import MODELS
from safetensors.torch import save_file
from timm.models.vision_transformer import Block as TimmBlock
from timm.models.vision_transformer import VisionTransformer as TimmViT

from mmhybrid.testing import tiny_vit_cfg
from mmhybrid.utils.checkpoint import CheckpointError
from mmhybrid.vit_checkpoints import FORMATS, load_vit_weights

EMBED, DEPTH, HEADS = 48, 2, 3
ARCH = dict(
    embed_dims=EMBED,
    num_layers=DEPTH,
    num_heads=HEADS,
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


def _timm_vit(seed=0,
              img_size=32,
              embed_dim=EMBED,
              depth=DEPTH,
              num_heads=HEADS,
              mlp_ratio=2,
              num_classes=0,
              **kw) -> TimmViT:
    torch.manual_seed(seed)
    model = TimmViT(
        img_size=img_size,
        patch_size=8,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        class_token=True,
        global_pool='token',
        num_classes=num_classes,
        **kw)
    return _perturb(model, seed + 100)


def _hybrid(arch=ARCH, img_size=32, seed=123, **kw):
    """A randomly initialised HybridViT (weights differ from every source)."""
    torch.manual_seed(seed)
    kw.setdefault('norm_cfg', dict(type='LN', eps=1e-6))
    model = MODELS.build(
        tiny_vit_cfg(arch, img_size=img_size, patch_size=8, **kw))
    model.init_weights()
    model.eval()
    return model


def _images(n=2, size=32, seed=7):
    return torch.randn(
        n, 3, size, size, generator=torch.Generator().manual_seed(seed))


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


# ------------------------------------------------------------------- sources
# Each source is a small model of an independent implementation, with every
# tensor perturbed. ``want`` is the HybridViT state dict an independent key
# converter makes of it: mmpretrain's own converters, run as a user runs them
# (``python <converter> src dst``), or the mmpretrain backbone's own weights.
CLIP_TEACHER_KW = dict(
    pre_norm=True,
    norm_cfg=dict(type='LN', eps=1e-5),
    # scoped: mmcv builds activations from mmengine's root registry
    layer_cfgs=dict(act_cfg=dict(type='mmpretrain.QuickGELU')))

# OpenAI CLIP's text tower and projections, tiny: what a whole CLIP file holds
# next to the image tower (the teacher must ignore it, the converter keeps it)
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


@dataclasses.dataclass
class Source:
    """A source model, the file tensors its authors save and what loading them
    must give.

    Attributes:
        tensors (dict): The whole state dict, in the authors' layout.
        tokens (callable): Images -> all tokens, from the source's own forward.
        want (dict): The HybridViT state dict expected after loading.
        arch (dict): The HybridViT arch that holds it.
        kw (dict): Further HybridViT arguments.
        model (nn.Module, optional): The source model itself.
        converted (dict, optional): The whole file mmpretrain's converter
            wrote of ``tensors``, where one was run on the whole file.
    """
    tensors: Dict[str, torch.Tensor]
    tokens: Callable[[torch.Tensor], torch.Tensor]
    want: Dict[str, torch.Tensor]
    arch: dict = dataclasses.field(default_factory=lambda: ARCH)
    kw: dict = dataclasses.field(default_factory=dict)
    model: Optional[nn.Module] = None
    converted: Optional[Dict[str, torch.Tensor]] = None


def _mmpretrain_converter(name: str) -> str:
    """A converter of ``tools/model_converters`` as the installed mmpretrain
    ships it (``mmpretrain/.mim/tools``)."""
    import mmpretrain
    path = osp.join(
        osp.dirname(mmpretrain.__file__), '.mim', 'tools', 'model_converters',
        name)
    assert osp.isfile(path), path
    return path


def run_converter(name: str, tensors: Dict[str, torch.Tensor],
                  workdir) -> Dict[str, torch.Tensor]:
    """Run mmpretrain's converter ``name`` on ``tensors`` as a separate
    process, ``python <converter> src dst``, and read what it wrote."""
    src, dst = str(workdir / 'src.pth'), str(workdir / 'dst.pth')
    torch.save(tensors, src)
    proc = subprocess.run(
        [sys.executable, _mmpretrain_converter(name), src, dst],
        capture_output=True,
        text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(dst, weights_only=True)


def _under(prefix: str, sd: Dict[str,
                                 torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The tensors under ``prefix``, prefix removed."""
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _timm_source(workdir, **kw) -> Source:
    model = _timm_vit(**kw)
    sd = model.state_dict()
    # DeiT-3's released files name timm's LayerScale ``gamma_1``/``gamma_2``
    # (timm renames them to ``ls1.gamma``/``ls2.gamma`` on load); mmpretrain's
    # DeiT-3 converter reads that naming
    released = {
        k.replace('.ls1.gamma', '.gamma_1').replace('.ls2.gamma', '.gamma_2'):
        v
        for k, v in sd.items()
    }
    want = _under('backbone.',
                  run_converter('deit3_to_mmpretrain.py', released, workdir))
    extra = {}
    if kw.get('init_values'):
        extra['layer_scale_init_value'] = kw['init_values']
    return Source(
        sd, partial(_timm_tokens, model), want, kw=extra, model=model)


def _clip_tower():
    """A tiny OpenAI-CLIP visual tower, from mmpretrain's independent port
    (``clip_generator_helper``: ``nn.MultiheadAttention``, ``conv1`` without
    bias, ``class_embedding``, ``ln_pre``/``ln_post``, QuickGELU)."""
    from mmpretrain.models.utils.clip_generator_helper import \
        VisionTransformer as ClipVisionTransformer
    torch.manual_seed(9)
    tower = ClipVisionTransformer(
        input_resolution=32,
        patch_size=8,
        width=EMBED,
        layers=DEPTH,
        heads=HEADS,
        output_dim=24)
    return _perturb(tower, 10)


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


def _clip_source(workdir) -> Source:
    """A whole OpenAI CLIP file (image tower under ``visual.``, text tower at
    the top level); ``want`` is the image tower of mmpretrain's converter
    output, which the ``mmpretrain_clip_*`` cases write as the file."""
    tower = _clip_tower()
    sd = {f'visual.{k}': v for k, v in tower.state_dict().items()}
    assert 'visual.conv1.bias' not in sd  # OpenAI CLIP's conv1 has no bias
    g = torch.Generator().manual_seed(40)
    sd.update({
        k: torch.randn(shape, generator=g)
        for k, shape in CLIP_TEXT_KEYS.items()
    })
    converted = run_converter('openai-clip_to_mmpretrain-clip.py', sd, workdir)
    return Source(
        sd,
        partial(_clip_tokens, tower),
        _under('visual.', converted),
        CLIP_ARCH,
        CLIP_TEACHER_KW,
        model=tower,
        converted=converted)


def _mmpretrain_source(model_cfg, seed, tokens) -> Source:
    torch.manual_seed(seed)
    model = MODELS.build(model_cfg)
    model.init_weights()
    _perturb(model, seed + 1)
    return Source(
        model.state_dict(),
        partial(tokens, model),
        model.backbone.state_dict(),
        model=model)


def _classifier_source(workdir) -> Source:
    return _mmpretrain_source(
        dict(
            type='ImageClassifier',
            backbone=dict(
                type='VisionTransformer',
                arch=ARCH,
                img_size=32,
                patch_size=8,
                out_type='raw'),
            head=dict(
                type='VisionTransformerClsHead',
                num_classes=10,
                in_channels=EMBED)), 21, lambda m, x: m.backbone(x)[0])


def _mae_source(workdir) -> Source:
    return _mmpretrain_source(
        dict(
            type='MAE',
            backbone=dict(type='MAEViT', arch=ARCH, img_size=32, patch_size=8),
            neck=dict(
                type='MAEPretrainDecoder',
                num_patches=16,
                patch_size=8,
                embed_dim=EMBED,
                decoder_embed_dim=32,
                decoder_depth=1,
                decoder_num_heads=4),
            head=dict(
                type='MAEPretrainHead',
                patch_size=8,
                loss=dict(type='PixelReconstructionLoss', criterion='L2'))),
        31,
        # the unmasked encoder
        lambda m, x: m.backbone(x, mask=None)[0])


SOURCES = {
    'timm': lambda d: _timm_source(d),
    'timm_layer_scale': lambda d: _timm_source(d, seed=3, init_values=0.1),
    'timm_with_head': lambda d: _timm_source(d, seed=4, num_classes=10),
    'openai_clip': _clip_source,
    'mmpretrain_classifier': _classifier_source,
    'mmpretrain_mae': _mae_source,
}


@pytest.fixture(scope='module')
def source(tmp_path_factory):
    """``source(name)``: the source of :data:`SOURCES`, built once."""
    built = {}

    def get(name: str) -> Source:
        if name not in built:
            built[name] = SOURCES[name](tmp_path_factory.mktemp(name))
        return built[name]

    return get


# ------------------------------------------------------------------- writers
# ``writer(src, path)`` saves the source as its authors' file does.
def _write_pth(src, path):
    torch.save(src.tensors, path)


def _write_safetensors(src, path):
    save_file({k: v.contiguous() for k, v in src.tensors.items()}, path)


def _write_model_key(src, path):
    """DeiT's and MAE's fine-tuned files: ``{'model': state_dict}``."""
    torch.save({'model': src.tensors}, path)


def _mae_decoder_tensors(seed=5,
                         dec_dim=32,
                         dec_depth=1,
                         num_patches=16,
                         patch=8):
    """The decoder half of facebookresearch/mae ``MaskedAutoencoderViT``.

    Its blocks are timm ``Block``s, as in ``models_mae.py``.
    """
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


def _write_mae_pretrain(src, path):
    """facebookresearch/mae's pre-training file: encoder and decoder under
    ``model``."""
    decoder = _mae_decoder_tensors()
    assert {
        'mask_token', 'decoder_pos_embed', 'decoder_embed.weight',
        'decoder_blocks.0.attn.qkv.weight', 'decoder_norm.weight',
        'decoder_pred.bias'
    } <= set(decoder)
    torch.save({'model': {**src.tensors, **decoder}}, path)


def _dino_heads(prefix):
    """Tensors of DINO's ``DINOHead`` (3-layer MLP + weight-normed last
    layer)."""
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


def _write_dino_training(src, path):
    """DINO's ``checkpoint.pth``: ``{'student': {'module.backbone.*', ...},
    'teacher': {'backbone.*', 'head.*'}, ...}``. The EMA teacher's backbone is
    the one to read; the student's weights differ and must not be used."""
    teacher = {f'backbone.{k}': v for k, v in src.tensors.items()}
    teacher.update(_dino_heads(''))
    student = {
        f'module.backbone.{k}': torch.randn_like(v)
        for k, v in src.tensors.items()
    }
    student.update(_dino_heads('module.'))
    torch.save(
        dict(
            student=student,
            teacher=teacher,
            epoch=100,
            dino_loss={'center': torch.zeros(1, 100)}), path)


def _write_mmengine(src, path):
    """As ``Runner.save_checkpoint`` saves: meta, state_dict, message_hub
    (whose HistoryBuffers must pass the safe loader)."""
    from mmengine.logging import MessageHub
    from mmengine.runner.checkpoint import save_checkpoint, weights_to_cpu
    hub = MessageHub.get_instance('mmhybrid_test_vit_formats')
    hub.update_scalar('train/loss', 0.5)
    save_checkpoint(
        dict(
            meta=dict(epoch=1, iter=10, mmengine_version='0.10.7'),
            state_dict=weights_to_cpu(src.tensors),
            message_hub=hub.state_dict()), path)
    raw = torch.load(path, weights_only=False)
    assert {'meta', 'state_dict', 'message_hub'} <= set(raw)


def _write_clip_visual_only(src, path):
    """``model.visual.state_dict()`` saved alone (no ``visual.`` prefix)."""
    torch.save(_under('visual.', src.tensors), path)


def _mmpretrain_clip_tensors(converted, prefix, final_norm=True):
    """mmpretrain's CLIP file as its converter writes it (``visual.``-prefixed
    image tower, ``visual_proj.proj``, the text tower unchanged), with the
    image tower moved under ``prefix``; without the final norm (``visual.ln1``)
    when ``final_norm`` is False."""
    assert {
        'visual.pre_norm.weight', 'visual.ln1.weight',
        'visual.layers.0.attn.qkv.weight', 'visual.cls_token',
        'visual.pos_embed', 'visual_proj.proj',
        'visual.patch_embed.projection.weight'
    } <= set(converted)
    assert converted['visual.cls_token'].shape == (1, 1, EMBED)
    assert converted['visual.pos_embed'].shape == (1, 17, EMBED)
    sd = dict(converted)
    if not final_norm:
        del sd['visual.ln1.weight'], sd['visual.ln1.bias']
    return {
        (prefix + k[len('visual.'):] if k.startswith('visual.') else k): v
        for k, v in sd.items()
    }


def _write_mmpretrain_clip(prefix):

    def write(src, path):
        torch.save(_mmpretrain_clip_tensors(src.converted, prefix), path)

    return write


# --------------------------------------------------------------------- cases
# (case id, source, writer, file suffix, checkpoint_format, layout read)
LAYOUT_CASES = [
    # timm's ``state_dict()``; DINO's released backbones are this file too
    ('timm', 'timm', _write_pth, '.pth', 'auto', 'timm'),
    ('timm_named', 'timm', _write_pth, '.pth', 'timm', 'timm'),
    ('timm_safetensors', 'timm', _write_safetensors, '.safetensors', 'auto',
     'timm'),
    ('timm_safetensors_named', 'timm', _write_safetensors, '.safetensors',
     'timm', 'timm'),
    # timm's LayerScale (``ls1.gamma``/``ls2.gamma``, DeiT-3/CaiT style)
    ('timm_layer_scale', 'timm_layer_scale', _write_pth, '.pth', 'auto', 'timm'
     ),
    # DeiT: the classification head is ignored
    ('deit_with_head', 'timm_with_head', _write_model_key, '.pth', 'auto',
     'timm'),
    ('facebookresearch_mae_pretrain', 'timm', _write_mae_pretrain, '.pth',
     'auto', 'timm'),
    ('dino_training_checkpoint', 'timm', _write_dino_training, '.pth', 'auto',
     'timm'),
    # the CLIP teacher as the shipped configs build it: with ``pre_norm``
    # mmpretrain's patch conv has no bias, like OpenAI's ``conv1``
    ('openai_clip', 'openai_clip', _write_pth, '.pt', 'auto', 'openai_clip'),
    ('openai_clip_visual_only', 'openai_clip', _write_clip_visual_only, '.pth',
     'auto', 'openai_clip'),
    ('mmpretrain_classifier', 'mmpretrain_classifier', _write_mmengine, '.pth',
     'auto', 'mmpretrain'),
    ('mmpretrain_mae', 'mmpretrain_mae', _write_mmengine, '.pth', 'auto',
     'mmpretrain'),
    # ``vit-large-p14_clip-openai-pre_3rdparty`` style files: the image tower
    # under ``visual.`` (as mmpretrain's converter writes it), ``backbone.``
    # or bare; the text tower and ``visual_proj.proj`` are ignored
    *((f'mmpretrain_clip_{name}{"_named" if fmt != "auto" else ""}',
       'openai_clip', _write_mmpretrain_clip(prefix), '.pth', fmt,
       'mmpretrain')
      for name, prefix in (('visual', 'visual.'), ('backbone', 'backbone.'),
                           ('bare', '')) for fmt in ('auto', 'mmpretrain')),
]


@pytest.mark.parametrize(
    'case', LAYOUT_CASES, ids=[c[0] for c in LAYOUT_CASES])
def test_layout_loads_every_tensor_and_reproduces_source(
        tmp_path, source, case):
    """Every layout: the file as its authors save it is read through the real
    loading path; the layout is detected (or taken as named); every tensor of
    the HybridViT equals what an independent converter makes of the source
    (same keys, exact values); and the loaded model's tokens equal the source
    model's own forward."""
    name, src_name, write, suffix, fmt, layout = case
    src = source(src_name)
    path = str(tmp_path / f'{name}{suffix}')
    write(src, path)

    model = _hybrid(src.arch, **src.kw)
    x = _images()
    # the random init is far from the source: a load that does nothing fails
    assert (_tokens(model, x) - src.tokens(x)).abs().max() > 1e-2
    assert load_vit_weights(model, path, fmt) == layout

    got = model.state_dict()
    assert set(got) == set(src.want)
    for k, v in src.want.items():
        torch.testing.assert_close(
            got[k], v, rtol=0, atol=0, msg=lambda m, k=k: f'{k}: {m}')
    out = _tokens(model, x)
    assert out.shape == (2, 1 + 16, EMBED)
    torch.testing.assert_close(out, src.tokens(x), rtol=0, atol=ATOL)


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
    torch.save(
        {
            'encoder.stem.weight': torch.zeros(8, 3, 3, 3),
            'encoder.fc.weight': torch.zeros(4, 8)
        }, path)
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
    grid = F.interpolate(
        grid, size=(6, 6), mode='bicubic', align_corners=False)
    want = torch.cat([src[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)
    torch.testing.assert_close(
        model.pos_embed.detach(), want, rtol=0, atol=1e-6)

    x = _images(size=48)
    out = _tokens(model, x)
    assert out.shape == (2, 1 + 36, EMBED)
    # a timm ViT at 48 px with the same weights and the resized pos_embed
    big = _timm_vit(seed=50, img_size=48)
    sd = dict(timm_model.state_dict())
    sd['pos_embed'] = want
    big.load_state_dict(sd, strict=True)
    torch.testing.assert_close(out, _timm_tokens(big, x), rtol=0, atol=ATOL)


# --------------------------------------------- mmpretrain's CLIP files: norm
def _mmpretrain_clip_file(tmp_path, src, final_norm=True):
    """mmpretrain's CLIP file (image tower under ``visual.``); returns the path
    and the keys that are not part of the image encoder."""
    path = str(tmp_path / 'clip_mmpretrain.pth')
    torch.save(
        _mmpretrain_clip_tensors(src.converted, 'visual.', final_norm), path)
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


@pytest.mark.parametrize('file_norm', [True, False])
@pytest.mark.parametrize('model_norm', [True, False])
def test_mmpretrain_clip_file_with_or_without_final_norm(
        tmp_path, source, file_norm, model_norm):
    """The final norm may be absent from the file or from the model: the
    feature tokens are then what :class:`FrozenTeacher` documents."""
    src = source('openai_clip')
    path, _ = _mmpretrain_clip_file(tmp_path, src, final_norm=file_norm)
    model = _hybrid(CLIP_ARCH, final_norm=model_norm, **CLIP_TEACHER_KW)
    load_vit_weights(model, path)
    x = _images(seed=4)
    raw = _clip_tokens_before_ln_post(src.model, x)
    if not model_norm:  # the last block's tokens, as mmpretrain's configs
        want = raw
    elif file_norm:  # CLIP's ln_post
        want = src.tokens(x)
    else:  # a LayerNorm without affine
        want = F.layer_norm(raw, (EMBED, ), eps=1e-5)
    torch.testing.assert_close(_tokens(model, x), want, rtol=0, atol=ATOL)


def test_ignored_keys_and_final_norm_are_reported(tmp_path, source):
    from mmengine.logging import MMLogger
    path, not_encoder = _mmpretrain_clip_file(
        tmp_path, source('openai_clip'), final_norm=False)
    log_file = tmp_path / 'load.log'
    logger = MMLogger.get_instance(
        'test_ignored_keys_are_reported', log_file=str(log_file))
    load_vit_weights(
        _hybrid(CLIP_ARCH, **CLIP_TEACHER_KW), path, logger=logger)
    log = log_file.read_text()
    assert f'ignored {len(not_encoder)} tensors that are not part of the ' \
           'ViT encoder' in log
    for k in ('text_projection', 'visual_proj.proj', 'token_embedding.weight'):
        assert k in log
    assert 'the file has no final norm' in log
    assert 'missing' not in log and 'unexpected' not in log


def test_mmpretrain_clip_file_missing_key_is_one_line_error(tmp_path, source):
    path, _ = _mmpretrain_clip_file(tmp_path, source('openai_clip'))
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


def test_half_a_final_norm_is_a_missing_key(tmp_path, source):
    path, _ = _mmpretrain_clip_file(tmp_path, source('openai_clip'))
    sd = torch.load(path, weights_only=True)
    del sd['visual.ln1.bias']
    torch.save(sd, path)
    with pytest.raises(
            CheckpointError, match=r'missing keys \(1\): ln1\.bias'):
        load_vit_weights(_hybrid(CLIP_ARCH, **CLIP_TEACHER_KW), path)
