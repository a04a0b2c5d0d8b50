"""The generated "shapes" dataset and its three on-disk layouts."""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import mmhybrid  # noqa: F401  (stack fixes before mmdet / mmseg are imported)
from mmhybrid.datasets import (SHAPE_CLASSES, make_ade20k_style, make_all,
                               make_coco_style, make_imagenet_style,
                               render_sample, shapes)

NUM_CLASSES = len(SHAPE_CLASSES)


def _tight_box(mask):
    ys, xs = np.nonzero(mask)
    return [
        xs.min(),
        ys.min(),
        xs.max() - xs.min() + 1,
        ys.max() - ys.min() + 1
    ]


def _dilate(mask, r):
    out = mask.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def _same_sample(a, b):
    if not np.array_equal(a['image'], b['image']) or a['label'] != b['label']:
        return False
    if len(a['instances']) != len(b['instances']):
        return False
    return all(ia['label'] == ib['label'] and ia['bbox'] == ib['bbox']
               and np.array_equal(ia['mask'], ib['mask'])
               for ia, ib in zip(a['instances'], b['instances']))


def _snapshot(root):
    """Relative path -> (size, mtime_ns) of every file under root."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = osp.join(d, f)
            st = os.stat(p)
            out[osp.relpath(p, root)] = (st.st_size, st.st_mtime_ns)
    return out


# --------------------------------------------------------------- render_sample
def test_classes_sorted_and_distinct():
    # CustomDataset numbers scanned class folders in sorted order
    assert len(set(SHAPE_CLASSES)) == NUM_CLASSES >= 5
    assert tuple(sorted(SHAPE_CLASSES)) == SHAPE_CLASSES


def test_render_is_deterministic_from_seed():
    for seed in range(10):
        a = render_sample(np.random.default_rng(seed))
        b = render_sample(np.random.default_rng(seed))
        c = render_sample(np.random.default_rng(seed + 100))
        assert _same_sample(a, b)
        assert not np.array_equal(a['image'], c['image'])


@pytest.mark.parametrize('size', [32, 64, 96])
def test_render_contract(size):
    labels, counts = set(), set()
    for seed in range(60):
        s = render_sample(np.random.default_rng(seed), size=size)
        img = s['image']
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
        assert isinstance(s['label'], int) and 0 <= s['label'] < NUM_CLASSES
        insts = s['instances']
        assert 1 <= len(insts) <= 3
        assert insts[0]['label'] == s['label']
        labels.add(s['label'])
        counts.add(len(insts))
        union = np.zeros((size, size), dtype=int)
        for inst in insts:
            m = inst['mask']
            assert m.shape == (size, size) and m.dtype == bool and m.any()
            assert isinstance(inst['label'], int)
            assert 0 <= inst['label'] < NUM_CLASSES
            bbox = inst['bbox']
            assert len(bbox) == 4 and all(isinstance(v, float) for v in bbox)
            # bbox is the tight box of the mask (within 1 px)
            np.testing.assert_allclose(bbox, _tight_box(m), atol=1)
            union += m
        assert union.max() == 1, 'instances overlap'
        # the dominant shape is the largest one
        areas = [i['mask'].sum() for i in insts]
        assert areas[0] == max(areas)
        # shapes are painted in a colour that stands out from their
        # surroundings
        for inst in insts:
            near = _dilate(inst['mask'], 2) & (union == 0)
            inside = img[inst['mask']].astype(float).mean(0)
            around = img[near].astype(float).mean(0)
            assert np.linalg.norm(inside - around) > 20
    assert labels == set(range(NUM_CLASSES))
    assert counts == {1, 2, 3}


def test_shape_geometry_matches_class():
    """Rings have a hole at their centre; circles, squares, stars do not; and
    the fill ratio of the mask within its bbox tells circles from triangles."""
    seen = set()
    for seed in range(150):
        s = render_sample(np.random.default_rng(seed), max_extra=0)
        (inst, ) = s['instances']
        m, name = inst['mask'], SHAPE_CLASSES[inst['label']]
        x, y, w, h = (int(v) for v in inst['bbox'])
        cx, cy = x + w // 2, y + h // 2
        fill = m.sum() / (w * h)
        if name == 'ring':
            assert not m[cy - 1:cy + 2, cx - 1:cx + 2].any()
            assert fill < 0.6
        elif name in ('circle', 'square', 'star'):
            assert m[cy, cx]
        if name == 'circle':
            assert 0.7 < fill < 0.85 and abs(w - h) <= 1
        if name == 'triangle':
            assert fill < 0.65
        seen.add(name)
    assert seen == set(SHAPE_CLASSES)


def test_max_extra_zero_and_bad_args():
    for seed in range(10):
        s = render_sample(np.random.default_rng(seed), max_extra=0)
        assert len(s['instances']) == 1
    with pytest.raises(ValueError):
        render_sample(np.random.default_rng(0), size=8)
    with pytest.raises(ValueError):
        render_sample(np.random.default_rng(0), max_extra=-1)


def test_polygon_to_mask_matches_pycocotools():
    """The numpy port of the COCO rasteriser gives pycocotools' exact masks."""
    from pycocotools import mask as mask_utils
    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(8, 50, size=2))
        k = int(rng.integers(3, 10))
        pts = np.stack([rng.uniform(0, w + 2, k), rng.uniform(0, h + 2, k)], 1)
        try:
            poly = shapes._coco_polygon(pts)
        except ValueError:  # degenerate after rounding
            continue
        ref = mask_utils.decode(mask_utils.frPyObjects([poly], h, w)[0])
        np.testing.assert_array_equal(
            shapes.polygon_to_mask(poly, h, w), ref.astype(bool))


