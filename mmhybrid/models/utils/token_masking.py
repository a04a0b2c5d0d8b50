"""Progressive redundant token masking: pure functions.

Notation: B images, N patch tokens (no [CLS]), K kept patch tokens.
Token sequences handled here always carry [CLS] first: ``(B, 1 + N, C)``.
"""
import math
from typing import Any, List, Optional

import torch

from ...utils.problems import Problem, raise_problems

SCHEDULES = ('linear', 'cosine', 'constant')
SELECTIONS = ('sample', 'topk')


def _keep_count(num_patches: int, mask_ratio: float) -> int:
    return int(round(num_patches * (1.0 - mask_ratio)))


def mask_ratio_problems(mask_ratio: Any,
                        key: str = 'mask_ratio',
                        num_patches: Optional[int] = None) -> List[Problem]:
    """A mask ratio must be a number in ``[0, 1)`` that keeps at least one of
    the student's patch tokens: the one check of the ratio, used by
    :func:`num_kept_tokens`, ``HybridDistill.mask_ratio``,
    ``ProgressiveMaskingHook`` and the preflight check.

    Args:
        mask_ratio (Any): As configured.
        key (str): Its config key, for the problem. Defaults to
            ``'mask_ratio'``.
        num_patches (int, optional): N; when given, the keep count is checked
            too.
    """
    try:
        r = float(mask_ratio)
    except (TypeError, ValueError):
        return [Problem(key, mask_ratio, 'expected a number in [0, 1)')]
    if not 0.0 <= r < 1.0:
        return [Problem(key, mask_ratio, 'mask ratio must be in [0, 1)')]
    if num_patches is not None and _keep_count(num_patches, r) < 1:
        return [
            Problem(
                key, mask_ratio,
                f"keeps zero of the student's {num_patches} patch "
                f'tokens (keep count round({num_patches} * (1 - {r}))'
                ' = 0)')
        ]
    return []


def num_kept_tokens(num_patches: int, mask_ratio: float) -> int:
    """Number of patch tokens the student keeps.

    Args:
        num_patches (int): N, patch tokens per image.
        mask_ratio (float): Fraction of patch tokens dropped, in ``[0, 1)``.

    Returns:
        int: ``K = round(N * (1 - mask_ratio))``, at least 1.

    Raises:
        ValueError: :func:`mask_ratio_problems`, in one line.
    """
    raise_problems('num_kept_tokens',
                   mask_ratio_problems(mask_ratio, 'mask_ratio', num_patches))
    return _keep_count(num_patches, mask_ratio)


def mask_ratio_at(progress: float,
                  final_ratio: float,
                  schedule: str = 'linear',
                  start_ratio: float = 0.0) -> float:
    """Mask ratio of the progressive schedule.

    Args:
        progress (float): Fraction of the schedule done, clipped to ``[0, 1]``.
        final_ratio (float): Ratio reached at ``progress = 1``.
        schedule (str): ``'linear'``, ``'cosine'`` (slow start, slow end) or
            ``'constant'`` (``final_ratio`` from the first step). Defaults to
            ``'linear'``.
        start_ratio (float): Ratio at ``progress = 0``. Defaults to 0.

    Returns:
        float: The ratio for this point of training.
    """
    p = min(max(float(progress), 0.0), 1.0)
    if schedule == 'linear':
        w = p
    elif schedule == 'cosine':
        w = 0.5 * (1.0 - math.cos(math.pi * p))
    elif schedule == 'constant':
        w = 1.0
    else:
        raise ValueError(
            f'unknown mask schedule {schedule!r}; expected one of {SCHEDULES}')
    return start_ratio + (final_ratio - start_ratio) * w


def select_kept_tokens(
        importance: torch.Tensor,
        num_keep: int,
        mode: str = 'sample',
        generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Choose which patch tokens the student keeps.

    ``'sample'`` draws ``num_keep`` tokens without replacement with probability
    proportional to ``importance`` (Gumbel-top-k, which is exactly sequential
    sampling without replacement, done in one vectorised call). ``'topk'``
    keeps the most important tokens deterministically.

    Args:
        importance (Tensor): ``(B, N)`` non-negative token importance.
        num_keep (int): K.
        mode (str): ``'sample'`` or ``'topk'``. Defaults to ``'sample'``.
        generator (torch.Generator, optional): RNG for ``'sample'``.

    Returns:
        Tensor: ``(B, K)`` int64 patch indices in ``[0, N)``, sorted ascending
        so kept tokens stay in raster order.
    """
    B, N = importance.shape
    if not 1 <= num_keep <= N:
        raise ValueError(f'num_keep must be in [1, {N}], got {num_keep}')
    if num_keep == N:
        return torch.arange(N, device=importance.device).expand(B, N)
    scores = importance.float()
    if mode == 'sample':
        # log(w) + Gumbel noise; clamp keeps zero-importance tokens drawable
        # last
        logw = scores.clamp_min(1e-12).log()
        u = torch.rand(scores.shape, generator=generator, device=scores.device)
        gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))
        scores = logw + gumbel
    elif mode != 'topk':
        raise ValueError(
            f'unknown token selection {mode!r}; expected one of {SELECTIONS}')
    idx = scores.topk(num_keep, dim=1, sorted=False).indices
    return idx.sort(dim=1).values


def with_cls_index(keep_idx: torch.Tensor) -> torch.Tensor:
    """Indices into ``[CLS] + patches``: ``(B, K) -> (B, 1 + K)``."""
    cls = keep_idx.new_zeros(keep_idx.shape[0], 1)
    return torch.cat([cls, keep_idx + 1], dim=1)


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Gather tokens along dim 1: ``(B, L, C), (B, M) -> (B, M, C)``."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def renormalize_relation(attn: torch.Tensor,
                         index: torch.Tensor) -> torch.Tensor:
    """Restrict attention distributions to kept x kept and renormalise rows.

    This is the reference form used by tests and the naive path; the training
    path gets the same result as ``softmax`` of logits computed only on kept
    tokens, since ``softmax(z)[K] / sum_K softmax(z) = softmax(z[K])``.

    Args:
        attn (Tensor): ``(B, H, L, L)`` row-stochastic maps.
        index (Tensor): ``(B, M)`` kept positions in ``[0, L)``.

    Returns:
        Tensor: ``(B, H, M, M)`` with rows summing to 1.
    """
    B, H, L, _ = attn.shape
    M = index.shape[1]
    rows = index[:, None, :, None].expand(B, H, M, L)
    sub = attn.gather(2, rows)
    cols = index[:, None, None, :].expand(B, H, M, M)
    sub = sub.gather(3, cols)
    return sub / sub.sum(-1, keepdim=True).clamp_min(1e-12)
