"""Stanford Cars from its official ``.mat`` annotations, checked."""
import os.path as osp
from typing import List

from mmpretrain.datasets import StanfordCars
from mmpretrain.registry import DATASETS

from .errors import DatasetFileError, one_line

#: the two official layouts (``mmpretrain.datasets.StanfordCars``)
LAYOUTS = ('cars_annos.mat + car_ims/',
           'devkit/cars_{train,test}_annos*.mat + cars_{train,test}/')


@DATASETS.register_module()
class CheckedStanfordCars(StanfordCars):
    """mmpretrain's :class:`~mmpretrain.datasets.StanfordCars` (same arguments,
    layouts, classes and samples) that reports a missing, unreadable or
    malformed annotation file as one :class:`DatasetFileError` line naming it,
    and checks that every label is one of the 196 classes and every image file
    exists."""

    def __init__(self, data_root: str, split: str = 'train', **kwargs):
        if split == 'test':
            devkit = osp.join('devkit', 'cars_test_annos_withlabels.mat')
        else:
            devkit = osp.join('devkit', 'cars_train_annos.mat')
        if not osp.isfile(osp.join(data_root, 'cars_annos.mat')) and \
                not osp.isfile(osp.join(data_root, devkit)):
            raise DatasetFileError(
                f'{osp.join(data_root, devkit)}: not found (nor '
                f"{osp.join(data_root, 'cars_annos.mat')}); expected one of "
                f'the official layouts under data_root: {LAYOUTS[0]} or '
                f'{LAYOUTS[1]} (docs/downstream.md)')
        super().__init__(data_root=data_root, split=split, **kwargs)

    def load_data_list(self) -> List[dict]:
        """mmpretrain's reading, then the checks (see the class)."""
        expected = ("expected a MATLAB struct array 'annotations' with "
                    "'fname' (or 'relative_im_path') and 'class' in "
                    '1..196, as the devkit ships it')
        try:
            data_list = super().load_data_list()
        except Exception as e:  # noqa: BLE001  (mat4py's many errors)
            raise DatasetFileError(f'{self.ann_file}: cannot be read '
                                   f'({one_line(e)}); {expected}') from None
        num_classes = len(self.CLASSES)
        for info in data_list:
            label = info['gt_label']
            if not isinstance(label, int) or not 0 <= label < num_classes:
                raise DatasetFileError(
                    f'{self.ann_file}: class {label + 1!r} of '
                    f"{info['img_path']}; {expected}")
        missing = [
            d['img_path'] for d in data_list if not osp.isfile(d['img_path'])
        ]
        if missing:
            raise DatasetFileError(
                f'{self.ann_file}: {len(missing)} of {len(data_list)} images '
                f'not found, e.g. {missing[0]}; expected the images of the '
                'same official archive')
        return data_list
