"""mmpretrain ViT tensors -> mmseg's own ``BEiT`` / ``MAE`` backbones, with the
coverage check mmseg's ``strict=False`` loading does not do."""
import dataclasses
import re
from typing import Dict, List, Optional, Tuple

import torch

from ..vit_checkpoints import match_keys
from .common import ConversionError, mismatch_report, resize_pos_embed

#: target tensors of mmseg's BEiT / MAE that no ViT student has: layer scale
#: (``init_values``) and relative-position tables, left to the target's init
MMSEG_BEIT_OWN = r'(^|\.)(gamma_[12]|relative_position_bias_table|' \
    r'relative_position_index)$'


def to_mmseg_beit(
    sd: Dict[str, torch.Tensor],
    target: Dict[str,
                 torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """mmpretrain ViT tensors -> mmseg ``BEiT`` / ``MAE`` keys.

    The names agree except layer scale (``attn.gamma1.weight`` ->
    ``gamma_1``, ``ffn.gamma2.weight`` -> ``gamma_2``) and, for BEiT, the qkv
    bias. mmseg's ``MAE`` keeps the whole ``attn.qkv.bias``; ``BEiT`` keeps
    ``attn.q_bias`` + ``attn.v_bias`` (``qv_bias=True``) or no bias at all:

    * the key bias is dropped, exactly: it adds ``q . b_k`` to every logit of a
      query, a per-query constant that softmax removes;
    * without ``v_bias``, the value bias moves into ``attn.proj.bias``
      (``+ W_proj @ b_v``), exactly: attention rows sum to 1, so it reaches
      the projection unchanged;
    * without ``q_bias`` the query bias has no place; a note says so.

    Args:
        sd (dict): Source tensors, mmpretrain ``VisionTransformer`` keys.
        target (dict): The target's ``state_dict()``.

    Returns:
        tuple: ``(tensors in mmseg keys, notes on inexact parts)``.
    """
    out, biases = {}, {}
    for k, v in sd.items():
        m = re.match(r'^layers\.(\d+)\.(.*)$', k)
        rest = m.group(2) if m else None
        if rest == 'attn.qkv.bias':
            biases[int(m.group(1))] = v
        elif rest == 'attn.gamma1.weight':
            out[f'layers.{m.group(1)}.gamma_1'] = v
        elif rest == 'ffn.gamma2.weight':
            out[f'layers.{m.group(1)}.gamma_2'] = v
        else:
            out[k] = v
    lost_q = []
    for i, bias in sorted(biases.items()):
        if f'layers.{i}.attn.qkv.bias' in target:
            out[f'layers.{i}.attn.qkv.bias'] = bias
            continue
        q, _, v = bias.chunk(3)
        if f'layers.{i}.attn.q_bias' in target:
            out[f'layers.{i}.attn.q_bias'] = q
            out[f'layers.{i}.attn.v_bias'] = v
            continue
        proj_w = out.get(f'layers.{i}.attn.proj.weight')
        if proj_w is None:
            continue  # the coverage check names the missing projection
        proj_b = out.get(f'layers.{i}.attn.proj.bias', torch.zeros_like(v))
        out[f'layers.{i}.attn.proj.bias'] = proj_b + proj_w @ v
        if bool(q.any()):
            lost_q.append(i)
    notes = []
    if lost_q:
        notes.append(
            f'the target has no q bias: the query bias of blocks {lost_q} '
            'is not representable (value bias folded into attn.proj.bias, '
            'key bias dropped, both exactly)')
    return out, notes


def fit_mmseg_beit(
    sd: Dict[str, torch.Tensor],
    model: torch.nn.Module,
    source: str,
    allow: Optional[str] = None
) -> Tuple[Dict[str, torch.Tensor], List[str], List[str], List[str]]:
    """Convert for mmseg's ``BEiT`` / ``MAE`` and verify coverage: every target
    tensor except layer scale and relative-position tables
    (:data:`MMSEG_BEIT_OWN`) must come from the source, with its shape. mmseg
    loads ``model.pretrained`` with ``strict=False`` and reports nothing, so
    this check is the only one.

    Returns:
        tuple: ``(tensors to save, target keys left to the target's init,
        source keys the target has no place for, notes)``.

    Raises:
        ConversionError: Naming every uncovered or mismatched target key.
    """
    target = model.state_dict()
    out, notes = to_mmseg_beit(sd, target)
    if 'pos_embed' in out and 'pos_embed' in target:
        out['pos_embed'] = resize_pos_embed(out['pos_embed'],
                                            model.patch_shape)
    own = MMSEG_BEIT_OWN + (f'|{allow}' if allow else '')
    match = match_keys(out, target, own)
    if match.missing or match.mismatched:
        raise ConversionError(
            mismatch_report(source, dataclasses.replace(match, unexpected=[])))
    kept = {k: v for k, v in match.kept.items() if k in target}
    return kept, match.allowed_missing, sorted(match.unexpected), notes
