"""Official ViT checkpoint layouts -> mmpretrain's ``VisionTransformer`` keys.

One key scheme inside mmhybrid (mmpretrain's); every other layout is converted
here, on load. Supported layouts:

* ``'mmpretrain'``: mmpretrain/mmselfsup checkpoints: an algorithm's
  ``backbone.`` keys; mmpretrain's CLIP files, whose image tower sits under
  ``visual.`` next to the text tower and ``visual_proj.proj``
  (``tools/model_converters/openai-clip_to_mmpretrain-clip.py``); or a bare
  backbone state dict.
* ``'openai_clip'``: OpenAI CLIP (``visual.conv1.weight``, ...; the text tower
  and ``visual.proj`` are not used); a bare visual tower (``conv1.weight``,
  ...) too.
* ``'timm'``: timm ViTs, which covers facebookresearch MAE (``{'model': ...}``,
  decoder dropped), DeiT, DINO (``backbone.`` in its training checkpoints) and
  timm's CLIP ports; ``.safetensors`` too.
* ``'dinov2'``: facebookresearch/dinov2's released backbones
  (``dinov2_vit{s,b,l,g}14{,_reg4}_pretrain.pth``): timm's block names with
  layer scale (``blocks.N.ls1.gamma``), ``mask_token`` (iBOT's, not part of
  the encoder: ignored) and, in the ``_reg4`` files, ``register_tokens``
  ``(1, R, C)``, kept under that name; ViT-g's SwiGLU MLP (``mlp.w12``,
  ``mlp.w3``) becomes ``ffn.w12``/``ffn.w3`` (mmpretrain's
  ``layer_cfgs=dict(ffn_type='swiglu_fused')``). The keys are those of
  mmpretrain's own DINOv2 weights (``vit-*-p14_dinov2-pre_3rdparty``):
  ``layers.N.attn.gamma1.weight``, ``layers.N.ffn.gamma2.weight``, ``ln1``.
  Told from a timm file with layer scale (DeiT III, timm's DINOv2 ports, read
  as ``'timm'``) by ``mask_token`` or ``register_tokens``.

The encoder of a layout may sit under ``backbone.``, ``visual.`` or no prefix
(:data:`ENCODER_PREFIXES`); keys outside it, and the known non-encoder keys of
each layout (heads, decoders, CLIP's text tower and projections), are ignored
and listed in :attr:`ConvertedViT.ignored`, never reported as errors. The final
norm is optional in every layout (:func:`fit_final_norm`).
"""
import re
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

import torch

FORMATS = ('auto', 'mmpretrain', 'openai_clip', 'timm', 'dinov2')

# Where a layout's image encoder may sit, tried in this order.
ENCODER_PREFIXES = ('backbone.', 'visual.', '')
# Keys (after the prefix) that only that layout's ViT encoder has: the first
# locates the encoder, all of them (each matching some key) tell the layout.
_MARKERS = {
    'openai_clip': (r'^class_embedding$', ),
    'dinov2':
    (r'^blocks\.\d+\.ls1\.gamma$', r'^(mask_token|register_tokens)$'),
    'timm': (r'^(blocks\.|patch_embed\.proj\.weight$)', ),
    'mmpretrain': (r'^layers\.', ),
}
# the order in which :func:`detect_format` tries them (dinov2 before timm,
# whose block names it shares)
_DETECT_ORDER = ('openai_clip', 'dinov2', 'timm', 'mmpretrain')
# OpenAI CLIP's text tower and projections, as OpenAI and mmpretrain's CLIP
# converter write them (the converter renames ``visual.proj`` only)
_CLIP_TEXT = (r'^(transformer\.|token_embedding\.|ln_final\.|visual_proj\.)',
              r'^(positional_embedding|text_projection|logit_scale)$')

# keys inside the encoder prefix that the ViT encoder does not use, per layout
_IGNORED = {
    'mmpretrain': (r'^(neck|head|target_generator|data_preprocessor|teacher|'
                   r'momentum_encoder)\.', r'^mask_token$') + _CLIP_TEXT,
    # the text tower sits outside ``visual.``; bare files hold the image
    # tower alone (its ``positional_embedding`` is the image one)
    'openai_clip': (r'^proj$', ),
    'timm':
    (r'^(head|head_dist|fc_norm|decoder_|mask_token|decoder\.|pre_logits)', ),
    'dinov2': (r'^mask_token$', ),
}

# the final norm in mmpretrain's keys: OpenAI ``ln_post``, timm ``norm``
FINAL_NORM_KEYS = ('ln1.weight', 'ln1.bias')


class ConvertedViT(NamedTuple):
    """A ViT state dict in mmpretrain's keys and where it came from.

    Attributes:
        state_dict (dict[str, Tensor]): The encoder's tensors, mmpretrain keys.
        fmt (str): The layout that was read.
        ignored (list[str]): Source keys that are not part of the ViT encoder
            (text tower, projections, heads, decoders), sorted.
    """
    state_dict: Dict[str, torch.Tensor]
    fmt: str
    ignored: List[str]


