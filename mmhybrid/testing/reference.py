"""The plain reference of one Hybrid Distillation step.

Written the obvious way, on purpose: explicit softmax attention maps in every block
of student and teachers, fp32 teachers on the full image, full teacher maps
restricted to kept x kept and renormalised. Tests check the optimised path against
it, and the speed benchmark times it as the "naive" step.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from ..models.utils.token_masking import (gather_tokens, renormalize_relation,
                                          with_cls_index)


def plain_vit(vit, x: torch.Tensor, keep_idx: Optional[torch.Tensor] = None
              ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """Run an mmpretrain-layout ViT with explicit attention in every block.

    Returns:
        tuple: tokens ``(B, 1 + K, C)`` after the final norm, and the
        ``(B, H, 1 + K, 1 + K)`` attention map of every block.
    """
    tokens, _ = vit.patch_embed(x)
    cls = vit.cls_token.expand(x.shape[0], -1, -1)
    tokens = torch.cat([cls, tokens], 1) + vit.pos_embed
    if keep_idx is not None:
        tokens = gather_tokens(tokens, with_cls_index(keep_idx))
    tokens = vit.pre_norm(tokens)
    maps = []
    for layer in vit.layers:
        attn = layer.attn
        h = layer.ln1(tokens)
        B, L, C = h.shape
        q, k, v = attn.qkv(h).reshape(B, L, 3, attn.num_heads,
                                      attn.head_dims).permute(2, 0, 3, 1, 4)
        a = (q @ k.transpose(-2, -1) * attn.head_dims**-0.5).softmax(-1)
        maps.append(a)
        out = (a @ v).transpose(1, 2).reshape(B, L, C)
        tokens = tokens + attn.gamma1(attn.proj(out))
        tokens = layer.ffn(layer.ln2(tokens), identity=tokens)
    if vit.final_norm:
        tokens = vit.ln1(tokens)
    return tokens, maps


def plain_losses(model, x: torch.Tensor,
                 keep_idx: Optional[torch.Tensor] = None,
                 teachers: Optional[tuple] = None
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(loss_feat, loss_rel)`` of a default-configured ``HybridDistill``.

    Supports the default distances (whitened Smooth-L1 beta 2, KL(T || S) on Q-K
    relations); anything else raises NotImplementedError. ``teachers`` replaces
    ``(model.teacher_feat, model.teacher_rel)``, e.g. by fp32 copies.
    """
    lf, lr = model.loss_feat, model.loss_rel
    if (lf.loss_type, lf.beta, lf.whiten_target) != ('smooth_l1', 2.0, True) or \
            lr.loss_type != 'kl' or lr.use_vv or model.neck is None:
        raise NotImplementedError('the plain reference covers the default losses')
    tc, tm = teachers or (model.teacher_feat, model.teacher_rel)
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        xf = x.float()
        t_tokens, _ = plain_vit(tc.backbone, xf * tc.in_scale + tc.in_shift)
        _, t_maps = plain_vit(tm.backbone, xf)
    s_tokens, s_maps = plain_vit(model.backbone, x, keep_idx)
    if keep_idx is not None:
        t_tokens = gather_tokens(t_tokens, with_cls_index(keep_idx))
    pred = model.neck(s_tokens).float()
    target = F.layer_norm(t_tokens, t_tokens.shape[-1:], eps=1e-6)
    loss_feat = lf.loss_weight * F.smooth_l1_loss(pred, target, beta=2.0)
    kls = []
    for si, ti in model.relation_pairs:
        t = t_maps[ti]
        if keep_idx is not None:
            t = renormalize_relation(t, with_cls_index(keep_idx))
        s = s_maps[si].float()
        if s.shape[1] != t.shape[1]:
            raise NotImplementedError('head re-splitting is not in the reference')
        kls.append((t * (t.clamp_min(1e-30).log() -
                         s.clamp_min(1e-30).log())).sum(-1).mean())
    loss_rel = lr.loss_weight * sum(kls) / len(kls)
    return loss_feat, loss_rel