# -------------------------------------------------------------------- ImageNet
def test_imagenet_style_layout_and_mmpretrain(tmp_path):
    from mmpretrain.datasets import CustomDataset, ImageNet
    root = make_imagenet_style(
        str(tmp_path / 'imagenet'), num_train=12, num_val=7, size=32, seed=3)
    assert root == str(tmp_path / 'imagenet')
    with open(osp.join(root, 'classes.txt')) as f:
        assert tuple(f.read().split()) == SHAPE_CLASSES
    for split, num in (('train', 12), ('val', 7)):
        with open(osp.join(root, 'meta', f'{split}.txt')) as f:
            lines = [ln.split() for ln in f.read().splitlines()]
        assert len(lines) == num
        for i, (rel, label) in enumerate(lines):
            cls, fname = rel.split('/')
            assert SHAPE_CLASSES.index(cls) == int(label)
            img = np.asarray(Image.open(osp.join(root, split, rel)))
            assert img.shape == (32, 32, 3)
            # the file is the seeded render, and its folder is its label
            sample = shapes._render(
                shapes._sample_rng(3, 'imagenet', split, i),
                32,
                label=int(label))
            np.testing.assert_array_equal(img, sample['image'])
            assert sample['label'] == int(label)
        for cls in SHAPE_CLASSES:
            assert osp.isdir(osp.join(root, split, cls))

    # folder scan
    ds = CustomDataset(data_root=root, data_prefix='train', lazy_init=False)
    assert len(ds) == 12
    assert tuple(ds.metainfo['classes']) == SHAPE_CLASSES
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        cls = osp.basename(osp.dirname(info['img_path']))
        assert info['gt_label'] == SHAPE_CLASSES.index(cls)
    # ImageNet-style annotation lists
    ds = CustomDataset(
        data_root=root,
        data_prefix='val',
        ann_file='meta/val.txt',
        metainfo=dict(classes=SHAPE_CLASSES))
    assert len(ds) == 7
    assert sorted(ds.get_gt_labels().tolist()) == sorted(i % NUM_CLASSES
                                                         for i in range(7))
    assert all(osp.isfile(ds.get_data_info(i)['img_path']) for i in range(7))
    ds = ImageNet(
        data_root=root,
        data_prefix='train',
        ann_file='meta/train.txt',
        metainfo=dict(classes=SHAPE_CLASSES))
    assert len(ds) == 12 and tuple(ds.metainfo['classes']) == SHAPE_CLASSES


