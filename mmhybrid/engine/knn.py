"""DINO's k-NN evaluation of frozen features: the one implementation.

Used by :class:`~mmhybrid.engine.hooks.KNNMonitorHook` during training, by
``tools/analysis/knn_eval.py`` (:mod:`mmhybrid.analysis.knn`) on any
checkpoint, and by the miniature's evaluation (:mod:`mmhybrid.analysis.
miniature`).

Protocol (Caron et al., "Emerging properties in self-supervised vision
transformers", 2021, ``eval_knn.py``): features L2-normalised, cosine
similarity of each query to every bank feature, the ``k = 20`` most similar
vote for their label with weight ``exp(similarity / T)``, ``T = 0.07``; the
prediction is the label with the largest summed weight; top-1 in percent.

Distributed: :func:`extract_features` gives each rank its shard of a dataset
(mmengine's ``DefaultSampler``, no shuffling), then gathers every rank's
features and labels and puts them back in dataset order, so every rank holds
the whole bank and the same queries and computes the same top-1 as one process
would.
"""
import math
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

#: how a backbone's tokens become one feature per image
FEATURES = ('cls', 'mean')


def knn_votes(bank_feats: torch.Tensor,
              bank_labels: torch.Tensor,
              query_feats: torch.Tensor,
              k: int = 20,
              temperature: float = 0.07,
              num_classes: Optional[int] = None,
              chunk_size: int = 1024) -> torch.Tensor:
    """Summed vote weights of the ``k`` nearest bank features, per class.

    Args:
        bank_feats (Tensor): ``(N, C)`` features of the labelled bank.
        bank_labels (Tensor): ``(N,)`` integer labels.
        query_feats (Tensor): ``(Q, C)`` features to classify.
        k (int): Neighbours (fewer when the bank is smaller). Defaults to 20.
        temperature (float): Vote weight ``exp(cos / temperature)``.
            Defaults to 0.07.
        num_classes (int, optional): Default: the largest bank label + 1.
        chunk_size (int): Queries per similarity matrix (memory bound).

    Returns:
        Tensor: ``(Q, num_classes)`` fp32 votes, on the bank's device.
    """
    if bank_feats.shape[0] != bank_labels.shape[0]:
        raise ValueError(f'{bank_feats.shape[0]} bank features but '
                         f'{bank_labels.shape[0]} labels')
    if bank_feats.shape[0] == 0:
        raise ValueError('the k-NN bank is empty')
    device = bank_feats.device
    bank = F.normalize(bank_feats.float(), dim=1)
    labels = bank_labels.to(device=device, dtype=torch.long)
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    k = min(int(k), bank.shape[0])
    out = []
    for start in range(0, query_feats.shape[0], chunk_size):
        q = F.normalize(
            query_feats[start:start + chunk_size].to(device).float(), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)  # (q, k)
        votes = torch.zeros(q.shape[0], num_classes, device=device)
        votes.scatter_add_(1, labels[idx], (sim / temperature).exp())
        out.append(votes)
    if not out:
        return torch.zeros(0, num_classes, device=device)
    return torch.cat(out)


def knn_top1(bank_feats: torch.Tensor,
             bank_labels: torch.Tensor,
             query_feats: torch.Tensor,
             query_labels: torch.Tensor,
             k: int = 20,
             temperature: float = 0.07,
             return_predictions: bool = False):
    """Top-1 (%) of DINO's weighted k-NN classifier (see :func:`knn_votes`).

    No training, so no probe noise: the same features give the same number.

    Returns:
        float | tuple: The top-1; with ``return_predictions`` also the
        ``(Q,)`` predicted labels (CPU).
    """
    num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
    votes = knn_votes(bank_feats, bank_labels, query_feats, k, temperature,
                      num_classes)
    pred = votes.argmax(1).cpu()
    top1 = float((pred == query_labels.cpu().long()).float().mean() * 100)
    return (top1, pred) if return_predictions else top1


