"""iNaturalist 2019 from its official JSON annotations."""
import json
import os.path as osp
from typing import List

from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS

from .errors import DatasetFileError, one_line


@DATASETS.register_module()
class INaturalist2019(BaseDataset):
    """The iNaturalist 2019 (FGVC6) classification data, read from the official
    files as they come out of the archives::

        data_root/
        ├── train2019.json
        ├── val2019.json
        └── train_val2019/<iconic group>/<category id>/<image>.jpg

    The JSON files are COCO-style: ``images`` (``id``, ``file_name`` relative
    to ``data_root``), ``annotations`` (``image_id``, ``category_id``, one per
    image) and ``categories`` (``id``, ``name``, taxonomy). Labels are the
    categories in ``id`` order (the official ids 0..1009 are the labels);
    class names are the ``name`` fields. ``val2019.json`` (3 images per class)
    is the evaluation split of iBOT's transfer protocol; ``test2019.json``
    has no labels.

    A missing or malformed file is one :class:`DatasetFileError` line naming
    it and the first offending entry.

    Args:
        data_root (str): The folder above.
        split (str): ``'train'`` or ``'val'``. Defaults to ``'train'``.
        ann_file (str): Defaults to ``'<split>2019.json'``.
        **kwargs: :class:`~mmpretrain.datasets.BaseDataset`'s (``pipeline``,
            ``test_mode``, ...).
    """

    SPLITS = ('train', 'val')

    def __init__(self,
                 data_root: str,
                 split: str = 'train',
                 ann_file: str = '',
                 **kwargs) -> None:
        if split not in self.SPLITS:
            raise DatasetFileError(f'INaturalist2019 split={split!r}: '
                                   f'expected one of {self.SPLITS}')
        self.split = split
        kwargs.setdefault('test_mode', split != 'train')
        super().__init__(
            ann_file=ann_file or f'{split}2019.json',
            data_root=data_root,
            **kwargs)

    def _read(self) -> dict:
        path = self.ann_file
        expected = ("expected iNaturalist 2019's official "
                    f'{osp.basename(path)}: JSON with images, annotations '
                    'and categories')
        if not osp.isfile(path):
            raise DatasetFileError(f'{path}: not found; {expected}')
        try:
            with open(path, encoding='utf-8') as f:
                content = json.load(f)
        except Exception as e:  # noqa: BLE001  (any unreadable file)
            raise DatasetFileError(
                f'{path}: cannot be read ({one_line(e)}); {expected}'
            ) from None
        lacking = [
            k for k in ('images', 'annotations', 'categories')
            if not isinstance(content, dict)
            or not isinstance(content.get(k), list)
        ]
        if lacking:
            raise DatasetFileError(f'{path}: no list {lacking}; {expected}')
        return content

    def load_data_list(self) -> List[dict]:
        """Images with their one label each (see the class)."""
        path = self.ann_file
        content = self._read()
        try:
            categories = sorted(content['categories'], key=lambda c: c['id'])
            label_of = {c['id']: i for i, c in enumerate(categories)}
            names = [str(c['name']) for c in categories]
            files = {im['id']: im['file_name'] for im in content['images']}
            category_of = {}
            for ann in content['annotations']:
                image_id = ann['image_id']
                if image_id in category_of or image_id not in files:
                    raise DatasetFileError(
                        f'{path}: annotation {ann!r} names an image that is '
                        'not in images or already has a label')
                if ann['category_id'] not in label_of:
                    raise DatasetFileError(
                        f'{path}: annotation {ann!r} names an unknown '
                        'category')
                category_of[image_id] = ann['category_id']
        except (KeyError, TypeError) as e:
            raise DatasetFileError(
                f'{path}: an entry lacks {one_line(e)}; expected images with '
                "'id' and 'file_name', annotations with 'image_id' and "
                "'category_id', categories with 'id' and 'name'") from None
        unlabelled = [i for i in files if i not in category_of]
        if unlabelled:
            raise DatasetFileError(
                f'{path}: {len(unlabelled)} of {len(files)} images have no '
                f'annotation (e.g. id {unlabelled[0]}); expected one label '
                'per image (test2019.json has none: evaluate on val2019.json)')
        if self._metainfo.get('classes') is None:
            self._metainfo['classes'] = tuple(names)
        return [
            dict(
                img_path=osp.join(self.data_root, files[i]),
                gt_label=label_of[category_of[i]]) for i in files
        ]