# ------------------------------------------------------------------------ COCO
def test_coco_style_pycocotools_and_mmdet(tmp_path):
    from mmdet.datasets import CocoDataset
    from pycocotools.coco import COCO
    root = make_coco_style(
        str(tmp_path / 'coco'), num_train=10, num_val=4, size=64, seed=1)
    for split, num in (('train', 10), ('val', 4)):
        ann = osp.join(root, 'annotations', f'instances_{split}2017.json')
        coco = COCO(ann)
        assert len(coco.getImgIds()) == num
        cats = coco.loadCats(coco.getCatIds())
        assert [c['id'] for c in cats] == list(range(1, NUM_CLASSES + 1))
        assert tuple(c['name'] for c in cats) == SHAPE_CLASSES
        ann_ids = [a['id'] for a in coco.dataset['annotations']]
        assert len(set(ann_ids)) == len(ann_ids) and min(ann_ids) >= 1
        for i, img_id in enumerate(sorted(coco.getImgIds())):
            info = coco.loadImgs(img_id)[0]
            assert (info['width'], info['height']) == (64, 64)
            img = Image.open(osp.join(root, f'{split}2017', info['file_name']))
            assert img.size == (64, 64) and img.mode == 'RGB'
            sample = shapes._render(
                shapes._sample_rng(1, 'coco', split, i), 64)
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
            assert len(anns) == len(sample['instances'])
            for a, inst in zip(anns, sample['instances']):
                assert a['iscrowd'] == 0
                assert a['category_id'] == inst['label'] + 1
                seg = a['segmentation']
                assert isinstance(seg, list) and len(seg[0]) >= 6
                decoded = coco.annToMask(a).astype(bool)
                assert _iou(decoded, inst['mask']) > 0.9
                # the polygon decodes to exactly the painted pixels
                np.testing.assert_array_equal(decoded, inst['mask'])
                np.testing.assert_allclose(
                    a['bbox'], _tight_box(decoded), atol=1)
                assert a['area'] == pytest.approx(decoded.sum())
            # the jpg shows the shapes: mean colour close to the rendered one
            arr = np.asarray(img, dtype=float)
            assert np.abs(arr - sample['image']).mean() < 6

    ds = CocoDataset(
        data_root=root,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        metainfo=dict(classes=SHAPE_CLASSES),
        lazy_init=False,
        test_mode=False,
        pipeline=[])
    assert len(ds) == 10
    coco = COCO(osp.join(root, 'annotations', 'instances_train2017.json'))
    assert sum(len(ds[i]['instances'])
               for i in range(len(ds))) == len(coco.dataset['annotations'])
    item = ds[0]
    assert osp.isfile(item['img_path'])
    for inst in item['instances']:
        x1, y1, x2, y2 = inst['bbox']
        assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
        assert 0 <= inst['bbox_label'] < NUM_CLASSES
        assert inst['ignore_flag'] == 0

    # mmdet's loading transforms decode the polygons to the rendered masks
    from mmcv.transforms import LoadImageFromFile
    from mmdet.datasets.transforms import LoadAnnotations
    ds = CocoDataset(
        data_root=root,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        metainfo=dict(classes=SHAPE_CLASSES),
        lazy_init=False,
        test_mode=False,
        pipeline=[
            LoadImageFromFile(),
            LoadAnnotations(with_bbox=True, with_label=True, with_mask=True)
        ])
    for i in range(3):
        res = ds[i]
        sample = shapes._render(shapes._sample_rng(1, 'coco', 'train', i), 64)
        assert res['img'].shape == (64, 64, 3)
        assert res['gt_bboxes_labels'].tolist() == [
            inst['label'] for inst in sample['instances']
        ]
        assert not res['gt_ignore_flags'].any()
        np.testing.assert_array_equal(
            res['gt_masks'].masks.astype(bool),
            np.stack([inst['mask'] for inst in sample['instances']]))
        xyxy = [[x, y, x + w, y + h]
                for x, y, w, h in (inst['bbox']
                                   for inst in sample['instances'])]
        np.testing.assert_allclose(res['gt_bboxes'].numpy(), xyxy)


