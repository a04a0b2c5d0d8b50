"""What :class:`~.zoo_teacher.ZooTeacher` reads from each mmpretrain ViT
family.

Two tables:

* :data:`BACKBONE_FAMILIES`, keyed by the backbone class (exactly: a subclass
  may change the forward), says how the family's own forward is called and
  whether its token grid is fixed;
* :data:`ATTENTION_READOUTS`, keyed by the attention class of its blocks, says
  how q, k, v and the additive logits bias are computed **as that attention
  computes them**, with the attention module's own submodules and parameters,
  from the inputs its forward received and the output of its ``qkv`` layer
  (both captured by forward hooks; the projection is not computed twice):

  - ``MultiheadAttention`` (ViT, DeiT, DeiT III, DINOv2, CLIP, MAE): ``qkv``;
  - ``BEiTAttention`` (BEiT, BEiT v2): ``qkv`` weight with ``q_bias`` and
    ``v_bias`` (k has no bias), plus the relative position bias (its own table
    and the backbone's shared one when given) as ``bias``;
  - ``AttentionWithRoPE`` (EVA-02): ``qkv`` then the module's ``rope`` on the
    patch tokens ([CLS] unrotated).

  A qk scale other than ``head_dims ** -0.5`` is folded into q, so that
  ``relation_logits(q, k, num_heads) + bias`` are the family's logits.
"""
from functools import partial
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn
from mmpretrain.models.backbones import (BEiTViT, DeiT3, VisionTransformer,
                                         ViTEVA02)
from mmpretrain.models.backbones.vit_eva02 import AttentionWithRoPE
from mmpretrain.models.selfsup.beit import BEiTPretrainViT
from mmpretrain.models.selfsup.mae import MAEViT
from mmpretrain.models.utils.attention import BEiTAttention, MultiheadAttention

from ..backbones.hybrid_vit import HybridViT
from ..backbones.register_vit import RegisterViT

#: ``(q, k, v, bias)``: q/k/v ``(B, L, C)`` (heads side by side, as
#: ``relation_logits`` splits them), q carrying any non-default scale; bias
#: ``(1, H, L, L)`` or None
Readout = Tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                Optional[torch.Tensor]]


class BackboneFamily(NamedTuple):
    """How a backbone class is run.

    Attributes:
        name (str): The family, for messages and reports.
        forward_kwargs (dict): Keyword arguments of the backbone's own
            ``forward`` for a plain encoding of the full image (the
            pre-training backbones of MAE and BEiT: ``mask=None``, no
            masking).
    """
    name: str
    forward_kwargs: dict = {}


#: backbone class -> family (exact class)
BACKBONE_FAMILIES: Dict[type, BackboneFamily] = {
    VisionTransformer:
    BackboneFamily('ViT (mmpretrain VisionTransformer: DeiT, DINOv2, CLIP)'),
    HybridViT:
    BackboneFamily('HybridViT (mmhybrid)'),
    RegisterViT:
    BackboneFamily('DINOv2 with registers (RegisterViT)'),
    MAEViT:
    BackboneFamily('MAE (MAEViT)', dict(mask=None)),
    DeiT3:
    BackboneFamily('DeiT III (DeiT3)'),
    BEiTViT:
    BackboneFamily('BEiT / BEiT v2 (BEiTViT)'),
    BEiTPretrainViT:
    BackboneFamily('BEiT / BEiT v2 pre-training (BEiTPretrainViT)',
                   dict(mask=None)),
    ViTEVA02:
    BackboneFamily('EVA-02 (ViTEVA02)'),
}


def _to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``(B, H, L, d) -> (B, L, H * d)``."""
    B, H, L, d = x.shape
    return x.transpose(1, 2).reshape(B, L, H * d)


def _fold_scale(q: torch.Tensor, scale: float, head_dims: int) -> torch.Tensor:
    """q whose default-scaled logits are the family's ``scale``-d ones."""
    default = head_dims**-0.5
    if scale == default:
        return q
    return q * (scale / default)


