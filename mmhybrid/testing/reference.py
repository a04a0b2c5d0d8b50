"""The plain reference of one Hybrid Distillation step.

Written the obvious way, on purpose: explicit softmax attention maps in every
block of student and teachers, fp32 teachers on the full image, full teacher
maps restricted to kept x kept and renormalised, token importance read off the
importance teacher's full last-block map, relation pairs and head counts given
explicitly. Tests check the optimised path against it, and the speed benchmark
times it as the "naive" step. The rules it implements are those of
``docs/method.md``.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..models.utils.token_masking import (gather_tokens, renormalize_relation,
                                          with_cls_index)


def plain_attention(q: torch.Tensor, k: torch.Tensor,
                    num_heads: int) -> torch.Tensor:
    """``softmax(q_h k_h^T / sqrt(d))`` of ``(B, L, C)`` q/k split into
    ``num_heads`` heads of ``d = C / num_heads`` channels: ``(B, H, L, L)``."""
    B, L, C = q.shape
    q = q.reshape(B, L, num_heads, C // num_heads).transpose(1, 2)
    k = k.reshape(B, L, num_heads, C // num_heads).transpose(1, 2)
    return (q @ k.transpose(-2, -1) * (C // num_heads)**-0.5).softmax(-1)


def plain_vit(
    vit,
    x: torch.Tensor,
    keep_idx: Optional[torch.Tensor] = None,
    relation_heads: Optional[int] = None
) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """Run an mmpretrain-layout ViT with explicit attention in every block.

    Args:
        vit: The ViT (mmpretrain ``VisionTransformer`` layout).
        x (Tensor): ``(B, 3, H, W)`` images.
        keep_idx (Tensor, optional): ``(B, K)`` kept patch indices.
        relation_heads (int, optional): Head count of the returned maps: q/k
            are split into this many heads for the relations (the forward
            itself always uses the ViT's own heads). Defaults to the ViT's
            own head count.

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
        q, k, v = attn.qkv(h).reshape(B, L, 3, C).unbind(2)
        a = plain_attention(q, k, attn.num_heads)
        heads = relation_heads or attn.num_heads
        maps.append(a if heads ==
                    attn.num_heads else plain_attention(q, k, heads))
        v = v.reshape(B, L, attn.num_heads,
                      C // attn.num_heads).transpose(1, 2)
        out = (a @ v).transpose(1, 2).reshape(B, L, C)
        tokens = tokens + attn.gamma1(attn.proj(out))
        tokens = layer.ffn(layer.ln2(tokens), identity=tokens)
    if vit.final_norm:
        tokens = vit.ln1(tokens)
    return tokens, maps


def _teacher_input(teacher, x: torch.Tensor) -> torch.Tensor:
    """The teacher's own input normalisation applied to the student's input."""
    return x.float() * teacher.in_scale + teacher.in_shift


def plain_importance(teacher, x: torch.Tensor) -> torch.Tensor:
    """``(B, N)`` token importance: the [CLS]->patch attention of the teacher's
    last block on the full image, averaged over its heads."""
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        _, maps = plain_vit(teacher.backbone, _teacher_input(teacher, x))
    return maps[-1][:, :, 0, 1:].mean(1)


def plain_topk(importance: torch.Tensor,
               num_keep: int,
               min_gap: float = 1e-6) -> torch.Tensor:
    """``(B, K)`` indices of the ``num_keep`` most important tokens, sorted.

    Raises:
        ValueError: If the K-th and (K+1)-th importances of a row are closer
            than ``min_gap``: the choice would then hang on rounding, and a
            test comparing two implementations would be ill-posed.
    """
    ranked = importance.sort(-1, descending=True).values
    if num_keep < importance.shape[-1]:
        gap = (ranked[:, num_keep - 1] - ranked[:, num_keep]).min().item()
        if gap < min_gap:
            raise ValueError(f'top-{num_keep} is ambiguous: importance gap '
                             f'{gap:.2e} < {min_gap:.0e}')
    return importance.topk(num_keep, -1).indices.sort(-1).values


def plain_losses(
        model,
        x: torch.Tensor,
        keep_idx: Optional[torch.Tensor] = None,
        teachers: Optional[tuple] = None,
        relation_pairs: Optional[Sequence[Tuple[int, int]]] = None,
        relation_heads: Optional[int] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(loss_feat, loss_rel)`` of a default-configured ``HybridDistill``.

    Supports the default distances (whitened Smooth-L1 beta 2, KL(T || S) on
    Q-K relations); anything else raises NotImplementedError. The student's q/k
    are split into the relation teacher's head count
    (``docs/method.md#head-resplit``).

    Args:
        model (HybridDistill): Its student, neck, teachers and loss weights
            are used.
        x (Tensor): ``(B, 3, H, W)`` normalised images.
        keep_idx (Tensor, optional): ``(B, K)`` kept patch indices; None keeps
            every token.
        teachers (tuple, optional): Replaces ``(model.teacher_feat,
            model.teacher_rel)``, e.g. by fp32 copies.
        relation_pairs (Sequence[tuple[int, int]], optional): ``(student
            block, teacher block)`` pairs. Defaults to
            ``model.relation_pairs``.
        relation_heads (int, optional): Heads that student and teacher q/k
            are split into for the relations. Defaults to the relation
            teacher's head count (the method's rule; other values exist to
            show that the rule matters).
    """
    lf, lr = model.loss_feat, model.loss_rel
    default_feat = (lf.loss_type, lf.beta, lf.whiten_target) == ('smooth_l1',
                                                                 2.0, True)
    if not default_feat or lr.loss_type != 'kl' or lr.use_vv or \
            model.neck is None:
        raise NotImplementedError(
            'the plain reference covers the default losses')
    tc, tm = teachers or (model.teacher_feat, model.teacher_rel)
    pairs = model.relation_pairs if relation_pairs is None else relation_pairs
    heads = relation_heads or tm.backbone.layers[0].attn.num_heads
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        t_tokens, _ = plain_vit(tc.backbone, _teacher_input(tc, x))
        _, t_maps = plain_vit(
            tm.backbone, _teacher_input(tm, x), relation_heads=heads)
    s_tokens, s_maps = plain_vit(
        model.backbone, x, keep_idx, relation_heads=heads)
    if keep_idx is not None:
        t_tokens = gather_tokens(t_tokens, with_cls_index(keep_idx))
    pred = model.neck(s_tokens).float()
    target = F.layer_norm(t_tokens, t_tokens.shape[-1:], eps=1e-6)
    loss_feat = lf.loss_weight * F.smooth_l1_loss(pred, target, beta=2.0)
    kls = []
    for si, ti in pairs:
        t = t_maps[ti]
        if keep_idx is not None:
            t = renormalize_relation(t, with_cls_index(keep_idx))
        s = s_maps[si].float()
        kls.append((t * (t.clamp_min(1e-30).log() - s.clamp_min(1e-30).log())
                    ).sum(-1).mean())
    loss_rel = lr.loss_weight * sum(kls) / len(kls)
    return loss_feat, loss_rel


def plain_teacher_losses(model, x: torch.Tensor,
                         keep_idx: Optional[torch.Tensor]) -> dict:
    """Every loss of a ``HybridDistill(teachers=...)`` whose teachers are
    ``FrozenTeacher`` s, the plain way: ``{loss name: value}``.

    Each teacher runs :func:`plain_vit` on its own input (its normalisation,
    bicubic to its size, antialiased when shrinking); a resampled teacher's
    patch-token map is interpolated to the student's grid (bilinear, as
    ``grid='interpolate'`` says) before the kept tokens are gathered; relations
    are the full maps, restricted to kept x kept and renormalised. Default
    losses only (whitened Smooth-L1 beta 2, KL(T || S) on Q-K relations), no
    target norms.
    """
    grid = tuple(model.backbone.patch_resolution)
    index = None if keep_idx is None else with_cls_index(keep_idx)
    s_heads = {
        r.teacher: model.teachers[r.teacher].num_heads
        for r in model.relation_targets
    }
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        outs = {}
        for name, t in model.teachers.items():
            size = tuple(t.backbone.img_size)
            xin = _teacher_input(t, x)
            if tuple(x.shape[-2:]) != size:  # antialiased when shrinking
                xin = F.interpolate(
                    xin,
                    size=size,
                    mode='bicubic',
                    align_corners=False,
                    antialias=size[0] < x.shape[-2])
            outs[name] = plain_vit(t.backbone, xin)
    losses = {}
    for f in model.feature_targets:
        lf = getattr(model, f.loss)
        if (lf.loss_type, lf.beta, lf.whiten_target) != ('smooth_l1', 2.0,
                                                         True):
            raise NotImplementedError('the plain reference covers the '
                                      'default feature loss')
        tokens = outs[f.teacher][0]
        t_grid = tuple(model.teachers[f.teacher].backbone.patch_resolution)
        if t_grid != grid:
            B, _, C = tokens.shape
            patches = tokens[:, 1:].transpose(1, 2).reshape(B, C, *t_grid)
            patches = F.interpolate(
                patches,
                size=grid,
                mode='bilinear',
                align_corners=False,
                antialias=grid[0] < t_grid[0])
            tokens = torch.cat(
                [tokens[:, :1],
                 patches.flatten(2).transpose(1, 2)], 1)
        s_tokens, _ = plain_vit(model.backbone, x, keep_idx)
        if index is not None:
            tokens = gather_tokens(tokens, index)
        if f.tokens == 'cls':
            tokens, s_tokens = tokens[:, :1], s_tokens[:, :1]
        elif f.tokens == 'patches':
            tokens, s_tokens = tokens[:, 1:], s_tokens[:, 1:]
        pred = model.feature_neck(f.teacher)(s_tokens).float()
        target = F.layer_norm(tokens, tokens.shape[-1:], eps=1e-6)
        losses[f.loss] = lf.loss_weight * F.smooth_l1_loss(
            pred, target, beta=2.0)
    for r in model.relation_targets:
        lr = getattr(model, r.loss)
        if lr.loss_type != 'kl' or lr.use_vv:
            raise NotImplementedError('the plain reference covers the KL '
                                      'on Q-K relations')
        heads = s_heads[r.teacher]
        t_maps = plain_vit(
            model.teachers[r.teacher].backbone,
            _teacher_input(model.teachers[r.teacher], x),
            relation_heads=heads)[1]
        _, s_maps = plain_vit(
            model.backbone, x, keep_idx, relation_heads=heads)
        kls = []
        for si, ti in r.pairs:
            t = t_maps[ti]
            if index is not None:
                t = renormalize_relation(t, index)
            s = s_maps[si].float()
            kls.append((t * (t.clamp_min(1e-30).log() -
                             s.clamp_min(1e-30).log())).sum(-1).mean())
        losses[r.loss] = lr.loss_weight * sum(kls) / len(kls)
    return losses
