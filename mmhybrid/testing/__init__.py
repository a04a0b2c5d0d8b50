"""Tiny model configs shared by the tests, the demo and the benchmarks."""
import copy
from dataclasses import dataclass
from typing import List, Optional, Sequence

from mmhybrid.utils import constants

TINY_ARCH = dict(
    embed_dims=48, num_layers=3, num_heads=3, feedforward_channels=96)
# lists, as configs write them (mmhybrid.utils.constants holds the values)
IMAGENET_MEAN, IMAGENET_STD, CLIP_MEAN, CLIP_STD = (
    list(v) for v in (constants.IMAGENET_MEAN, constants.IMAGENET_STD,
                      constants.CLIP_MEAN, constants.CLIP_STD))


def tiny_vit_cfg(arch: Optional[dict] = None,
                 img_size: int = 32,
                 patch_size: int = 8,
                 **kwargs) -> dict:
    """A ``HybridViT`` config small enough for unit tests."""
    cfg = dict(
        type='HybridViT',
        arch=copy.deepcopy(arch or TINY_ARCH),
        img_size=img_size,
        patch_size=patch_size,
        out_type='raw')
    cfg.update(kwargs)
    return cfg


def tiny_hybrid_cfg(teacher_feat_ckpt: Optional[str] = None,
                    teacher_rel_ckpt: Optional[str] = None,
                    student_arch: Optional[dict] = None,
                    feat_arch: Optional[dict] = None,
                    rel_arch: Optional[dict] = None,
                    img_size: int = 32,
                    patch_size: int = 8,
                    clip_like_feat: bool = True,
                    **kwargs) -> dict:
    """A complete tiny ``HybridDistill`` config.

    The feature teacher is CLIP-like (pre-norm, QuickGELU, CLIP mean/std)
    unless ``clip_like_feat`` is False; the relation teacher is MAE-like.
    """
    student_arch = student_arch or TINY_ARCH
    feat_arch = feat_arch or TINY_ARCH
    rel_arch = rel_arch or TINY_ARCH
    feat_backbone = tiny_vit_cfg(feat_arch, img_size, patch_size)
    feat_extra = {}
    if clip_like_feat:
        feat_backbone.update(
            pre_norm=True,
            norm_cfg=dict(type='LN', eps=1e-5),
            layer_cfgs=dict(act_cfg=dict(type='mmpretrain.QuickGELU')))
        feat_extra = dict(mean=CLIP_MEAN, std=CLIP_STD)
    cfg = dict(
        type='HybridDistill',
        data_preprocessor=dict(
            type='SelfSupDataPreprocessor',
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            to_rgb=True),
        backbone=tiny_vit_cfg(student_arch, img_size, patch_size),
        neck=dict(
            type='DistillProjectionNeck',
            in_channels=student_arch['embed_dims'],
            out_channels=feat_arch['embed_dims']),
        teacher_feat=dict(
            type='FrozenTeacher',
            backbone=feat_backbone,
            checkpoint=teacher_feat_ckpt,
            **feat_extra),
        teacher_rel=dict(
            type='FrozenTeacher',
            backbone=tiny_vit_cfg(rel_arch, img_size, patch_size),
            checkpoint=teacher_rel_ckpt),
    )
    cfg.update(kwargs)
    return cfg


#: the demo's tiny ViT (teachers and student of the short test runs)
DEMO_ARCH = dict(
    embed_dims=96, num_layers=4, num_heads=3, feedforward_channels=384)


def _save_demo_vit(path: str, seed: int, head: bool, **vit_kwargs) -> str:
    """A tiny mmpretrain ViT of :data:`DEMO_ARCH` saved as mmpretrain saves a
    model: ``{'state_dict': {'backbone.*'[, 'head.*']}, 'meta': ...}``."""
    import torch
    from mmpretrain.models import VisionTransformer
    torch.manual_seed(seed)
    vit = VisionTransformer(arch=copy.deepcopy(DEMO_ARCH), **vit_kwargs)
    vit.init_weights()
    sd = {f'backbone.{k}': v for k, v in vit.state_dict().items()}
    if head:
        sd['head.layers.head.weight'] = torch.randn(5, 96)
        sd['head.layers.head.bias'] = torch.zeros(5)
    torch.save(dict(state_dict=sd, meta=dict(iter=1)), path)
    return str(path)


