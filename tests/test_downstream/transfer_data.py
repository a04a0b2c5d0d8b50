"""Tiny transfer-classification datasets in their official on-disk formats.

* CIFAR-100: ``cifar-100-python/{train,test,meta}``, python pickles as in
  ``cifar-100-python.tar.gz`` (``data`` uint8 ``(N, 3072)`` channel-first
  rows, ``fine_labels``, ``coarse_labels``, ``filenames``, ``batch_label``;
  ``meta``: ``fine_label_names``, ``coarse_label_names``);
* Stanford Cars, devkit layout: ``devkit/cars_train_annos.mat``,
  ``devkit/cars_test_annos_withlabels.mat`` (MATLAB struct arrays
  ``annotations`` with ``bbox_x1 .. bbox_y2``, ``class`` (1-based), ``fname``),
  ``devkit/cars_meta.mat`` (``class_names``), images in ``cars_train/`` and
  ``cars_test/``;
* iNaturalist 2019: ``train2019.json`` / ``val2019.json`` (COCO-style
  ``images`` / ``annotations`` / ``categories``) and the images under
  ``train_val2019/<iconic group>/<category id>/<hash>.jpg``.
"""
import hashlib
import json
import os
import os.path as osp
import pickle
from typing import Sequence

import numpy as np
from PIL import Image


def _image(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """An RGB image whose mean colour depends on the label, plus noise."""
    base = np.array([(label * 37) % 256, (label * 91) % 256,
                     (label * 53) % 256], np.float32)
    noise = rng.normal(0, 30, (size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def make_cifar100(root: str,
                  per_class_train: int = 2,
                  per_class_test: int = 1,
                  seed: int = 0) -> str:
    """``root/cifar-100-python/{train,test,meta}``; returns ``root``."""
    from mmpretrain.datasets.categories import CIFAR100_CATEGORIES
    rng = np.random.default_rng(seed)
    folder = osp.join(root, 'cifar-100-python')
    os.makedirs(folder, exist_ok=True)
    for split, per_class in (('train', per_class_train), ('test',
                                                          per_class_test)):
        labels = [c for c in range(100) for _ in range(per_class)]
        data = np.stack([
            _image(rng, c, 32).transpose(2, 0, 1).reshape(-1) for c in labels
        ])
        entry = {
            'filenames': [f'img_{i:05d}.png' for i in range(len(labels))],
            'batch_label': f'{split}ing batch 1 of 1',
            'fine_labels': labels,
            'coarse_labels': [c // 5 for c in labels],
            'data': data,
        }
        with open(osp.join(folder, split), 'wb') as f:
            pickle.dump(entry, f, protocol=2)
    with open(osp.join(folder, 'meta'), 'wb') as f:
        pickle.dump(
            {
                'fine_label_names': list(CIFAR100_CATEGORIES),
                'coarse_label_names': [f'super_{i}' for i in range(20)]
            },
            f,
            protocol=2)
    return root


def _cars_annotations(fnames: Sequence[str], classes: Sequence[int],
                      size: int) -> np.ndarray:
    fields = ['bbox_x1', 'bbox_y1', 'bbox_x2', 'bbox_y2', 'class', 'fname']
    ann = np.zeros((1, len(fnames)), dtype=[(k, 'O') for k in fields])
    for i, (name, cls) in enumerate(zip(fnames, classes)):
        box = [np.array([[v]], np.uint16) for v in (1, 1, size - 2, size - 2)]
        ann[0, i] = (*box, np.array([[cls]], np.uint8), np.array([name]))
    return ann


def make_stanford_cars(root: str,
                       classes: Sequence[int] = tuple(range(1, 9)),
                       per_class_train: int = 2,
                       per_class_test: int = 1,
                       size: int = 48,
                       seed: int = 0) -> str:
    """The devkit layout under ``root`` (classes 1-based, as the devkit's);
    returns ``root``."""
    from mmpretrain.datasets.categories import STANFORDCARS_CATEGORIES
    from scipy.io import savemat
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(root, 'devkit'), exist_ok=True)
    for split, per_class, mat in (('train', per_class_train,
                                   'cars_train_annos.mat'),
                                  ('test', per_class_test,
                                   'cars_test_annos_withlabels.mat')):
        folder = osp.join(root, f'cars_{split}')
        os.makedirs(folder, exist_ok=True)
        labels = [c for c in classes for _ in range(per_class)]
        names = [f'{i + 1:05d}.jpg' for i in range(len(labels))]
        for name, c in zip(names, labels):
            Image.fromarray(_image(rng, c, size)).save(osp.join(folder, name))
        savemat(
            osp.join(root, 'devkit', mat),
            {'annotations': _cars_annotations(names, labels, size)})
    names = np.empty((1, len(STANFORDCARS_CATEGORIES)), dtype=object)
    names[0, :] = list(STANFORDCARS_CATEGORIES)
    savemat(osp.join(root, 'devkit', 'cars_meta.mat'), {'class_names': names})
    return root


#: (id, iconic group, name) of the generated iNaturalist 2019 categories
INAT_CATEGORIES = ((0, 'Plants', 'Abies concolor'), (1, 'Insects',
                                                     'Danaus plexippus'),
                   (2, 'Birds', 'Cyanocitta cristata'), (3, 'Fungi',
                                                         'Amanita muscaria'))


def make_inat2019(root: str,
                  per_class_train: int = 3,
                  per_class_val: int = 2,
                  size: int = 48,
                  seed: int = 0) -> str:
    """``train2019.json``, ``val2019.json`` and ``train_val2019/`` under
    ``root``; returns ``root``."""
    rng = np.random.default_rng(seed)
    categories = [
        dict(
            id=cid,
            name=name,
            kingdom='Plantae' if group == 'Plants' else 'Animalia',
            phylum='-',
            **{'class': '-'},
            order='-',
            family='-',
            genus=name.split()[0]) for cid, group, name in INAT_CATEGORIES
    ]
    image_id = 0
    for split, per_class in (('train', per_class_train), ('val',
                                                          per_class_val)):
        images, annotations = [], []
        for cid, group, _ in INAT_CATEGORIES:
            folder = osp.join('train_val2019', group, str(cid))
            os.makedirs(osp.join(root, folder), exist_ok=True)
            for _ in range(per_class):
                digest = hashlib.md5(f'{split}{image_id}'.encode()).hexdigest()
                file_name = f'{folder}/{digest}.jpg'
                Image.fromarray(_image(rng, cid * 20,
                                       size)).save(osp.join(root, file_name))
                images.append(
                    dict(
                        id=image_id,
                        file_name=file_name,
                        width=size,
                        height=size,
                        license=1,
                        rights_holder='generated'))
                annotations.append(
                    dict(id=image_id, image_id=image_id, category_id=cid))
                image_id += 1
        content = dict(
            info=dict(year=2019, version='1.0', description='generated'),
            images=images,
            annotations=annotations,
            categories=categories,
            licenses=[dict(id=1, name='generated', url='')])
        with open(osp.join(root, f'{split}2019.json'), 'w') as f:
            json.dump(content, f)
    return root
