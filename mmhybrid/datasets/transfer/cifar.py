"""CIFAR-100 from its official python batches, checked by structure."""
import codecs
import os.path as osp
import pickle
from typing import List

import numpy as np
from mmpretrain.datasets import CIFAR100
from mmpretrain.registry import DATASETS

from .errors import DatasetFileError, one_line

_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy's array rebuild function

#: the only globals a CIFAR python batch names (numpy 1 / 2 spellings; bytes
#: written under protocol 2 come back through ``_codecs.encode``)
_ALLOWED = {
    ('numpy.core.multiarray', '_reconstruct'): _RECONSTRUCT,
    ('numpy._core.multiarray', '_reconstruct'): _RECONSTRUCT,
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): np.dtype,
    ('_codecs', 'encode'): codecs.encode,
}


class _BatchUnpickler(pickle.Unpickler):
    """Reads numpy arrays, lists, dicts and strings; refuses any other global
    (a pickle is code: a tampered batch file must not run)."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refuses global '{module}.{name}'") from None


def read_cifar_batch(path: str,
                     label_key: str = 'fine_labels',
                     num_classes: int = 100) -> dict:
    """One file of ``cifar-100-python/`` (``train``, ``test``), checked.

    Args:
        path (str): The file.
        label_key (str): Key of the labels. Defaults to ``'fine_labels'``.
        num_classes (int): Labels must be below it. Defaults to 100.

    Returns:
        dict: The batch, ``data`` a ``(N, 3072)`` uint8 array.

    Raises:
        DatasetFileError: Naming the file: missing, not a pickle of the
            official layout, or with labels out of range.
    """
    expected = ('expected the python batch of cifar-100-python.tar.gz '
                '(https://www.cs.toronto.edu/~kriz/cifar.html): a dict with '
                f"'data' (N x 3072 uint8) and '{label_key}' (N ints in "
                f'[0, {num_classes}))')
    if not osp.isfile(path):
        raise DatasetFileError(f'{path}: not found; {expected}')
    try:
        with open(path, 'rb') as f:
            entry = _BatchUnpickler(f, encoding='latin1').load()
    except Exception as e:  # noqa: BLE001  (any unreadable file: one line)
        raise DatasetFileError(
            f'{path}: cannot be read ({one_line(e)}); {expected}') from None
    data = entry.get('data') if isinstance(entry, dict) else None
    labels = entry.get(label_key) if isinstance(entry, dict) else None
    problem = None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 \
            or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        problem = f"'data' is {getattr(data, 'shape', type(data).__name__)}"
    elif not isinstance(labels, list) or len(labels) != len(data):
        problem = f"'{label_key}' does not give one label per row"
    elif labels and not (0 <= min(labels) and max(labels) < num_classes):
        problem = f"'{label_key}' spans [{min(labels)}, {max(labels)}]"
    if problem:
        raise DatasetFileError(f'{path}: {problem}; {expected}')
    return entry


@DATASETS.register_module()
class CheckedCIFAR100(CIFAR100):
    """mmpretrain's :class:`~mmpretrain.datasets.CIFAR100` (same arguments,
    layout, classes and samples: ``data_root`` holds ``cifar-100-python/``)
    that checks the files by their structure, not by the official md5 sums,
    reads them with a pickle reader that admits only numpy arrays, and reports
    a missing or corrupt file as one :class:`DatasetFileError` line naming it.

    It never downloads: extract ``cifar-100-python.tar.gz`` into ``data_root``
    (``docs/downstream.md``).
    """

    def __init__(self, data_root: str = '', split: str = 'train', **kwargs):
        if kwargs.pop('download', False):
            raise DatasetFileError(
                f'{type(self).__name__}(download=True): this dataset never '
                'downloads; expected cifar-100-python/ extracted in '
                f'data_root={data_root!r}')
        super().__init__(
            data_root=data_root, split=split, download=False, **kwargs)

    def load_data_list(self) -> List[dict]:
        """Read the split's batch files (see the class)."""
        folder = osp.join(self.data_prefix['root'], self.base_folder)
        files = self.train_list if self.split == 'train' else self.test_list
        imgs, labels = [], []
        for name, _ in files:
            entry = read_cifar_batch(osp.join(folder, name))
            imgs.append(entry['data'])
            labels.extend(entry['fine_labels'])
        if self.CLASSES is None:
            self._metainfo.setdefault('classes', self._read_meta(folder))
        imgs = np.vstack(imgs).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))
        return [
            dict(img=img, gt_label=int(label))
            for img, label in zip(imgs, labels)
        ]

    def _read_meta(self, folder: str) -> List[str]:
        path = osp.join(folder, self.meta['filename'])
        key = self.meta['key']
        try:
            with open(path, 'rb') as f:
                names = _BatchUnpickler(f, encoding='latin1').load()[key]
        except Exception as e:  # noqa: BLE001
            raise DatasetFileError(
                f'{path}: cannot be read ({one_line(e)}); expected the meta '
                f"file of cifar-100-python.tar.gz with '{key}'") from None
        return list(names)