def _split(qkv: torch.Tensor,
           num_heads: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A ``(B, L, 3C)`` qkv output as the families split it: each of q, k, v
    ``(B, H, L, d)``."""
    B, L, _ = qkv.shape
    q, k, v = qkv.reshape(B, L, 3, num_heads, -1).permute(2, 0, 3, 1, 4)
    return q, k, v


def _arg(args: tuple, kwargs: dict, index: int, name: str):
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else None


def _qkv(attn: nn.Module, args: tuple, kwargs: dict,
         qkv: Optional[torch.Tensor]) -> torch.Tensor:
    """The output of ``attn.qkv`` on the attention's input: the one its forward
    computed when captured, else computed again."""
    return attn.qkv(_arg(args, kwargs, 0, 'x')) if qkv is None else qkv


def read_multihead(attn: MultiheadAttention,
                   args: tuple,
                   kwargs: dict,
                   qkv: Optional[torch.Tensor] = None) -> Readout:
    """mmpretrain's ``MultiheadAttention``: ``qkv``, then fused attention at
    the scale its ``scaled_dot_product_attention`` is bound to."""
    q, k, v = _split(_qkv(attn, args, kwargs, qkv), attn.num_heads)
    sdpa = attn.scaled_dot_product_attention
    scale = (sdpa.keywords.get('scale')
             if isinstance(sdpa, partial) else None) or attn.head_dims**-0.5
    q = _fold_scale(_to_tokens(q), scale, attn.head_dims)
    return q, _to_tokens(k), _to_tokens(v), None


def read_beit(attn: BEiTAttention,
              args: tuple,
              kwargs: dict,
              qkv: Optional[torch.Tensor] = None) -> Readout:
    """BEiT's attention: q and v biases (none on k), scale ``attn.scale``,
    relative position bias from its own table plus the shared one."""
    rel_pos_bias = _arg(args, kwargs, 1, 'rel_pos_bias')
    if attn.bias == 'qv_bias':
        # its forward applies the weight functionally: computed again here
        k_bias = torch.zeros_like(attn.v_bias)
        qkv = nn.functional.linear(
            _arg(args, kwargs, 0, 'x'), attn.qkv.weight,
            torch.cat((attn.q_bias, k_bias, attn.v_bias)))
    q, k, v = _split(_qkv(attn, args, kwargs, qkv), attn.num_heads)
    head_dims = q.shape[-1]
    q = _fold_scale(_to_tokens(q), attn.scale, head_dims)
    bias = None
    if attn.relative_position_bias_table is not None:
        Wh, Ww = attn.window_size
        table = attn.relative_position_bias_table[
            attn.relative_position_index.view(-1)].view(
                Wh * Ww + 1, Wh * Ww + 1, -1)
        bias = table.permute(2, 0, 1).unsqueeze(0)
    if rel_pos_bias is not None:
        shared = rel_pos_bias if rel_pos_bias.dim() == 4 else \
            rel_pos_bias.unsqueeze(0)
        bias = shared if bias is None else bias + shared
    return q, _to_tokens(k), _to_tokens(v), bias


def read_eva02(attn: AttentionWithRoPE,
               args: tuple,
               kwargs: dict,
               qkv: Optional[torch.Tensor] = None) -> Readout:
    """EVA-02's attention: ``qkv``, then ``rope`` on the patch tokens (all
    tokens without [CLS]), scale ``attn.scale``."""
    patch_resolution = _arg(args, kwargs, 1, 'patch_resolution')
    q, k, v = _split(_qkv(attn, args, kwargs, qkv), attn.num_heads)
    if attn.rope:
        if attn.with_cls_token:
            q = torch.cat(
                (q[:, :, :1], attn.rope(q[:, :, 1:], patch_resolution)),
                -2).type_as(v)
            k = torch.cat(
                (k[:, :, :1], attn.rope(k[:, :, 1:], patch_resolution)),
                -2).type_as(v)
        else:
            q = attn.rope(q, patch_resolution)
            k = attn.rope(k, patch_resolution)
    q = _fold_scale(_to_tokens(q), attn.scale, attn.head_dims)
    return q, _to_tokens(k), _to_tokens(v), None


#: attention class -> read-out (exact class): ``read(attn, args, kwargs,
#: qkv)`` from the attention forward's inputs and, when its forward called
#: ``attn.qkv`` (captured by a forward hook), that call's output
ATTENTION_READOUTS: Dict[type, Callable[..., Readout]] = {
    MultiheadAttention: read_multihead,
    BEiTAttention: read_beit,
    AttentionWithRoPE: read_eva02,
}


def _names(table: dict) -> str:
    return ', '.join(sorted(cls.__name__ for cls in table))


def backbone_family(backbone: nn.Module, owner: str) -> BackboneFamily:
    """The family of ``backbone``, checking that every block's attention has a
    read-out.

    Args:
        backbone (nn.Module): A built mmpretrain backbone.
        owner (str): Who asks, for the message (e.g. ``'ZooTeacher(...)'``).

    Raises:
        TypeError: One line naming the unsupported backbone or attention class
            and the supported ones.
    """
    family = BACKBONE_FAMILIES.get(type(backbone))
    if family is None:
        raise TypeError(
            f'{owner}: backbone class {type(backbone).__name__} is not '
            f'supported as a teacher; supported: {_names(BACKBONE_FAMILIES)}')
    for i, layer in enumerate(backbone.layers):
        attn = getattr(layer, 'attn', None)
        if type(attn) not in ATTENTION_READOUTS:
            raise TypeError(
                f'{owner}: block {i} of {type(backbone).__name__} has '
                f'attention {type(attn).__name__}, which has no read-out; '
                f'supported: {_names(ATTENTION_READOUTS)}')
    return family


def fixed_grid(backbone: nn.Module) -> Optional[Tuple[int, int]]:
    """The token grid a backbone is tied to (BEiT's relative position bias
    tables are sized for one grid), or None when any grid works."""
    shared = getattr(backbone, 'rel_pos_bias', None)
    tables = [
        getattr(layer.attn, 'relative_position_bias_table', None)
        for layer in backbone.layers
    ]
    if shared is not None or any(t is not None for t in tables):
        return tuple(backbone.patch_resolution)
    return None