def _encoder_prefix(state_dict: Dict[str, torch.Tensor],
                    fmt: str,
                    every_marker: bool = False) -> Optional[str]:
    """The prefix under which ``fmt``'s encoder sits, or None if absent.

    Args:
        state_dict (dict): The source tensors.
        fmt (str): A layout of :data:`_MARKERS`.
        every_marker (bool): Require every marker of ``fmt`` (to tell the
            layout), not only the first (to locate a named layout). Defaults
            to False.
    """
    markers = _MARKERS[fmt] if every_marker else _MARKERS[fmt][:1]
    markers = [re.compile(m) for m in markers]
    for prefix in ENCODER_PREFIXES:
        names = [k[len(prefix):] for k in state_dict if k.startswith(prefix)]
        if all(any(m.search(n) for n in names) for m in markers):
            return prefix
    return None


def detect_format(state_dict: Dict[str, torch.Tensor]) -> str:
    """Guess a state dict's layout from its keys."""
    for fmt in _DETECT_ORDER:
        if _encoder_prefix(state_dict, fmt, every_marker=True) is not None:
            return fmt
    raise KeyError('cannot tell the layout of this ViT checkpoint; pass '
                   f'checkpoint_format, one of {FORMATS[1:]}. First keys: '
                   f'{sorted(state_dict)[:8]}')


def _split_encoder(state_dict: Dict[str, torch.Tensor],
                   fmt: str) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """The encoder's tensors (prefix removed, ignored keys dropped) and the
    source keys that were left out."""
    prefix = _encoder_prefix(state_dict, fmt) or ''
    patterns = [re.compile(p) for p in _IGNORED[fmt]]
    kept, ignored = {}, []
    for k, v in state_dict.items():
        name = k[len(prefix):]
        if not k.startswith(prefix) or any(p.search(name) for p in patterns):
            ignored.append(k)
        else:
            kept[name] = v
    return kept, ignored


