"""Per-head attention statistics of a ViT: pure functions.

The one implementation of each statistic, at the models layer so that both
the offline analysis (:mod:`mmhybrid.analysis`, which re-exports these names
from ``mmhybrid.analysis.attention_metrics``) and the training-time monitor
(:class:`~mmhybrid.engine.hooks.AttentionDiversityHook`) use it.

These are the measurements the Hybrid Distillation paper (and the works it
builds on) uses to show attention *collapse* in contrastive/supervised ViTs and
attention *diversity* in MIM ViTs:

* :func:`attention_distance`: the mean attention distance, in pixels
  (Dosovitskiy et al. 2021; Xie et al., "Revealing the dark secrets of MIM",
  2023). Local heads have short distances; collapsed deep layers have every
  head at the same, long distance.
* :func:`attention_entropy`: the entropy of each query's attention
  distribution, in nats. Low = sharp (few keys), ``log N`` = uniform.
* :func:`query_key_nmi`: the normalised mutual information between the query
  position and the key position (Park et al., "What do self-supervised ViTs
  learn?", ICLR 2023). Low NMI = every query attends alike (collapse): the key
  a head looks at carries no information about which query is looking.

Shapes: ``B`` images, ``H`` heads, ``L`` tokens of the map (``L = P + N``:
``P`` prefix tokens such as [CLS], then ``N = h * w`` patch tokens in raster
order). Every map is row-stochastic: ``attn[b, h, q, :]`` is query ``q``'s
distribution over keys. Every function returns one value per image and head,
``(B, H)``; average over ``B`` for the per-head numbers the paper plots.

Choice (documented, used by every function and by ``tools/analysis``):
statistics are computed on the **patch x patch block** of the map, with each
row renormalised over the patch keys (:func:`patch_attention`). [CLS] has no
position in the image, so it has no distance; keeping it as a key would also
let a head that parks its attention on [CLS] (common in deep supervised layers)
look "sharp" and "distant" for reasons unrelated to the image.
``num_prefix_tokens=0`` in the entropy and NMI functions uses the map exactly
as given.
"""
import math
from typing import Dict, Iterable, Optional, Sequence, Union

import numpy as np
import torch

from ...utils.sizes import as_pair as _pair

_EPS = 1e-12

__all__ = [
    'METRICS', 'attention_distance', 'attention_entropy', 'attention_stats',
    'deep_layers', 'layer_scalars', 'patch_attention', 'patch_distance_matrix',
    'query_key_nmi', 'vit_attention_stats'
]

IntPair = Union[int, Sequence[int]]
SizePair = Union[float, Sequence[float]]


def _check_map(attn: torch.Tensor) -> None:
    if attn.dim() != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError('attention maps must be (B, H, L, L), got shape '
                         f'{tuple(attn.shape)}')


def patch_attention(attn: torch.Tensor,
                    num_prefix_tokens: int = 1) -> torch.Tensor:
    """Keep the patch x patch block of attention maps and renormalise rows.

    Args:
        attn (Tensor): ``(B, H, P + N, P + N)`` row-stochastic maps, the ``P``
            prefix tokens ([CLS], ...) first.
        num_prefix_tokens (int): ``P``. Defaults to 1 ([CLS]).

    Returns:
        Tensor: ``(B, H, N, N)`` fp32 maps whose rows sum to 1 (a row that gave
        all its mass to prefix tokens becomes uniform over the patches).
    """
    _check_map(attn)
    if not 0 <= num_prefix_tokens < attn.shape[-1]:
        raise ValueError(
            f'num_prefix_tokens={num_prefix_tokens} leaves no patch '
            f'token in a map of {attn.shape[-1]} tokens')
    sub = attn[..., num_prefix_tokens:, num_prefix_tokens:].float()
    mass = sub.sum(-1, keepdim=True)
    n = sub.shape[-1]
    return torch.where(mass > _EPS, sub / mass.clamp_min(_EPS),
                       torch.full_like(sub, 1.0 / n))


def patch_distance_matrix(
        grid_hw: IntPair,
        patch_size: SizePair = 1,
        device: Optional[torch.device] = None) -> torch.Tensor:
    """Euclidean distances between patch centres, in pixels.

    Args:
        grid_hw (int | tuple[int, int]): Patch grid ``(h, w)``.
        patch_size (float | tuple[float, float]): Patch ``(height, width)`` in
            pixels.
            Defaults to 1 (distances in patches).
        device (torch.device, optional): Where to build the matrix.

    Returns:
        Tensor: ``(N, N)`` fp32, ``N = h * w`` in raster order.
    """
    h, w = _pair(grid_hw)
    ph, pw = _pair(patch_size, float)
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32) * ph,
        torch.arange(w, device=device, dtype=torch.float32) * pw,
        indexing='ij')
    pos = torch.stack([ys.flatten(), xs.flatten()], dim=1)
    return torch.cdist(pos, pos)


