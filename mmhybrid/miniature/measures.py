"""The miniature's measurements of a checkpoint, in the pipeline's own process
after the training stages: k-NN top-1 on frozen [CLS] features, attention
statistics per layer and head, distances to the teachers; and the numbers read
back from the stages' logs."""
import os.path as osp
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

# k-NN top-1: DINO's protocol, the one implementation (mmhybrid.engine.knn)
from mmhybrid.engine.knn import knn_top1  # noqa: F401
from mmhybrid.engine.knn import extract_features, pool_features
from mmhybrid.utils.scalars import last_scalar, read_scalars  # noqa: F401
from .configs import load_config, quiet_logger
from .data import DataSpec


# ---------------------------------------------------------------- results
def mean_iter_time(work_dir: str, skip: int = 1) -> Optional[float]:
    """Mean seconds per training iteration (logger windows; the first ``skip``
    dropped: start-up)."""
    t = [
        r['time'] for r in read_scalars(work_dir)
        if 'loss' in r and 'time' in r
    ]
    t = t[skip:] if len(t) > skip else t
    return sum(t) / len(t) if t else None


# ------------------------------------------------------------- evaluation
@torch.no_grad()
def cls_features(config: str,
                 options: Sequence[str],
                 checkpoint: Optional[str],
                 data: DataSpec,
                 split: str,
                 seed: int = 0,
                 batch_size: int = 128) -> Tuple[torch.Tensor, torch.Tensor]:
    """Frozen [CLS] features (after the final norm) of every image of a split.

    The model is the linear-probe config's backbone loaded as the probe loads
    it (``init_cfg`` with ``prefix='backbone.'``), or its seeded random
    initialisation when ``checkpoint`` is None; images go through the config's
    test pipeline and data preprocessor.

    Returns:
        tuple: ``(N, C)`` features and ``(N,)`` labels.
    """
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import DATASETS, MODELS
    cfg = load_config(config, options)
    if checkpoint:
        cfg.model.backbone.init_cfg.checkpoint = checkpoint
    else:
        cfg.model.backbone.init_cfg = None
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope('mmpretrain'), quiet_logger():
        model = MODELS.build(cfg.model)
        model.init_weights()
        ds_cfg = cfg.val_dataloader.dataset.copy()
        ds_cfg.data_prefix = split
        if data.ann:
            ds_cfg.ann_file = data.ann[split]
        dataset = DATASETS.build(ds_cfg)
    model.eval()

    def encode(batch):
        batch = model.data_preprocessor(batch, False)
        return pool_features(model.backbone(batch['inputs']), 'cls')

    return extract_features(encode, dataset, batch_size)


def knn_eval(config: str,
             options: Sequence[str],
             checkpoint: Optional[str],
             data: DataSpec,
             k: int = 20,
             seed: int = 0) -> float:
    """k-NN top-1 (%) of a checkpoint's frozen [CLS] features on ``data``
    (:func:`mmhybrid.engine.knn.knn_top1`: DINO's weighted votes)."""
    tr = cls_features(config, options, checkpoint, data, 'train', seed)
    va = cls_features(config, options, checkpoint, data, 'val', seed)
    return knn_top1(*tr, *va, k=k)


def attention_stats_of(config: str,
                       options: Sequence[str],
                       checkpoint: Optional[str],
                       val_folder: str,
                       num_images: int,
                       seed: int = 0) -> Dict[str, np.ndarray]:
    """Per layer and head attention distance, entropy and NMI of a checkpoint
    (the seeded random initialisation when None) on ``num_images`` val images.

    The images are the same for every checkpoint and seed (a fixed subset), so
    repeats over seeds differ by their networks only.
    """
    from mmengine.registry import DefaultScope

    from ..analysis.attention_report import compute_attention_stats
    from ..analysis.vit_loading import load_images, vit_from_config
    cfg = load_config(config, options)
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope('mmpretrain'), quiet_logger():
        vit = vit_from_config(
            cfg, 'student', checkpoint, random_init=checkpoint is None)
    images, _ = load_images(val_folder, vit.img_size, num_images, seed=0)
    return compute_attention_stats(vit, images)


def head_spread(stats: Dict[str, np.ndarray]) -> float:
    """Attention diversity in one number: the spread (std) of mean attention
    distance across the heads of a layer, averaged over layers (pixels)."""
    return float(stats['distance'].std(axis=1).mean())


