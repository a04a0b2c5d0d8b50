"""Official ViT checkpoint layouts -> mmpretrain's ``VisionTransformer`` keys.

One key scheme inside mmhybrid (mmpretrain's); every other layout is converted
here, on load. Supported layouts:

* ``'mmpretrain'``: mmpretrain/mmselfsup checkpoints (``backbone.`` prefix, or a
  bare backbone state dict).
* ``'openai_clip'``: OpenAI CLIP (``visual.conv1.weight``, ...; the text tower and
  ``visual.proj`` are not used).
* ``'timm'``: timm ViTs, which covers facebookresearch MAE (``{'model': ...}``,
  decoder dropped), DeiT, DINO and timm's CLIP ports; ``.safetensors`` too.
"""
import re
from typing import Dict, Iterable, List, Optional, Tuple

import torch

FORMATS = ('auto', 'mmpretrain', 'openai_clip', 'timm')

# keys of a source file that the ViT encoder does not use, per layout
_IGNORED = {
    'mmpretrain': (r'^(neck|head|target_generator|data_preprocessor|teacher|'
                   r'momentum_encoder)\.', r'^backbone\.mask_token$'),
    'openai_clip': (r'^(?!visual\.)', r'^visual\.proj$'),
    'timm': (r'^(head|head_dist|fc_norm|decoder_|mask_token|decoder\.|pre_logits)',
             ),
}


def detect_format(state_dict: Dict[str, torch.Tensor]) -> str:
    """Guess a state dict's layout from its keys."""
    keys = set(state_dict)
    if 'visual.conv1.weight' in keys:
        return 'openai_clip'
    if any(k.startswith('blocks.') for k in keys) or 'patch_embed.proj.weight' in keys:
        return 'timm'
    if any(k.startswith(('backbone.layers.', 'layers.')) for k in keys):
        return 'mmpretrain'
    raise KeyError('cannot tell the layout of this ViT checkpoint; pass '
                   f'checkpoint_format, one of {FORMATS[1:]}. First keys: '
                   f'{sorted(keys)[:8]}')


def _drop_ignored(state_dict: Dict[str, torch.Tensor],
                  fmt: str) -> Dict[str, torch.Tensor]:
    patterns = [re.compile(p) for p in _IGNORED[fmt]]
    return {
        k: v
        for k, v in state_dict.items()
        if not any(p.search(k) for p in patterns)
    }


def _from_mmpretrain(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    sd = _drop_ignored(sd, 'mmpretrain')
    if any(k.startswith('backbone.') for k in sd):
        return {k[len('backbone.'):]: v for k, v in sd.items()
                if k.startswith('backbone.')}
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


def _from_timm(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    sd = _drop_ignored(sd, 'timm')
    out = {}
    for k, v in sd.items():
        new = k
        m = re.match(r'^blocks\.(\d+)\.(.*)$', k)
        if m:
            rest = m.group(2)
            for src, dst in _TIMM_BLOCK:
                if rest.startswith(src):
                    rest = dst + rest[len(src):]
                    break
            new = f'layers.{m.group(1)}.{rest}'
        elif k.startswith('patch_embed.proj.'):
            new = 'patch_embed.projection.' + k[len('patch_embed.proj.'):]
        elif k.startswith('norm_pre.'):
            new = 'pre_norm.' + k[len('norm_pre.'):]
        elif k.startswith('norm.'):
            new = 'ln1.' + k[len('norm.'):]
        out[new] = v
    return out


def to_timm(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """mmpretrain ``VisionTransformer`` keys -> timm keys (inverse of the timm
    reader above). Unknown keys keep their names, for the strict check to report.
    """
    out = {}
    for k, v in sd.items():
        new = k
        m = re.match(r'^layers\.(\d+)\.(.*)$', k)
        if m:
            rest = m.group(2)
            for dst, src in _TIMM_BLOCK:
                if rest.startswith(src):
                    rest = dst + rest[len(src):]
                    break
            new = f'blocks.{m.group(1)}.{rest}'
        else:
            for mm, timm in (('patch_embed.projection.', 'patch_embed.proj.'),
                             ('pre_norm.', 'norm_pre.'), ('ln1.', 'norm.')):
                if k.startswith(mm):
                    new = timm + k[len(mm):]
                    break
        out[new] = v
    return out


def _from_openai_clip(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    sd = _drop_ignored(sd, 'openai_clip')
    out = {}
    for k, v in sd.items():
        k = k[len('visual.'):]
        m = re.match(r'^transformer\.resblocks\.(\d+)\.(.*)$', k)
        if m:
            i, rest = m.groups()
            rest = (rest.replace('attn.in_proj_weight', 'attn.qkv.weight')
                    .replace('attn.in_proj_bias', 'attn.qkv.bias')
                    .replace('attn.out_proj.', 'attn.proj.')
                    .replace('ln_1.', 'ln1.').replace('ln_2.', 'ln2.')
                    .replace('mlp.c_fc.', 'ffn.layers.0.0.')
                    .replace('mlp.c_proj.', 'ffn.layers.1.'))
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
}


def convert_vit_state_dict(state_dict: Dict[str, torch.Tensor],
                           fmt: str = 'auto') -> Tuple[Dict[str, torch.Tensor], str]:
    """Convert a ViT state dict of a known layout to mmpretrain's keys.

    Args:
        state_dict (dict): The source tensors.
        fmt (str): One of ``FORMATS``. Defaults to ``'auto'``.

    Returns:
        tuple: ``(converted state dict, the layout used)``.
    """
    if fmt not in FORMATS:
        raise ValueError(f'unknown checkpoint_format {fmt!r}; expected one of '
                         f'{FORMATS}')
    if state_dict and all(k.startswith('module.') for k in state_dict):
        state_dict = {k[len('module.'):]: v for k, v in state_dict.items()}
    # DINO's training checkpoints hold {'backbone.blocks.*', 'head.*'} (the
    # projection head is not part of the ViT)
    if fmt in ('auto', 'timm') and any(
            k.startswith('backbone.blocks.') for k in state_dict):
        state_dict = {k[len('backbone.'):]: v for k, v in state_dict.items()
                      if k.startswith('backbone.')}
    if fmt == 'auto':
        fmt = detect_format(state_dict)
    return _CONVERTERS[fmt](state_dict), fmt


def compare_keys(expected: Iterable[str],
                 got: Iterable[str]) -> Tuple[List[str], List[str]]:
    """``(missing, unexpected)`` key names, sorted."""
    expected, got = set(expected), set(got)
    missing = sorted(expected - got)
    unexpected = sorted(got - expected)
    return missing, unexpected


def format_key_report(source: str, missing: List[str], unexpected: List[str],
                      fmt: Optional[str] = None, limit: int = 20) -> str:
    """Human-readable report of a strict key check."""

    def show(keys):
        more = f' ... (+{len(keys) - limit} more)' if len(keys) > limit else ''
        return ', '.join(keys[:limit]) + more

    lines = [f'{source}' + (f' (read as {fmt} layout)' if fmt else '') +
             ' does not match the model:']
    if missing:
        lines.append(f'  missing keys ({len(missing)}): {show(missing)}')
    if unexpected:
        lines.append(f'  unexpected keys ({len(unexpected)}): {show(unexpected)}')
    return '\n'.join(lines)