def pool_features(out, feature: str = 'cls') -> torch.Tensor:
    """One feature per image from a backbone's output.

    Args:
        out: What an mmpretrain backbone returns: a tuple of outputs (the last
            is used) or one tensor; ``(B, 1 + N, C)`` tokens ([CLS] first,
            ``out_type='raw'``), ``(B, C)`` (``'cls_token'`` /
            ``'avg_featmap'``) or ``(B, C, h, w)`` (``'featmap'``).
        feature (str): ``'cls'`` (the [CLS] token) or ``'mean'`` (the mean of
            the patch tokens). Defaults to ``'cls'``.

    Returns:
        Tensor: ``(B, C)``.
    """
    if feature not in FEATURES:
        raise ValueError(f'feature must be one of {FEATURES}, got '
                         f'{feature!r}')
    if isinstance(out, (list, tuple)):
        out = out[-1]
    if isinstance(out, (list, tuple)):  # (featmap, cls) pairs of old configs
        out = out[-1]
    if out.dim() == 2:
        if feature == 'mean':
            raise ValueError('the backbone gives one vector per image '
                             "(out_type 'cls_token'/'avg_featmap'): use "
                             "feature='cls', or out_type='raw'")
        return out
    if out.dim() == 3:
        return out[:, 0] if feature == 'cls' else out[:, 1:].mean(1)
    if out.dim() == 4:
        if feature == 'cls':
            raise ValueError('a feature map has no [CLS] token: use feature='
                             "'mean', or out_type='raw'")
        return out.mean((2, 3))
    raise ValueError(f'cannot pool a backbone output of shape '
                     f'{tuple(out.shape)}')


def batch_labels(data_samples) -> torch.Tensor:
    """``(B,)`` labels of a batch's data samples (``gt_label``)."""
    return torch.tensor([int(s.gt_label) for s in data_samples],
                        dtype=torch.long)


def subset_indices(num: int, size: Union[int, float, None]) -> range:
    """Evenly spaced indices of a ``num``-sample dataset: ``size`` a fraction
    in ``(0, 1]`` or a count (None or 1.0: all).

    Evenly spaced rather than the first ``size``: ImageNet's lists are sorted
    by class.
    """
    if size is None or (isinstance(size, float) and size >= 1.0):
        return range(num)
    count = int(math.ceil(size *
                          num)) if isinstance(size, float) else int(size)
    count = max(1, min(count, num))
    step = num / count
    return [int(i * step) for i in range(count)]


@torch.no_grad()
def extract_features(
    encode: Callable[[dict], torch.Tensor],
    dataset,
    batch_size: int = 64,
    num_workers: int = 0,
    indices: Optional[Sequence[int]] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Features and labels of a dataset, each rank encoding its shard.

    Args:
        encode (Callable): ``encode(batch) -> (B, C)`` features of one
            collated batch (``inputs``, ``data_samples``).
        dataset: An mmengine/mmpretrain dataset whose samples carry
            ``gt_label``.
        batch_size (int): Per rank. Defaults to 64.
        num_workers (int): Dataloader workers. Defaults to 0.
        indices (Sequence[int], optional): The samples to use (a bank subset,
            :func:`subset_indices`); all when None.

    Returns:
        tuple: ``(M, C)`` fp32 features on the device ``encode`` returns them
        on, and ``(M,)`` labels (CPU), in the order of ``indices``; the same
        on every rank.
    """
    from mmengine.dataset import default_collate
    from mmengine.dist import all_gather, get_rank, get_world_size
    from torch.utils.data import DataLoader
    order = list(range(len(dataset)) if indices is None else indices)
    if not order:
        raise ValueError('extract_features: no samples')
    world, rank = get_world_size(), get_rank()
    # DefaultSampler(shuffle=False, round_up=True)'s split: rank r takes
    # positions r, r + world, ...; the padding repeats the first positions
    per_rank = int(math.ceil(len(order) / world))
    padded = order + order[:per_rank * world - len(order)]
    mine = padded[rank::world]
    # a generator of its own: the workers' base seed is drawn from it, not
    # from torch's global RNG, so extracting features leaves the training
    # randomness (token sampling, augmentation seeds) where it was
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=mine,
        num_workers=num_workers,
        collate_fn=default_collate,
        generator=torch.Generator().manual_seed(0))
    feats, labels = [], []
    for batch in loader:
        feats.append(encode(batch).float())
        labels.append(batch_labels(batch['data_samples']))
    feats = torch.cat(feats)
    labels = torch.cat(labels).to(feats.device)
    if world == 1:
        return feats, labels.cpu()
    positions = torch.arange(
        rank, per_rank * world, world, device=feats.device)
    all_feats = all_gather(feats)
    all_labels = all_gather(labels)
    all_pos = all_gather(positions)
    out = feats.new_empty(per_rank * world, feats.shape[1])
    out_labels = labels.new_empty(per_rank * world)
    for f, lab, pos in zip(all_feats, all_labels, all_pos):
        out[pos] = f
        out_labels[pos] = lab
    n = len(order)
    return out[:n], out_labels[:n].cpu()