# ---------------------------------------------------------------------- ADE20K
def test_ade20k_style_and_mmseg(tmp_path):
    from mmseg.datasets import ADE20KDataset
    root = make_ade20k_style(
        str(tmp_path / 'ade'), num_train=8, num_val=3, size=48, seed=2)
    for split, folder, num in (('train', 'training', 8), ('val', 'validation',
                                                          3)):
        imgs = sorted(os.listdir(osp.join(root, 'images', folder)))
        segs = sorted(os.listdir(osp.join(root, 'annotations', folder)))
        assert len(imgs) == num and all(f.endswith('.jpg') for f in imgs)
        assert [osp.splitext(f)[0]
                for f in imgs] == [osp.splitext(f)[0] for f in segs]
        for i, name in enumerate(segs):
            seg_img = Image.open(osp.join(root, 'annotations', folder, name))
            assert seg_img.mode == 'L' and seg_img.size == (48, 48)
            seg = np.asarray(seg_img)
            assert seg.min() >= 0 and seg.max() <= NUM_CLASSES
            sample = shapes._render(
                shapes._sample_rng(2, 'ade20k', split, i), 48)
            expected = np.zeros((48, 48), dtype=np.uint8)
            for inst in sample['instances']:
                expected[inst['mask']] = inst['label'] + 1
            np.testing.assert_array_equal(seg, expected)
            assert (seg == sample['label'] + 1).any()

    palette = [list(c) for c in shapes.SHAPE_PALETTE]

    # mmseg's ADE20KDataset only accepts class names from its own METAINFO (a
    # subset builds a label map); custom names need the METAINFO overridden,
    # which is how mmseg datasets are customised.
    class ShapesADE20K(ADE20KDataset):
        METAINFO = dict(classes=SHAPE_CLASSES, palette=palette)

    ds = ShapesADE20K(
        data_root=root,
        metainfo=dict(classes=SHAPE_CLASSES, palette=palette),
        reduce_zero_label=True,
        lazy_init=False,
        pipeline=[],
        data_prefix=dict(
            img_path='images/training', seg_map_path='annotations/training'))
    assert len(ds) == 8
    assert tuple(ds.metainfo['classes']) == SHAPE_CLASSES
    info = ds.get_data_info(0)
    assert info['reduce_zero_label'] is True
    assert osp.isfile(info['img_path']) and osp.isfile(info['seg_map_path'])
    assert osp.splitext(osp.basename(info['img_path']))[0] == osp.splitext(
        osp.basename(info['seg_map_path']))[0]
    with pytest.raises(ValueError):  # why the subclass above is needed
        ADE20KDataset(data_root=root, metainfo=dict(classes=SHAPE_CLASSES))

    # mmseg's loading transforms: background -> 255 (ignored), class c -> c
    from mmcv.transforms import LoadImageFromFile
    from mmseg.datasets.transforms import LoadAnnotations
    ds = ShapesADE20K(
        data_root=root,
        reduce_zero_label=True,
        pipeline=[LoadImageFromFile(), LoadAnnotations()],
        data_prefix=dict(
            img_path='images/training', seg_map_path='annotations/training'))
    for i in range(3):
        res = ds[i]
        sample = shapes._render(
            shapes._sample_rng(2, 'ade20k', 'train', i), 48)
        expected = np.full((48, 48), 255, dtype=np.uint8)
        for inst in sample['instances']:
            expected[inst['mask']] = inst['label']
        assert res['img'].shape == (48, 48, 3)
        np.testing.assert_array_equal(res['gt_seg_map'], expected)


# ----------------------------------------------------------- idempotent / safe
def test_idempotent_skip_and_regenerate(tmp_path):
    root = str(tmp_path / 'coco')
    make_coco_style(root, num_train=3, num_val=2, size=32)
    before = _snapshot(root)
    with open(osp.join(root, shapes.META_FILE)) as f:
        stamp = json.load(f)
    assert stamp['params']['num_train'] == 3 and stamp['num_files'] == 7
    # same parameters: nothing rewritten
    make_coco_style(root, num_train=3, num_val=2, size=32)
    assert _snapshot(root) == before
    # different parameters: regenerated in place, nothing left behind
    make_coco_style(root, num_train=4, num_val=2, size=32)
    assert len(os.listdir(osp.join(root, 'train2017'))) == 4
    assert sorted(os.listdir(tmp_path)) == ['coco']
    # a damaged dataset (file missing) is rebuilt
    os.remove(osp.join(root, 'train2017', '000000000001.jpg'))
    make_coco_style(root, num_train=4, num_val=2, size=32)
    assert len(os.listdir(osp.join(root, 'train2017'))) == 4
    # same seed, same bytes of annotation; other seed, other data
    with open(osp.join(root, 'annotations', 'instances_val2017.json')) as f:
        ann_a = f.read()
    other = make_coco_style(
        str(tmp_path / 'coco2'), num_train=4, num_val=2, size=32)
    with open(osp.join(other, 'annotations', 'instances_val2017.json')) as f:
        assert f.read() == ann_a
    other = make_coco_style(
        str(tmp_path / 'coco3'), num_train=4, num_val=2, size=32, seed=5)
    with open(osp.join(other, 'annotations', 'instances_val2017.json')) as f:
        assert f.read() != ann_a


def test_interrupted_run_leaves_no_half_dataset(tmp_path, monkeypatch):
    root = str(tmp_path / 'ade')
    calls = {'n': 0}
    real = shapes._render

    def flaky(*args, **kwargs):
        calls['n'] += 1
        if calls['n'] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(shapes, '_render', flaky)
    with pytest.raises(KeyboardInterrupt):
        make_ade20k_style(root, num_train=4, num_val=1, size=32)
    assert os.listdir(tmp_path) == []  # no root, no temp folder
    # an existing complete dataset survives a failed regeneration
    monkeypatch.setattr(shapes, '_render', real)
    make_ade20k_style(root, num_train=4, num_val=1, size=32)
    before = _snapshot(root)
    calls['n'] = 0
    monkeypatch.setattr(shapes, '_render', flaky)
    with pytest.raises(KeyboardInterrupt):
        make_ade20k_style(root, num_train=5, num_val=1, size=32)
    assert _snapshot(root) == before
    assert os.listdir(tmp_path) == ['ade']