def _from_mmpretrain(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return dict(sd)


_TIMM_BLOCK = [
    ('norm1.', 'ln1.'),
    ('norm2.', 'ln2.'),
    ('attn.qkv.', 'attn.qkv.'),
    ('attn.proj.', 'attn.proj.'),
    ('mlp.fc1.', 'ffn.layers.0.0.'),
    ('mlp.fc2.', 'ffn.layers.1.'),
    ('ls1.gamma', 'attn.gamma1.weight'),
    ('ls2.gamma', 'ffn.gamma2.weight'),
]

# outside the blocks, timm -> mmpretrain (checked in this order: ``norm.``
# last, after ``norm_pre.``)
_TIMM_TOP = [
    ('patch_embed.proj.', 'patch_embed.projection.'),
    ('norm_pre.', 'pre_norm.'),
    ('norm.', 'ln1.'),
]


def _rename_prefix(name: str, table) -> str:
    """``name`` with the first matching ``(src, dst)`` prefix replaced."""
    for src, dst in table:
        if name.startswith(src):
            return dst + name[len(src):]
    return name


def _rename_vit(sd: Dict[str, torch.Tensor], blocks: Tuple[str, str],
                block_table, top_table) -> Dict[str, torch.Tensor]:
    """Rename a ViT's keys: ``<blocks[0]>.<i>.<rest>`` ->
    ``<blocks[1]>.<i>.<rest renamed by block_table>``, other keys by
    ``top_table``; keys no table matches keep their names."""
    block_re = re.compile(rf'^{re.escape(blocks[0])}\.(\d+)\.(.*)$')
    out = {}
    for k, v in sd.items():
        m = block_re.match(k)
        if m:
            rest = _rename_prefix(m.group(2), block_table)
            out[f'{blocks[1]}.{m.group(1)}.{rest}'] = v
        else:
            out[_rename_prefix(k, top_table)] = v
    return out


def _swap(table):
    return [(dst, src) for src, dst in table]


def _from_timm(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return _rename_vit(sd, ('blocks', 'layers'), _TIMM_BLOCK, _TIMM_TOP)


def to_timm(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """mmpretrain ViT keys -> timm keys (inverse of the timm reader above).

    Unknown keys keep their names, for the strict check to report.
    """
    return _rename_vit(sd, ('layers', 'blocks'), _swap(_TIMM_BLOCK),
                       _swap(_TIMM_TOP))


# DINOv2: timm's block names, and ViT-g's SwiGLU MLP (mmpretrain's
# ``SwiGLUFFNFused`` keeps the official ``w12``/``w3`` names)
_DINOV2_BLOCK = _TIMM_BLOCK + [
    ('mlp.w12.', 'ffn.w12.'),
    ('mlp.w3.', 'ffn.w3.'),
]


def _from_dinov2(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    # ``register_tokens`` keeps its name, as do cls_token and pos_embed
    return _rename_vit(sd, ('blocks', 'layers'), _DINOV2_BLOCK, _TIMM_TOP)


def _from_openai_clip(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        m = re.match(r'^transformer\.resblocks\.(\d+)\.(.*)$', k)
        if m:
            i, rest = m.groups()
            rest = (
                rest.replace('attn.in_proj_weight', 'attn.qkv.weight').replace(
                    'attn.in_proj_bias', 'attn.qkv.bias').replace(
                        'attn.out_proj.',
                        'attn.proj.').replace('ln_1.', 'ln1.').replace(
                            'ln_2.',
                            'ln2.').replace('mlp.c_fc.',
                                            'ffn.layers.0.0.').replace(
                                                'mlp.c_proj.',
                                                'ffn.layers.1.'))
            out[f'layers.{i}.{rest}'] = v
        elif k == 'conv1.weight':
            out['patch_embed.projection.weight'] = v
        elif k == 'class_embedding':
            out['cls_token'] = v.reshape(1, 1, -1)
        elif k == 'positional_embedding':
            out['pos_embed'] = v.unsqueeze(0)
        elif k.startswith('ln_pre.'):
            out['pre_norm.' + k[len('ln_pre.'):]] = v
        elif k.startswith('ln_post.'):
            out['ln1.' + k[len('ln_post.'):]] = v
        else:
            out[k] = v  # reported as unexpected by the strict check
    return out


_CONVERTERS = {
    'mmpretrain': _from_mmpretrain,
    'timm': _from_timm,
    'openai_clip': _from_openai_clip,
    'dinov2': _from_dinov2,
}


def read_vit_layout(state_dict: Dict[str, torch.Tensor],
                    fmt: str = 'auto') -> ConvertedViT:
    """Convert a ViT state dict of a known layout to mmpretrain's keys.

    Args:
        state_dict (dict): The source tensors.
        fmt (str): One of ``FORMATS``. Defaults to ``'auto'``.

    Returns:
        ConvertedViT: The encoder's tensors, the layout used and the source
        keys left out as not part of the encoder.
    """
    if fmt not in FORMATS:
        raise ValueError(f'unknown checkpoint_format {fmt!r}; expected one of '
                         f'{FORMATS}')
    if state_dict and all(k.startswith('module.') for k in state_dict):
        state_dict = {k[len('module.'):]: v for k, v in state_dict.items()}
    if fmt == 'auto':
        fmt = detect_format(state_dict)
    encoder, ignored = _split_encoder(state_dict, fmt)
    return ConvertedViT(_CONVERTERS[fmt](encoder), fmt, sorted(ignored))


def convert_vit_state_dict(
        state_dict: Dict[str, torch.Tensor],
        fmt: str = 'auto') -> Tuple[Dict[str, torch.Tensor], str]:
    """:func:`read_vit_layout` without the list of ignored keys.

    Returns:
        tuple: ``(converted state dict, the layout used)``.
    """
    out = read_vit_layout(state_dict, fmt)
    return out.state_dict, out.fmt


def fit_final_norm(
        state_dict: Dict[str, torch.Tensor],
        expected: Iterable[str]) -> Tuple[Dict[str, torch.Tensor], str]:
    """Match a converted state dict's final norm to the model's.

    A final norm is optional in every layout (mmpretrain's CLIP configs drop
    it with ``final_norm=False``; a file may come without one):

    * the file has one and so has the model: loaded as is;
    * the file has none, the model has one (``final_norm=True``): the model's
      is set to a LayerNorm without affine effect (weight 1, bias 0);
    * the file has one, the model has none (``final_norm=False``): left out.

    A final norm with only one of its two tensors is left as it is, for the
    strict key check to report.

    Args:
        state_dict (dict): Converted tensors (mmpretrain keys).
        expected (Iterable[str]): The model's state-dict keys.

    Returns:
        tuple: The state dict to load and what was done, ``''`` when nothing
        was (for the load report).
    """
    expected = set(expected)
    in_model = all(k in expected for k in FINAL_NORM_KEYS)
    in_file = [k for k in FINAL_NORM_KEYS if k in state_dict]
    sd = dict(state_dict)
    if in_model and not in_file:
        dims = sd['cls_token'].shape[-1] if 'cls_token' in sd else None
        if dims is None:
            return sd, ''  # not a ViT: the key check reports it
        sd['ln1.weight'] = torch.ones(dims)
        sd['ln1.bias'] = torch.zeros(dims)
        return sd, ('the file has no final norm: the model\'s final norm is '
                    'a LayerNorm without affine (weight 1, bias 0)')
    if not in_model and len(in_file) == len(FINAL_NORM_KEYS):
        for k in in_file:
            del sd[k]
        return sd, ('the file\'s final norm (ln1) is not used: the model has '
                    'final_norm=False')
    return sd, ''
