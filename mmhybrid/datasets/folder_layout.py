"""The layout of an ImageNet-style folder: class sub-folders, or mmpretrain's
annotation files.

What ``tools/analysis/knn_eval.py`` (:mod:`mmhybrid.analysis.knn`) and the
miniature's ``--data-root`` (:mod:`mmhybrid.miniature.data`) accept.
"""
import os
import os.path as osp
from typing import Dict, List, NamedTuple, Optional


class DataSpec(NamedTuple):
    """An ImageNet-style dataset as the demo configs read it.

    ``ann`` is ``{'train': 'meta/train.txt', 'val': ...}`` when the labels come
    from mmpretrain annotation files, else None (class-per-folder).
    """
    root: str
    num_classes: int
    ann: Optional[Dict[str, str]]
    builtin: bool


def _folder_classes(split_dir: str) -> List[str]:
    return sorted(
        d for d in os.listdir(split_dir)
        if osp.isdir(osp.join(split_dir, d)) and not d.startswith('.'))


def _ann_num_classes(path: str) -> int:
    labels = set()
    with open(path) as f:
        for i, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2 or not parts[-1].lstrip('-').isdigit():
                raise ValueError(
                    f'{path}:{i}: expected "<image path> <integer '
                    f'label>", got {line.strip()!r}')
            labels.add(int(parts[-1]))
    if not labels or min(labels) < 0:
        raise ValueError(f'{path}: expected labels 0..N-1, got '
                         f'{sorted(labels)[:5] or "none"}')
    return max(labels) + 1


def describe_folder(root: str, num_classes: Optional[int] = None) -> DataSpec:
    """Read the layout of a user's ImageNet-style folder.

    Accepted: ``root/meta/{train,val}.txt`` (mmpretrain's annotation files,
    image paths relative to ``root/train`` and ``root/val``), or one sub-folder
    per class in ``root/train`` and ``root/val``.

    Args:
        root (str): The dataset folder.
        num_classes (int, optional): Override the number inferred from the
            class folders or the largest annotated label.

    Returns:
        DataSpec: The layout.
    """
    root = osp.abspath(root)
    for split in ('train', 'val'):
        if not osp.isdir(osp.join(root, split)):
            raise FileNotFoundError(
                f'{osp.join(root, split)}: no such folder; --data-root '
                'expects '
                f'train/ and val/ (class sub-folders, or meta/train.txt and '
                f'meta/val.txt with "<path> <label>" lines)')
    anns = {s: osp.join(root, 'meta', f'{s}.txt') for s in ('train', 'val')}
    if all(osp.isfile(p) for p in anns.values()):
        found = max(_ann_num_classes(p) for p in anns.values())
        ann = {s: osp.relpath(p, root) for s, p in anns.items()}
    else:
        train = _folder_classes(osp.join(root, 'train'))
        val = _folder_classes(osp.join(root, 'val'))
        if not train or train != val:
            raise ValueError(
                f'{root}: train/ and val/ must hold the same class folders '
                f'(train: {train[:5]}, val: {val[:5]}), or give '
                'meta/train.txt and meta/val.txt')
        found, ann = len(train), None
    if num_classes is not None and num_classes < found:
        raise ValueError(f'--num-classes {num_classes} is below the {found} '
                         f'classes found in {root}')
    return DataSpec(root, num_classes or found, ann, builtin=False)