def save_demo_teacher(path: str, seed: int, pre_norm: bool = False) -> str:
    """Save a tiny mmpretrain ViT classifier as mmpretrain saves one.

    ``{'state_dict': {'backbone.*', 'head.*'}, 'meta': ...}``, the
    architecture :data:`DEMO_ARCH` at 64 px with 8-px patches.

    Args:
        path (str): Where to write it.
        seed (int): Seed of its random weights.
        pre_norm (bool): CLIP-style norm before the blocks. Defaults to False.

    Returns:
        str: ``path``.
    """
    return _save_demo_vit(
        path, seed, True, img_size=64, patch_size=8, pre_norm=pre_norm)


def save_zoo_demo_teacher(path: str, seed: int) -> str:
    """Save a tiny DINOv2-style mmpretrain ViT (layer scale, 7-px patches at
    56 px, :data:`DEMO_ARCH`) as mmpretrain saves a headless model:
    ``{'state_dict': {'backbone.*'}, 'meta': ...}``, the three-teacher demo
    config's ZooTeacher.

    Args:
        path (str): Where to write it.
        seed (int): Seed of its random weights.

    Returns:
        str: ``path``.
    """
    return _save_demo_vit(
        path,
        seed,
        False,
        img_size=56,
        patch_size=7,
        layer_scale_init_value=1e-5)


#: the demo HybridDistill config the short test runs train
DEMO_CONFIG = 'configs/demo/hybrid-distill_vit-tiny-p8_1xb32-300i_shapes.py'


@dataclass
class DemoRun:
    """A short CPU run of :data:`DEMO_CONFIG` on generated data.

    The generated data and the tiny teachers replace the demo's, and the
    schedule is shortened to ``iters`` (linear warm-up, then cosine).

    Args:
        data_root (str): an ImageNet-style folder.
        teachers (Sequence[str]): feature and relation teacher checkpoints.
        iters (int): training iterations.
        warmup (int, optional): warm-up iterations. Defaults to ``iters // 4``
            (at least 1).
        batch_size (int): Defaults to 8.
        num_workers (int): dataloader workers. Defaults to 1; with 0 the
            workers are not persistent.
        checkpoint_interval (int, optional): Defaults to the config's.
        log_every_iter (bool): log every iteration. Defaults to True.
        extra (Sequence[str]): more ``key=value`` options, last.
    """
    data_root: str
    teachers: Sequence[str]
    iters: int
    warmup: Optional[int] = None
    batch_size: int = 8
    num_workers: int = 1
    checkpoint_interval: Optional[int] = None
    log_every_iter: bool = True
    extra: Sequence[str] = ()

    def options(self) -> List[str]:
        """``['--cfg-options', 'key=value', ...]`` of this run."""
        tc, tm = self.teachers
        iters = self.iters
        warm = max(iters // 4, 1) if self.warmup is None else self.warmup
        opts = [
            f'train_dataloader.dataset.data_root={self.data_root}',
            f'model.teacher_feat.checkpoint={tc}',
            f'model.teacher_rel.checkpoint={tm}',
            f'train_cfg.max_iters={iters}', f'param_scheduler.0.end={warm}',
            f'param_scheduler.1.begin={warm}',
            f'param_scheduler.1.end={iters}',
            f'train_dataloader.batch_size={self.batch_size}',
            f'train_dataloader.num_workers={self.num_workers}'
        ]
        if self.num_workers == 0:
            opts.append('train_dataloader.persistent_workers=False')
        if self.log_every_iter:
            opts.append('default_hooks.logger.interval=1')
        if self.checkpoint_interval is not None:
            opts.append('default_hooks.checkpoint.interval='
                        f'{self.checkpoint_interval}')
        return ['--cfg-options', *opts, *self.extra]
