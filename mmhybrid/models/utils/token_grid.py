"""Token maps on another patch grid: pure functions.

A teacher with 14-px patches sees a 224-px image as 16x16 tokens, a /16 student
as 14x14. ``grid='interpolate'`` (RADIO's choice) resamples the teacher's
patch-token map to the student's grid instead of resizing the teacher's input.
Shapes: ``(B, 1 + N, C)`` with [CLS] first.
"""
from typing import Tuple

import torch
import torch.nn.functional as F


def resample_patch_tokens(tokens: torch.Tensor, src: Tuple[int, int],
                          dst: Tuple[int, int]) -> torch.Tensor:
    """Bilinear resampling of the patch tokens to another grid; [CLS] kept.

    Args:
        tokens (Tensor): ``(B, 1 + src_h * src_w, C)``, [CLS] first, patches
            in raster order.
        src (tuple[int, int]): The tokens' ``(rows, cols)``.
        dst (tuple[int, int]): The wanted ``(rows, cols)``.

    Returns:
        Tensor: ``(B, 1 + dst_h * dst_w, C)``; ``tokens`` when the grids
        match.
    """
    if tuple(src) == tuple(dst):
        return tokens
    B, L, C = tokens.shape
    cls, patches = tokens[:, :1], tokens[:, 1:]
    grid = patches.transpose(1, 2).reshape(B, C, *src)
    grid = F.interpolate(
        grid.float(),
        size=tuple(dst),
        mode='bilinear',
        align_corners=False,
        antialias=dst[0] < src[0] or dst[1] < src[1]).to(tokens.dtype)
    return torch.cat([cls, grid.flatten(2).transpose(1, 2)], dim=1)


def resample_importance(importance: torch.Tensor, src: Tuple[int, int],
                        dst: Tuple[int, int]) -> torch.Tensor:
    """A ``(B, N)`` per-patch score map on another grid (area-weighted, so the
    scores keep their sum up to the ratio of patch counts)."""
    if tuple(src) == tuple(dst):
        return importance
    B = importance.shape[0]
    m = importance.float().reshape(B, 1, *src)
    return F.interpolate(m, size=tuple(dst), mode='area').flatten(1)