def test_refuses_to_overwrite_foreign_folder(tmp_path):
    root = tmp_path / 'mine'
    root.mkdir()
    (root / 'precious.txt').write_text('keep me')
    with pytest.raises(FileExistsError):
        make_imagenet_style(str(root), num_train=2, num_val=1, size=32)
    assert (root / 'precious.txt').read_text() == 'keep me'
    # an empty folder is fine
    empty = tmp_path / 'empty'
    empty.mkdir()
    make_imagenet_style(str(empty), num_train=2, num_val=1, size=32)
    assert (empty / 'meta' / 'train.txt').is_file()


# -------------------------------------------------------------- make_all / CLI
def test_make_all(tmp_path):
    paths = make_all(
        str(tmp_path), size=32, seed=0, num_train=3, num_val=2, coco_num_val=1)
    assert set(paths) == {'imagenet', 'ade20k', 'coco'}
    for fmt, p in paths.items():
        assert p == str(tmp_path / fmt)
        assert osp.isfile(osp.join(p, shapes.META_FILE))
    assert len(os.listdir(osp.join(paths['ade20k'], 'images',
                                   'training'))) == 3
    with open(
            osp.join(paths['coco'], 'annotations',
                     'instances_val2017.json')) as f:
        assert len(json.load(f)['images']) == 1
    with pytest.raises(TypeError):
        make_all(str(tmp_path), num_trian=3)


def test_cli(tmp_path, repo_root):
    out = subprocess.run([
        sys.executable,
        osp.join(repo_root, 'tools', 'data', 'make_shapes.py'),
        str(tmp_path), '--size', '32', '--num-train', '3', '--num-val', '2',
        '--formats', 'coco', 'imagenet'
    ],
                         capture_output=True,
                         text=True,
                         check=True,
                         cwd=repo_root)
    assert str(tmp_path / 'coco') in out.stdout
    assert str(tmp_path / 'imagenet') in out.stdout
    assert sorted(os.listdir(tmp_path)) == ['coco', 'imagenet']
    with open(osp.join(tmp_path, 'imagenet', 'meta', 'train.txt')) as f:
        assert len(f.readlines()) == 3


def test_object_task_draws_one_bright_upright_shape_of_its_class():
    """The demo's task: the label is the shape; position, size, brightness and
    shading vary; the shape is lighter than everything around it."""
    from mmhybrid.datasets import render_object
    for label in range(len(SHAPE_CLASSES)):
        for i in range(4):
            s = render_object(
                np.random.default_rng([label, i]), 64, label=label)
            (inst, ) = s['instances']
            assert s['label'] == inst['label'] == label
            img = s['image'].astype(float).mean(-1)
            mask = inst['mask']
            assert img[mask].mean() - img[~mask].mean() >= 80
            assert 0.08 * 64 * 64 < mask.sum() < 0.65 * 64 * 64
    # a forced label changes the shape only: the rng stream is the same
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    a = render_object(rng_a, 64)
    b = render_object(rng_b, 64, label=(a['label'] + 1) % len(SHAPE_CLASSES))
    assert b['label'] != a['label']
    assert rng_a.bit_generator.state == rng_b.bit_generator.state
    assert (render_object(np.random.default_rng(3),
                          64)['image'] == a['image']).all()


def test_object_and_scene_tasks_are_separate_datasets(tmp_path):
    root = str(tmp_path / 'data')
    make_imagenet_style(root, num_train=5, num_val=5, size=32, task='objects')
    first = sorted(os.listdir(osp.join(root, 'train', 'circle')))
    img_obj = np.array(Image.open(osp.join(root, 'train', 'circle', first[0])))
    make_imagenet_style(root, num_train=5, num_val=5, size=32, task='scene')
    img_scene = np.array(
        Image.open(osp.join(root, 'train', 'circle', first[0])))
    assert not (img_obj == img_scene).all()  # regenerated, not reused
    with pytest.raises(ValueError, match='task must be one of'):
        make_imagenet_style(root, num_train=1, num_val=1, task='scenes')