def mean_std(values: Sequence[Optional[float]]) -> Tuple[float, float, int]:
    """Mean, sample std (0 for one value) and count of the non-None values."""
    v = np.array([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return float('nan'), float('nan'), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, \
        int(v.size)


@torch.no_grad()
def distill_distances(config: str, options: Sequence[str], checkpoint: str,
                      teachers: Tuple[str, str], data: DataSpec,
                      num_images: int) -> Tuple[float, float]:
    """Feature distance to Tc and relation KL to Tm of a student checkpoint on
    a fixed subset of val images: the hybrid config's two losses at weight 1,
    with no masking (all tokens).

    How close a student got to each teacher.
    """
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    from mmhybrid.utils.checkpoint import (extract_state_dict,
                                           load_checkpoint_file)
    from ..analysis.vit_loading import load_images
    cfg = load_config(config, options)
    cfg.model.teacher_feat.checkpoint = teachers[0]
    cfg.model.teacher_rel.checkpoint = teachers[1]
    with DefaultScope.overwrite_default_scope('mmpretrain'), quiet_logger():
        model = MODELS.build(cfg.model)
        model.init_weights()
    sd = extract_state_dict(load_checkpoint_file(checkpoint), checkpoint)
    sd = {k: v for k, v in sd.items() if not k.startswith('data_preprocessor')}
    model.load_state_dict(sd, strict=False)
    model.eval()
    model.mask_ratio = 0.0
    images, _ = load_images(
        osp.join(data.root, 'val'),
        cfg.model.backbone.img_size,
        num_images,
        seed=0)
    mean = torch.tensor(cfg.model.data_preprocessor.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.model.data_preprocessor.std).view(1, 3, 1, 1)
    feat = rel = 0.0
    for start in range(0, images.shape[0], 32):
        x = (images[start:start + 32].float() - mean) / std
        out = model.loss(x)
        feat += float(out['loss_feat']) * x.shape[0]
        rel += float(out['loss_rel']) * x.shape[0]
    return feat / images.shape[0], rel / images.shape[0]


# ---------------------------------------------------------------- premise
#: The premise's thresholds, fixed by issue 21 before any teacher was trained:
#: in the last ``PREMISE_LAST`` blocks Tc's per-head spread of attention
#: distance and its NMI are at most ``PREMISE_COLLAPSE`` times Tm's; Tm's first
#: block attends at most ``PREMISE_LOCAL`` times as far as uniform attention
#: does, with a head spread at least ``PREMISE_HEADS`` times the random init's.
PREMISE_LAST = 2
PREMISE_COLLAPSE = 0.5
PREMISE_LOCAL = 0.75
PREMISE_HEADS = 2.0


def per_block(stats: Dict[str, np.ndarray]) -> Dict[str, list]:
    """Per block: head-mean attention distance (px), head spread (std over
    heads of their mean distance, px) and head-mean NMI."""
    d = np.asarray(stats['distance'])
    return dict(
        distance=[float(x) for x in d.mean(axis=1)],
        spread=[float(x) for x in d.std(axis=1)],
        nmi=[float(x) for x in np.asarray(stats['nmi']).mean(axis=1)])


def premise(tc: Dict[str, np.ndarray],
            tm: Dict[str, np.ndarray],
            knn_tc: float,
            knn_tm: float,
            uniform_distance: float,
            rand: Optional[Dict[str, np.ndarray]] = None) -> dict:
    """The paper's premise on two teachers, from their attention statistics
    (:func:`attention_stats_of` on val images) and k-NN top-1.

    Collapse (Tc): in each of the last :data:`PREMISE_LAST` blocks, Tc's head
    spread and NMI are at most :data:`PREMISE_COLLAPSE` times Tm's in the same
    block, and Tc is still the better classifier (k-NN above Tm's). Locality
    (Tm): Tm's first block's head-mean distance is at most
    :data:`PREMISE_LOCAL` times ``uniform_distance``, and (with ``rand``, the
    random init's statistics) its head spread there is at least
    :data:`PREMISE_HEADS` times the random init's.

    Returns:
        dict: ``checks`` (name -> bool), ``collapse`` and ``local`` (bool),
        ``holds`` (both), the per-block numbers ``tc`` / ``tm`` and the
        figures the checks compared.
    """
    a, b = per_block(tc), per_block(tm)
    last = range(len(a['spread']) - PREMISE_LAST, len(a['spread']))
    checks = {}
    for i in last:
        checks[f'Tc block {i + 1} head spread <= {PREMISE_COLLAPSE} x Tm'] = (
            a['spread'][i] <= PREMISE_COLLAPSE * b['spread'][i])
        checks[f'Tc block {i + 1} NMI <= {PREMISE_COLLAPSE} x Tm'] = (
            a['nmi'][i] <= PREMISE_COLLAPSE * b['nmi'][i])
    checks['Tc k-NN above Tm'] = knn_tc > knn_tm
    collapse = all(checks.values())
    local = {
        f'Tm block 1 distance <= {PREMISE_LOCAL} x uniform':
        b['distance'][0] <= PREMISE_LOCAL * uniform_distance
    }
    rand_spread = None
    if rand is not None:
        rand_spread = per_block(rand)['spread'][0]
        local[f'Tm block 1 head spread >= {PREMISE_HEADS} x random init'] = (
            b['spread'][0] >= PREMISE_HEADS * rand_spread)
    checks.update(local)
    return dict(
        checks=checks,
        collapse=collapse,
        local=all(local.values()),
        holds=all(checks.values()),
        tc=a,
        tm=b,
        knn_tc=float(knn_tc),
        knn_tm=float(knn_tm),
        uniform_distance=float(uniform_distance),
        rand_spread_block1=rand_spread)
