"""The miniature's data: the built-in generated objects or a user's ImageNet-
style folder, and the ``--cfg-options`` pointing a demo config's loaders at it.

The generator itself stays :mod:`mmhybrid.datasets.shapes` (also the
downstream benchmarks' data, ``tools/data/make_shapes.py``, the tests and the
analysis tools' device check); the folder layout rule is
:mod:`mmhybrid.datasets.folder_layout` (shared with ``tools/analysis/
knn_eval.py``).
"""
from typing import List, Optional, Sequence, Tuple

from ..datasets.folder_layout import DataSpec, describe_folder
from .configs import model_options

__all__ = [
    'DataSpec', 'describe_folder', 'builtin_data', 'resolve_data',
    'data_options'
]


def builtin_data(root: str,
                 num_train: int,
                 num_val: int,
                 img_size: int,
                 seed: int = 0) -> DataSpec:
    """The built-in object task (written once; cached by its stamp)."""
    from mmhybrid.datasets import SHAPE_CLASSES, make_imagenet_style
    path = make_imagenet_style(
        root,
        num_train=num_train,
        num_val=num_val,
        size=img_size,
        seed=seed,
        task='objects')
    return DataSpec(path, len(SHAPE_CLASSES), None, builtin=True)


def resolve_data(tool: str, data_root: Optional[str],
                 num_classes: Optional[int], img_size: int, patch_size: int,
                 builtin_root: str, num_train: int,
                 num_val: int) -> Tuple[DataSpec, str]:
    """The data of a demo or study run and a line describing it.

    Bad input (sizes the patches do not tile, an unusable folder, a class count
    for the built-in data) ends the tool with one line naming it, before
    anything is written or trained.
    """
    try:
        model_options('sup', img_size, patch_size, 1)
        if data_root:
            data = describe_folder(data_root, num_classes)
        elif num_classes not in (None, 5):
            raise ValueError('--num-classes is for --data-root; the built-in '
                             'data has 5 classes')
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f'{tool}: {e}') from None
    if data_root:
        return data, f'{data.root} ({data.num_classes} classes, ' + (
            'annotation files)' if data.ann else 'class folders)')
    data = builtin_data(builtin_root, num_train, num_val, img_size)
    return data, (f'{data.root} (built-in objects: {num_train} train / '
                  f'{num_val} val images, {data.num_classes} classes)')


def data_options(
    data: DataSpec,
    workers: int = 0,
    loaders: Sequence[str] = ('train', 'val', 'test')
) -> List[str]:
    """``--cfg-options`` pointing a demo config's loaders at ``data``."""
    opts = []
    for loader in loaders:
        split = 'train' if loader == 'train' else 'val'
        key = f'{loader}_dataloader'
        opts += [
            f'{key}.dataset.data_root={data.root}',
            f'{key}.num_workers={workers}',
            f'{key}.persistent_workers={workers > 0}'
        ]
        if data.ann:
            opts.append(f'{key}.dataset.ann_file={data.ann[split]}')
    return opts