def attention_distance(
        attn: torch.Tensor,
        grid_hw: IntPair,
        patch_size: SizePair,
        num_prefix_tokens: Optional[int] = None) -> torch.Tensor:
    """Mean attention distance per image and head, in pixels.

    For each query patch ``q``: ``sum_k a[q, k] * ||pos(q) - pos(k)||`` with
    ``pos`` the patch centre in pixels and ``a`` the map restricted to patch
    keys and renormalised over them (see the module docstring); then the mean
    over query patches.

    Args:
        attn (Tensor): ``(B, H, L, L)`` row-stochastic maps; ``L`` is ``N`` or
            ``P + N`` with ``N = h * w``.
        grid_hw (int | tuple[int, int]): Patch grid ``(h, w)``.
        patch_size (float | tuple[float, float]): Patch size in pixels.
        num_prefix_tokens (int, optional): ``P``; inferred as ``L - h * w``
            when None.

    Returns:
        Tensor: ``(B, H)`` fp32 distances in pixels.
    """
    _check_map(attn)
    h, w = _pair(grid_hw)
    n = h * w
    prefix = attn.shape[
        -1] - n if num_prefix_tokens is None else num_prefix_tokens
    if prefix < 0 or attn.shape[-1] != prefix + n:
        raise ValueError(
            f'a {h}x{w} patch grid ({n} tokens) does not fit maps '
            f'of {attn.shape[-1]} tokens')
    a = patch_attention(attn, prefix) if prefix else attn.float()
    dist = patch_distance_matrix((h, w), patch_size, a.device)
    return (a * dist).sum(-1).mean(-1)


def attention_entropy(attn: torch.Tensor,
                      num_prefix_tokens: int = 0) -> torch.Tensor:
    """Mean entropy of the query rows, per image and head, in nats.

    ``-sum_k a[q, k] log a[q, k]`` averaged over queries (``0 log 0 = 0``).

    Args:
        attn (Tensor): ``(B, H, L, L)`` row-stochastic maps.
        num_prefix_tokens (int): Prefix tokens to drop first (rows renormalised
            over the remaining keys, :func:`patch_attention`). Defaults to 0:
            the map as given.

    Returns:
        Tensor: ``(B, H)`` fp32, in ``[0, log(L - P)]``.
    """
    _check_map(attn)
    a = patch_attention(attn, num_prefix_tokens) if num_prefix_tokens else \
        attn.float()
    ent = -(a * a.clamp_min(_EPS).log()).sum(-1)
    return ent.mean(-1)


def query_key_nmi(attn: torch.Tensor,
                  num_prefix_tokens: int = 0) -> torch.Tensor:
    """Normalised mutual information between query and key positions.

    Definition (Park et al., ICLR 2023): read one map as the joint distribution
    of a query position ``Q`` drawn uniformly and the key position ``K`` it
    attends to, ``p(q, k) = a[q, k] / N_q``. Then ``H(Q) = log N_q``,
    ``p(k) = mean_q a[q, k]``, ``H(K) = -sum_k p(k) log p(k)``,
    ``I(Q; K) = H(K) - H(K | Q) = H(K) - mean_q H(a[q, :])`` and

        ``NMI = I(Q; K) / sqrt(H(Q) * H(K))``, in ``[0, 1]``.

    A uniform map gives 0 (keys independent of the query), a permutation map
    (e.g. the one-hot diagonal) gives 1, and a map where every query attends to
    the same key (``H(K) = 0``, full collapse) is defined as 0.

    Args:
        attn (Tensor): ``(B, H, L, L)`` row-stochastic maps, one joint
            distribution per image and head.
        num_prefix_tokens (int): Prefix tokens to drop first (see
            :func:`patch_attention`). Defaults to 0: the map as given.

    Returns:
        Tensor: ``(B, H)`` fp32 NMI.
    """
    _check_map(attn)
    a = patch_attention(attn, num_prefix_tokens) if num_prefix_tokens else \
        attn.float()
    nq = a.shape[-2]
    if nq < 2:
        return a.new_zeros(a.shape[:2])
    h_q = math.log(nq)
    p_k = a.mean(-2)  # (B, H, L)
    h_k = -(p_k * p_k.clamp_min(_EPS).log()).sum(-1)
    h_k_given_q = -(a * a.clamp_min(_EPS).log()).sum(-1).mean(-1)
    mi = (h_k - h_k_given_q).clamp_min(0.0)
    nmi = mi / (h_q * h_k).clamp_min(_EPS).sqrt()
    return torch.where(h_k > 1e-6, nmi.clamp(0.0, 1.0), torch.zeros_like(nmi))


