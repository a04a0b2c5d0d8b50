"""The miniature's configs: where they are and the ``--cfg-options`` that size
them.

The configs are read from the packaged copy, ``mmhybrid/.mim/configs`` (what
``mim`` reads too): setup.py puts copies there in a built distribution and
links to the checkout's ``configs/`` and ``tools/`` in an editable install
(``pip install -e .``, ``make install``).
"""
import contextlib
import os.path as osp
from typing import List, Sequence

#: The packaged ``configs/`` and ``tools/`` (``tools/train.py`` runs from
#: here).
ROOT = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), '.mim')
_CFG = osp.join(ROOT, 'configs', 'demo')
#: The demo configs each stage trains, by model kind.
CONFIGS = dict(
    sup=osp.join(_CFG, 'vit-tiny-p8_sup_1xb32-300i_shapes.py'),
    moco=osp.join(_CFG, 'mocov3_vit-tiny-p8_1xb32-600i_shapes.py'),
    mae=osp.join(_CFG, 'mae_vit-tiny-p8_1xb32-300i_shapes.py'),
    hybrid=osp.join(_CFG, 'hybrid-distill_vit-tiny-p8_1xb32-300i_shapes.py'),
    probe=osp.join(_CFG, 'linear-probe_vit-tiny-p8_1xb64-200i_shapes.py'),
    finetune=osp.join(_CFG, 'finetune_vit-tiny-p8_1xb32-150i_shapes.py'))


def check_configs(tool: str) -> None:
    """End ``tool`` with one line when the packaged configs are missing (a
    checkout that was never installed)."""
    if not osp.isdir(_CFG):
        raise SystemExit(
            f'{tool}: {_CFG}: no such folder; the miniature reads the configs '
            'mmhybrid installs into mmhybrid/.mim (make install, or pip '
            'install -e .)')


# Where each demo config keeps image size, patch size and class count.
_MODEL_KEYS = {
    'sup': (['model.backbone'],
            ['model.head.num_classes', 'model.data_preprocessor.num_classes']),
    'probe':
    (['model.backbone'],
     ['model.head.num_classes', 'model.data_preprocessor.num_classes']),
    'finetune':
    (['model.backbone'],
     ['model.head.num_classes', 'model.data_preprocessor.num_classes']),
    'mae': (['model.backbone', 'model.neck', 'model.head'], []),
    'moco': (['model.backbone'], []),
    'hybrid': ([
        'model.backbone', 'model.teacher_feat.backbone',
        'model.teacher_rel.backbone'
    ], []),
}


def model_options(kind: str, img_size: int, patch_size: int,
                  num_classes: int) -> List[str]:
    """``--cfg-options`` giving a demo config of ``kind`` (``'sup'``,
    ``'probe'``, ``'finetune'``, ``'mae'``, ``'hybrid'``) another image size,
    patch size or class count; the pipelines resize to ``img_size``
    (``'moco'``: both views crop to it)."""
    if img_size % patch_size:
        raise ValueError(f'--img-size {img_size} is not a multiple of '
                         f'--patch-size {patch_size}')
    sized, classes = _MODEL_KEYS[kind]
    opts = []
    for key in sized:
        if key == 'model.head':
            opts.append(f'{key}.patch_size={patch_size}')
            continue
        if key != 'model.neck':
            opts.append(f'{key}.img_size={img_size}')
        opts.append(f'{key}.patch_size={patch_size}')
    if kind == 'mae':
        opts.append(f'model.neck.num_patches={(img_size // patch_size) ** 2}')
    opts += [f'{k}={num_classes}' for k in classes]
    if kind == 'moco':  # both views' crops (MultiView after the resize)
        opts += [
            f'train_dataloader.dataset.pipeline.3.transforms.{v}.0.scale='
            f'{img_size}' for v in (0, 1)
        ]
    for loader in ('train', 'val', 'test'):
        if kind in ('mae', 'hybrid', 'moco') and loader != 'train':
            continue
        opts += [
            f'{loader}_dataloader.dataset.pipeline.1.scale={img_size}',
            f'{loader}_dataloader.dataset.pipeline.2.crop_size={img_size}'
        ]
    return opts


def schedule_options(iters: int, warmup: bool = True) -> List[str]:
    """``--cfg-options`` fitting a demo config's schedule to ``iters``: a
    linear warm-up over the first tenth then cosine (``warmup``), or the
    probe's single cosine."""
    if not warmup:
        return [f'param_scheduler.0.end={iters}']
    w = max(1, iters // 10)
    return [
        f'param_scheduler.0.end={w}', f'param_scheduler.1.begin={w}',
        f'param_scheduler.1.end={iters}'
    ]


def load_config(config: str, options: Sequence[str]):
    """A config with ``KEY=VALUE`` options merged as ``--cfg-options``
    would."""
    from mmengine.config import Config, DictAction
    cfg = Config.fromfile(config)
    cfg.merge_from_dict({
        k: DictAction._parse_iterable(v)
        for k, v in (kv.split('=', 1) for kv in options)
    })
    return cfg


@contextlib.contextmanager
def quiet_logger(level: str = 'WARNING'):
    """mmengine's current logger at ``level`` for a while: building a model
    logs one line per initialised tensor, hundreds per evaluation."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    old = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old)
