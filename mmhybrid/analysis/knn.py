"""What ``tools/analysis/knn_eval.py`` runs: DINO's k-NN top-1 of any ViT
mmhybrid can load, on an ImageNet-style folder, on one process or many.

The protocol and its distributed feature extraction are
:mod:`mmhybrid.engine.knn` (the one implementation, shared with the training
monitor :class:`~mmhybrid.engine.hooks.KNNMonitorHook` and the miniature);
this module adds the source (a config or any checkpoint layout,
:func:`~mmhybrid.analysis.attention_tools.load_source_vit`), the data (the
folder's ``train/`` bank and ``val/`` queries through DINO's evaluation
transform: resize the short side to ``img_size * 256 / 224``, centre crop)
and the launcher.
"""
import json
import os
import os.path as osp
import time
from typing import Optional, Union

import torch

from mmhybrid.engine.knn import (FEATURES, extract_features, knn_top1,
                                 knn_votes, pool_features, subset_indices)

__all__ = [
    'FEATURES', 'extract_features', 'knn_top1', 'knn_votes', 'pool_features',
    'subset_indices', 'folder_dataset', 'knn_eval_report', 'init_launcher'
]


def folder_dataset(data, split: str, img_size, resize: Optional[int] = None):
    """The ``split`` of an ImageNet-style folder (class sub-folders, or
    ``meta/<split>.txt``) as an mmpretrain dataset with DINO's evaluation
    transform.

    Args:
        data (DataSpec): The folder's layout
            (:func:`~mmhybrid.datasets.folder_layout.describe_folder`).
        split (str): ``'train'`` or ``'val'``.
        img_size (tuple[int, int]): The crop.
        resize (int, optional): Short side before the crop. Default:
            ``round(img_size * 256 / 224)``.
    """
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import DATASETS
    h, w = img_size
    resize = resize or int(round(max(h, w) * 256 / 224))
    cfg = dict(
        type='CustomDataset',
        data_root=data.root,
        data_prefix=split,
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(
                type='ResizeEdge',
                scale=resize,
                edge='short',
                backend='pillow',
                interpolation='bicubic'),
            dict(type='CenterCrop', crop_size=(w, h)),
            dict(type='PackInputs'),
        ])
    if data.ann:
        cfg['ann_file'] = data.ann[split]
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return DATASETS.build(cfg)


def init_launcher(launcher: str) -> str:
    """Start the process group of a ``--launcher pytorch`` run (torchrun's
    environment; NCCL on GPUs, gloo on the CPU); the device this rank uses."""
    if launcher == 'none':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    if launcher != 'pytorch':
        raise SystemExit(f'knn_eval: --launcher {launcher!r}: expected none '
                         'or pytorch')
    if torch.cuda.is_available():
        from mmengine.dist import init_dist
        init_dist('pytorch', backend='nccl')
        return f'cuda:{int(os.environ.get("LOCAL_RANK", 0))}'
    torch.distributed.init_process_group('gloo')
    return 'cpu'