def attention_stats(attn: torch.Tensor,
                    grid_hw: IntPair,
                    patch_size: SizePair,
                    num_prefix_tokens: Optional[int] = None) -> dict:
    """All three statistics of a batch of maps, on the same patch x patch maps.

    Args:
        attn (Tensor): ``(B, H, L, L)`` row-stochastic maps.
        grid_hw (int | tuple[int, int]): Patch grid ``(h, w)``.
        patch_size (float | tuple[float, float]): Patch size in pixels.
        num_prefix_tokens (int, optional): ``P``; inferred as ``L - h * w``
            when None.

    Returns:
        dict[str, Tensor]: ``'distance'`` (pixels), ``'entropy'`` (nats) and
        ``'nmi'``, each ``(B, H)``.
    """
    _check_map(attn)
    h, w = _pair(grid_hw)
    prefix = (
        attn.shape[-1] -
        h * w if num_prefix_tokens is None else num_prefix_tokens)
    a = patch_attention(attn, prefix) if prefix else attn.float()
    return dict(
        distance=attention_distance(a, (h, w), patch_size, 0),
        entropy=attention_entropy(a),
        nmi=query_key_nmi(a))


#: the statistics of :func:`attention_stats`, in the order the CSVs write them
METRICS = ('distance', 'entropy', 'nmi')


@torch.no_grad()
def vit_attention_stats(
        model,
        batches: Iterable[torch.Tensor],
        grid_hw: IntPair,
        patch_size: SizePair,
        layers: Optional[Sequence[int]] = None) -> Dict[str, np.ndarray]:
    """Per layer and head statistics of a ViT, averaged over images.

    What ``tools/analysis/attention_stats.py`` and the training-time
    ``AttentionDiversityHook`` both compute: for each batch the model's
    attention maps (:meth:`HybridViT.attention_maps`), then
    :func:`attention_stats` of each block with one prefix token ([CLS]),
    summed per head in float64 and divided by the number of images.

    Args:
        model: A ViT with ``attention_maps(x, layers)`` and ``num_layers``
            (:class:`~mmhybrid.models.backbones.HybridViT`), in eval mode.
        batches (Iterable[Tensor]): ``(B, 3, H, W)`` normalised inputs.
        grid_hw (int | tuple[int, int]): Patch grid ``(h, w)``.
        patch_size (float | tuple[float, float]): Patch size in pixels.
        layers (Sequence[int], optional): Blocks (0-based); all when None.

    Returns:
        dict[str, np.ndarray]: ``distance``, ``entropy``, ``nmi``, each
        ``(num_layers, num_heads)`` (rows in the order of ``layers``).
    """
    layers = list(range(model.num_layers)) if layers is None else list(layers)
    sums = {m: None for m in METRICS}
    n = 0
    for x in batches:
        maps = model.attention_maps(x, layers)
        per_layer = {m: [] for m in METRICS}
        for i in layers:
            s = attention_stats(
                maps[i], grid_hw, patch_size, num_prefix_tokens=1)
            for m in METRICS:
                per_layer[m].append(s[m].sum(0).double().cpu())  # (H,)
        for m in METRICS:
            batch = torch.stack(per_layer[m])  # (L, H)
            sums[m] = batch if sums[m] is None else sums[m] + batch
        n += x.shape[0]
    if not n:
        raise ValueError('vit_attention_stats: no images')
    return {m: (sums[m] / n).numpy() for m in METRICS}


def layer_scalars(stats: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Per-layer numbers of per layer and head statistics.

    Args:
        stats (dict): ``distance`` and ``nmi`` arrays ``(num_layers,
            num_heads)`` (:func:`vit_attention_stats`, or a CSV of
            ``tools/analysis/attention_stats.py`` read back).

    Returns:
        dict[str, np.ndarray]: ``(num_layers,)`` float64 arrays:
        ``distance`` (head mean, pixels), ``spread`` (the population std of
        the heads' mean distances, pixels: attention diversity; 0 when every
        head looks equally far) and ``nmi`` (head mean).
    """
    d = np.asarray(stats['distance'], dtype=np.float64)
    return dict(
        distance=d.mean(1),
        spread=d.std(1),
        nmi=np.asarray(stats['nmi'], dtype=np.float64).mean(1))


def deep_layers(num_layers: int,
                layers: Optional[Sequence[int]] = None) -> list:
    """The blocks counted as *deep*: ``layers`` (negative indices count from
    the end) or, when None, the last third (at least one block): ViT-B's 12
    blocks -> 8..11, the demo's 4 -> 2, 3."""
    if layers is None:
        k = max(1, -(-num_layers // 3))
        return list(range(num_layers - k, num_layers))
    out = sorted(
        {i % num_layers
         for i in layers if -num_layers <= i < num_layers})
    if not out:
        raise ValueError(f'deep_layers={list(layers)} names no block of a '
                         f'{num_layers}-block model')
    return out