def knn_eval_report(source: str,
                    data_root: str,
                    component: str = 'student',
                    random_init: bool = False,
                    k: int = 20,
                    temperature: float = 0.07,
                    feature: str = 'cls',
                    bank_size: Union[int, float, None] = None,
                    val_size: Union[int, float, None] = None,
                    resize: Optional[int] = None,
                    batch_size: int = 64,
                    num_workers: int = 4,
                    launcher: str = 'none',
                    out: Optional[str] = None,
                    seed: int = 0,
                    cfg_options: Optional[dict] = None,
                    **source_args) -> dict:
    """k-NN top-1 of a ViT's frozen features on ``data_root``.

    Args:
        source (str): A config (``.py``; the student with ``checkpoint``, or a
            teacher) or a checkpoint file of any layout mmhybrid reads.
        data_root (str): ``train/`` (the bank) and ``val/`` (the queries), as
            class folders or with ``meta/{train,val}.txt``.
        component (str): Config source: ``'student'`` or a teacher's name
            (``'teacher_feat'`` / ``'teacher_rel'`` in the two-teacher form,
            a key of ``model.teachers`` otherwise; a ZooTeacher's feature is
            the [CLS] of its own forward's last tokens, at its own
            ``img_size``). Defaults to ``'student'``.
        random_init (bool): Config source: the seeded random init.
        k (int): Neighbours. Defaults to 20.
        temperature (float): Vote temperature. Defaults to 0.07.
        feature (str): ``'cls'`` or ``'mean'``. Defaults to ``'cls'``.
        bank_size (int | float, optional): A fraction or count of the train
            images (evenly spaced); None: all (the full protocol).
        val_size (int | float, optional): Likewise for the queries.
        resize (int, optional): Short side before the centre crop.
        batch_size (int): Per process. Defaults to 64.
        num_workers (int): Dataloader workers per process. Defaults to 4.
        launcher (str): ``'none'`` or ``'pytorch'`` (torchrun).
        out (str, optional): Write the result as JSON there (rank 0).
        seed (int): Random init seed. Defaults to 0.
        cfg_options (dict, optional): Config source: overrides.
        **source_args: ``checkpoint``, ``ckpt_format``, ``arch``,
            ``num_heads``, ``patch_size``, ``img_size``, ``clip_norm``,
            ``quick_gelu``: see
            :func:`~mmhybrid.analysis.attention_tools.load_source_vit`.

    Returns:
        dict: ``top1`` (%), ``num_bank``, ``num_val``, ``k``,
        ``temperature``, ``feature``, ``world_size``, ``seconds``,
        ``weights`` and ``predictions`` (the predicted label of each val
        image, in the folder's order).
    """
    from mmengine.dist import get_rank, get_world_size

    from ..datasets.folder_layout import describe_folder
    from .attention_tools import load_source_config, load_source_vit
    if feature not in FEATURES:
        raise SystemExit(f'knn_eval: --feature must be one of {FEATURES}')
    device = init_launcher(launcher)
    t0 = time.time()
    try:
        data = describe_folder(data_root)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f'knn_eval: {e}') from None
    torch.manual_seed(seed)
    cfg = (
        load_source_config(source, cfg_options)
        if source.endswith('.py') else None)
    vit = load_source_vit('knn_eval', source, cfg, component, random_init,
                          device, **source_args)
    train = folder_dataset(data, 'train', vit.img_size, resize)
    val = folder_dataset(data, 'val', vit.img_size, resize)

    def encode(batch):
        x = batch['inputs'].flip(1)  # LoadImageFromFile reads BGR
        return vit.features(x, feature)

    with torch.no_grad():
        bank, bank_labels = extract_features(
            encode, train, batch_size, num_workers,
            list(subset_indices(len(train), bank_size)))
        query, query_labels = extract_features(
            encode, val, batch_size, num_workers,
            list(subset_indices(len(val), val_size)))
    top1, pred = knn_top1(
        bank,
        bank_labels,
        query,
        query_labels,
        k,
        temperature,
        return_predictions=True)
    result = dict(
        top1=top1,
        num_bank=int(bank_labels.numel()),
        num_val=int(query_labels.numel()),
        k=k,
        temperature=temperature,
        feature=feature,
        world_size=get_world_size(),
        seconds=round(time.time() - t0, 2),
        weights=vit.source,
        predictions=pred.tolist())
    if get_rank() == 0:
        print(f'k-NN top-1 {top1:.2f}% (k={k}, T={temperature}, {feature} '
              f"feature): {result['num_val']} val images, bank of "
              f"{result['num_bank']} train images from {data.root}; "
              f"{vit.source}; {result['world_size']} process(es), "
              f"{result['seconds']:.1f}s")
        if out:
            os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
            with open(out, 'w') as f:
                json.dump(result, f, indent=1)
    return result
