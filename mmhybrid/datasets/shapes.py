"""Built-in generated dataset: coloured geometric shapes on textured
backgrounds.

A tiny, deterministic stand-in for ImageNet / ADE20K / COCO, so that
pretraining, classification, segmentation and detection pipelines can be
smoke-tested without downloading anything. Pure numpy + Pillow + json.

Every image has one *dominant* shape whose class is the image label, plus
0-``max_extra`` smaller shapes elsewhere. Circumradii are drawn from disjoint
ranges (dominant 25-38 % of the image side, extras 10-15 %) chosen so that the
dominant shape has more pixels than any extra one, whatever the classes. Shapes
never overlap (their circumscribed circles are kept apart), so each instance
mask is the whole shape and the semantic map is well defined.

Geometry: every shape is one polygon in continuous image coordinates (pixel
``(x, y)`` covers ``[x, x + 1) x [y, y + 1)``; a ring is a single "keyhole"
outline). Its mask is that polygon rasterised by :func:`polygon_to_mask`, a
numpy port of the COCO API's rasteriser, and the polygon is what the COCO json
stores. So the pixels painted into an image, the ADE20K label map and the mask
that pycocotools / mmdet decode from the annotation are all the same pixels.

On-disk writers (:func:`make_imagenet_style`, :func:`make_ade20k_style`,
:func:`make_coco_style`, :func:`make_all`) are idempotent: a finished dataset
carries a ``.shapes_meta.json`` stamp (written last) with its parameters and
file count; a matching stamp over the same number of files means nothing is
regenerated. A dataset is always built in a temporary sibling folder and
renamed into place, so an interrupted run never leaves half a dataset at
``root``.
"""
import json
import os
import os.path as osp
import shutil
import tempfile
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

# Alphabetical on purpose: mmpretrain's CustomDataset, when it scans class
# folders, numbers classes in sorted folder-name order. Sorted names make those
# labels equal to the labels written in the annotation lists.
SHAPE_CLASSES: Tuple[str,
                     ...] = ('circle', 'ring', 'square', 'star', 'triangle')
assert tuple(sorted(SHAPE_CLASSES)) == SHAPE_CLASSES

#: One colour per class for segmentation visualisation (RGB).
SHAPE_PALETTE: Tuple[Tuple[int, int, int],
                     ...] = ((230, 25, 75), (60, 180, 75), (255, 225, 25),
                             (0, 130, 200), (245, 130, 48))

META_FILE = '.shapes_meta.json'
# Bump when the rendering changes, so stale datasets on disk are regenerated.
GENERATOR_VERSION = 1

_FORMAT_CODES = {'imagenet': 1, 'ade20k': 2, 'coco': 3}
_SPLIT_CODES = {'train': 1, 'val': 2}


# -------------------------------------------------------------------- geometry
def _regular_polygon(cx: float, cy: float, r: float, n: int,
                     theta: float) -> np.ndarray:
    """``(n, 2)`` vertices on the circle ``(cx, cy, r)``, the first at
    ``theta``."""
    angles = theta + 2.0 * np.pi * np.arange(n) / n
    return np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], axis=1)


def _shape_vertices(name: str, cx: float, cy: float, r: float,
                    theta: float) -> np.ndarray:
    """``(K, 2)`` outline of a shape whose circumscribed circle is ``(cx, cy,
    r)``.

    The ring, the only shape with a hole, is one "keyhole" outline: the outer
    circle, a zero-width bridge to the inner circle, the inner circle in
    reverse and back along the bridge. The two bridge edges cancel when
    rasterised.
    """
    if name == 'circle':
        return _regular_polygon(cx, cy, r, 48, theta)
    if name == 'ring':
        outer = _regular_polygon(cx, cy, r, 48, theta)
        inner = _regular_polygon(cx, cy, 0.55 * r, 48, theta)
        return np.concatenate(
            [outer, outer[:1], inner[:1], inner[:0:-1], inner[:1]], axis=0)
    if name == 'square':
        return _regular_polygon(cx, cy, r, 4, theta)
    if name == 'triangle':
        return _regular_polygon(cx, cy, r, 3, theta)
    if name == 'star':
        outer = _regular_polygon(cx, cy, r, 5, theta)
        inner = _regular_polygon(cx, cy, 0.45 * r, 5, theta + np.pi / 5)
        pts = np.empty((10, 2))
        pts[0::2], pts[1::2] = outer, inner
        return pts
    raise ValueError(f'unknown shape {name!r}')


_COCO_SCALE = 5.0  # pycocotools' boundary upsampling factor


def _coco_polygon(vertices: np.ndarray) -> List[float]:
    """Flat ``[x1, y1, x2, y2, ...]`` COCO polygon of an outline.

    Coordinates are rounded to 0.01 px (they are written to json and read back
    as the very same doubles), and consecutive vertices that fall on the same
    point of pycocotools' 1/5-pixel grid are dropped: a zero-length edge is
    undefined behaviour in its rasteriser.
    """
    pts = [(round(float(x), 2), round(float(y), 2)) for x, y in vertices]

    def grid(p: Tuple[float, float]) -> Tuple[int, int]:
        return (int(_COCO_SCALE * p[0] + .5), int(_COCO_SCALE * p[1] + .5))

    kept = [pts[0]]
    for p in pts[1:]:
        if grid(p) != grid(kept[-1]):
            kept.append(p)
    while len(kept) > 1 and grid(kept[-1]) == grid(kept[0]):
        kept.pop()
    if len(kept) < 3:
        raise ValueError('shape too small to outline; use a larger image size')
    return [v for p in kept for v in p]


def polygon_to_mask(polygon: Sequence[float], height: int,
                    width: int) -> np.ndarray:
    """Rasterise a COCO polygon exactly as ``pycocotools`` does.

    A numpy port of ``rleFrPoly`` from the COCO API (``maskApi.c``), so the
    masks painted into the images, the ADE20K label maps and the masks that
    ``pycocotools`` / mmdet decode from the written polygons are identical,
    without depending on pycocotools. Pixel ``(x, y)`` covers
    ``[x, x + 1) x [y, y + 1)``; pixels whose centre is inside the polygon are
    set, up to the COCO rasteriser's ~0.2 px boundary approximation.

    Args:
        polygon (Sequence[float]): ``[x1, y1, x2, y2, ...]``, at least 3
            vertices, no two consecutive ones equal on the 1/5-pixel grid.
        height (int): Mask height.
        width (int): Mask width.

    Returns:
        np.ndarray: ``(height, width)`` bool mask.
    """
    xy = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    # C's (int) cast truncates toward zero; identical float64 operations and
    # order keep every rounding decision the same as in the C code.
    x = np.trunc(_COCO_SCALE * xy[:, 0] + .5).astype(np.int64)
    y = np.trunc(_COCO_SCALE * xy[:, 1] + .5).astype(np.int64)
    xs, ys = x, y
    xe, ye = np.roll(x, -1), np.roll(y, -1)
    dx, dy = np.abs(xe - xs), np.abs(ye - ys)
    if np.any((dx == 0) & (dy == 0)):
        raise ValueError('polygon has a zero-length edge')
    steep = dx < dy
    flip = (~steep & (xs > xe)) | (steep & (ys > ye))
    xs, xe = np.where(flip, xe, xs), np.where(flip, xs, xe)
    ys, ye = np.where(flip, ye, ys), np.where(flip, ys, ye)
    length = np.maximum(dx, dy)
    slope = np.where(steep, xe - xs, ye - ys) / length
    # densely sample every edge: point d = 0..length, walked from vertex j to
    # j+1
    n = length + 1
    edge = np.repeat(np.arange(len(n)), n)
    d = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    t = np.where(flip[edge], length[edge] - d, d)
    along = np.trunc(
        np.where(steep[edge], xs[edge], ys[edge]) + slope[edge] * t +
        .5).astype(np.int64)
    u = np.where(steep[edge], along, t + xs[edge])
    v = np.where(steep[edge], t + ys[edge], along)
    # points where the boundary crosses a column of pixel centres, downsampled
    j = np.flatnonzero(u[1:] != u[:-1]) + 1
    xd = (np.where(u[j] < u[j - 1], u[j], u[j] - 1) + .5) / _COCO_SCALE - .5
    ok = (np.floor(xd) == xd) & (xd >= 0) & (xd <= width - 1)
    yd = (np.minimum(v[j], v[j - 1])[ok] + .5) / _COCO_SCALE - .5
    yd = np.ceil(np.clip(yd, 0, height)).astype(np.int64)
    # each boundary point toggles the column-major run; parity gives the mask
    toggles = np.bincount(
        xd[ok].astype(np.int64) * height + yd, minlength=height * width + 1)
    inside = (np.cumsum(toggles[:height * width]) % 2).astype(bool)
    return inside.reshape(width, height).T


def _mask_bbox(mask: np.ndarray) -> List[float]:
    """Tight ``[x, y, w, h]`` box of a non-empty mask, in pixel units."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return [
        float(xs[0]),
        float(ys[0]),
        float(xs[-1] - xs[0] + 1),
        float(ys[-1] - ys[0] + 1)
    ]


# ------------------------------------------------------------------- rendering
def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Random textured background: smooth noise, stripes or a gradient."""
    kind = int(rng.integers(3))
    c1 = rng.uniform(0, 255, size=3)
    c2 = rng.uniform(0, 255, size=3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    # kind 0, smooth colour noise: a coarse random grid, bilinearly upsampled
    if kind == 0:
        cells = int(rng.integers(3, 8))
        grid = rng.uniform(0, 255, size=(cells, cells, 3)).astype(np.uint8)
        img = np.asarray(
            Image.fromarray(grid).resize((size, size), Image.BILINEAR),
            dtype=np.float64)
    elif kind == 1:  # stripes along a random direction
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(0.1, 0.35)
        phase = rng.uniform(0, 2 * np.pi)
        t = (xx * np.cos(angle) +
             yy * np.sin(angle)) / period * 2 * np.pi + phase
        w = (0.5 + 0.5 * np.sin(t))[..., None]
        img = c1 * w + c2 * (1 - w)
    else:  # linear gradient
        angle = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(angle) + yy * np.sin(angle)
        t = ((t - t.min()) / max(t.max() - t.min(), 1e-6))[..., None]
        img = c1 * t + c2 * (1 - t)
    img = img + rng.normal(0, 6, size=img.shape)
    return img


def _pick_colour(rng: np.random.Generator, against: np.ndarray) -> np.ndarray:
    """A fill colour that contrasts with the mean colour ``against``."""
    best, best_d = None, -1.0
    for _ in range(8):
        c = rng.uniform(0, 255, size=3)
        d = float(np.linalg.norm(c - against))
        if d > 120:
            return c
        if d > best_d:
            best, best_d = c, d
    return best if best_d > 60 else 255.0 - against


def _render(rng: np.random.Generator,
            size: int = 64,
            max_extra: int = 2,
            label: Optional[int] = None) -> dict:
    """:func:`render_sample` plus the polygon of every instance.

    Args:
        rng (np.random.Generator): Source of all randomness.
        size (int): Image side in pixels.
        max_extra (int): Most additional small shapes.
        label (int, optional): Force the class of the dominant shape (the rng
            stream is the same either way).

    Returns:
        dict: As :func:`render_sample`; each instance also has ``polygon``, the
        flat COCO polygon its mask was rasterised from.
    """
    if size < 16:
        raise ValueError(f'size must be >= 16, got {size}')
    if max_extra < 0:
        raise ValueError(f'max_extra must be >= 0, got {max_extra}')
    num_classes = len(SHAPE_CLASSES)
    img = _background(rng, size)

    drawn = int(rng.integers(num_classes))
    specs = []  # (label, cx, cy, r, theta)
    r = rng.uniform(0.25, 0.38) * size
    cx, cy = rng.uniform(r + 1, size - r - 1, size=2)
    specs.append((drawn if label is None else int(label), cx, cy, r,
                  rng.uniform(0, 2 * np.pi)))
    num_extra = int(rng.integers(max_extra + 1))
    for _ in range(num_extra):
        lab = int(rng.integers(num_classes))
        r = rng.uniform(0.10, 0.15) * size
        theta = rng.uniform(0, 2 * np.pi)
        for _try in range(20):  # place it away from every shape drawn so far
            cx, cy = rng.uniform(r + 1, size - r - 1, size=2)
            if all(
                    np.hypot(cx - s[1], cy - s[2]) > r + s[3] + 1
                    for s in specs):
                specs.append((lab, cx, cy, r, theta))
                break

    instances = []
    for lab, cx, cy, r, theta in specs:
        polygon = _coco_polygon(
            _shape_vertices(SHAPE_CLASSES[lab], cx, cy, r, theta))
        mask = polygon_to_mask(polygon, size, size)
        colour = _pick_colour(rng, img[mask].mean(axis=0))
        shade = rng.normal(0, 5, size=(int(mask.sum()), 3))
        img[mask] = colour + shade
        instances.append(
            dict(
                label=int(lab),
                mask=mask,
                bbox=_mask_bbox(mask),
                polygon=polygon))
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return dict(image=image, label=instances[0]['label'], instances=instances)


def render_sample(rng: np.random.Generator,
                  size: int = 64,
                  max_extra: int = 2) -> dict:
    """Render one image of coloured shapes on a textured background.

    Args:
        rng (np.random.Generator): Source of all randomness; the same generator
            state always gives the same sample.
        size (int): Image height and width in pixels (>= 16). Defaults to 64.
        max_extra (int): Most additional small shapes besides the dominant one
            (fewer are drawn when they do not fit). Defaults to 2.

    Returns:
        dict: ``image`` (``(size, size, 3)`` uint8 RGB), ``label`` (int,
            class index
        in :data:`SHAPE_CLASSES` of the dominant shape) and ``instances``,
            a list
        with the dominant shape first, each a dict with ``label`` (int),
            ``mask``
        (``(size, size)`` bool; instances never overlap) and ``bbox``
        (``[x, y, w, h]`` floats, the tight box of the mask).
    """
    sample = _render(rng, size=size, max_extra=max_extra)
    for inst in sample['instances']:
        inst.pop('polygon')
    return sample


# Canonical orientation of each class for the object task: squares
# axis-aligned, triangles and stars pointing up (circles and rings look alike
# at any angle).
_UPRIGHT = {'square': np.pi / 4, 'triangle': -np.pi / 2, 'star': -np.pi / 2}


def render_object(rng: np.random.Generator,
                  size: int = 64,
                  label: Optional[int] = None) -> dict:
    """Render one bright shape on a dark, smoothly shaded background.

    The classification task of the CPU demo and study. The label is the shape:
    position, size (circumradius 28-45 % of the side), brightness of shape and
    background, background shading and pixel noise all vary and carry no
    label. Two nuisances are kept small on purpose, because a tiny ViT trained
    from scratch for a few hundred iterations does not get past them (measured
    with the demo's supervised recipe, 300 iterations, 5,000 images):

    - colour: random foreground/background colours kept it at chance (20-25 %),
      so the shape is light grey (170-255) on dark grey (0-70, +-25 of
      shading);
    - rotation: any angle left squares, circles, triangles and stars confused
      (76 % val top-1); within +-20 degrees of an upright pose, 94 %.

    Args:
        rng (np.random.Generator): Source of all randomness.
        size (int): Image side in pixels (>= 16). Defaults to 64.
        label (int, optional): Force the class (the rng stream is the same
            either way).

    Returns:
        dict: ``image`` (``(size, size, 3)`` uint8 RGB), ``label`` (int) and
        ``instances`` (one, as in :func:`render_sample`, with its polygon).
    """
    if size < 16:
        raise ValueError(f'size must be >= 16, got {size}')
    drawn = int(rng.integers(len(SHAPE_CLASSES)))
    lab = drawn if label is None else int(label)
    name = SHAPE_CLASSES[lab]
    r = rng.uniform(0.28, 0.45) * size
    cx, cy = rng.uniform(r + 0.5, size - r - 0.5, size=2)
    theta = _UPRIGHT.get(name, 0.0) + np.deg2rad(rng.uniform(-20.0, 20.0))
    polygon = _coco_polygon(_shape_vertices(name, cx, cy, r, theta))
    mask = polygon_to_mask(polygon, size, size)

    # background: a dark level plus smooth shading (a coarse random grid,
    # bilinearly upsampled), then the shape, then pixel noise over everything
    cells = int(rng.integers(2, 5))
    grid = rng.uniform(-1, 1, size=(cells, cells)).astype(np.float32)
    shading = np.asarray(
        Image.fromarray(grid).resize((size, size), Image.BILINEAR))
    img = np.empty((size, size, 3))
    img[:] = (rng.uniform(0, 70) + 25.0 * shading)[..., None]
    img[mask] = rng.uniform(170, 255)
    img += rng.normal(0, 8, size=img.shape)
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return dict(
        image=image,
        label=lab,
        instances=[
            dict(label=lab, mask=mask, bbox=_mask_bbox(mask), polygon=polygon)
        ])


#: The classification tasks :func:`make_imagenet_style` can write.
IMAGENET_TASKS: Dict[str, Callable[..., dict]] = {
    'scene': _render,
    'objects': render_object
}


# ----------------------------------------------------------------- disk output
def _sample_rng(seed: int, fmt: str, split: str,
                index: int) -> np.random.Generator:
    """Independent stream per sample: a sample does not depend on the split
    sizes."""
    return np.random.default_rng(
        [int(seed), _FORMAT_CODES[fmt], _SPLIT_CODES[split],
         int(index)])


def _count_files(root: str) -> int:
    """Files under ``root``, the stamp excluded."""
    return sum(
        len([f for f in files if f != META_FILE])
        for _, _, files in os.walk(root))


def _is_complete(root: str, meta: dict) -> bool:
    """Whether ``root`` holds a finished dataset generated with ``meta``."""
    stamp = _read_meta(root)
    if stamp is None or stamp.get('params') != meta:
        return False
    return _count_files(root) == stamp.get('num_files')


def _read_meta(root: str) -> Optional[dict]:
    """The stamp of a generated dataset, or None."""
    try:
        with open(osp.join(root, META_FILE)) as f:
            stamp = json.load(f)
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def _build_atomically(root: str, meta: dict, write: Callable[[str],
                                                             None]) -> str:
    """Run ``write(tmp_dir)`` in a sibling temp dir, stamp it, rename to
    ``root``.

    Skips everything when ``root`` already holds a complete dataset generated
    with ``meta``. An existing ``root`` is replaced only when it is empty or is
    a (differently parametrised or damaged) shapes dataset; anything else
    raises ``FileExistsError``. If ``write`` fails, the temp dir is removed and
    ``root`` is left as it was.
    """
    root = osp.abspath(root)
    if _is_complete(root, meta):
        return root
    if osp.exists(root) and not (osp.isdir(root) and
                                 (not os.listdir(root)
                                  or _read_meta(root) is not None)):
        raise FileExistsError(
            f'{root} exists and is not a generated shapes dataset; '
            'refusing to overwrite it')
    parent = osp.dirname(root)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{osp.basename(root)}.tmp-', dir=parent)
    try:
        write(tmp)
        stamp = dict(params=meta, num_files=_count_files(tmp))
        with open(osp.join(tmp, META_FILE), 'w') as f:  # stamp last
            json.dump(stamp, f, indent=2, sort_keys=True)
        if _is_complete(root, meta):  # a concurrent run finished first
            shutil.rmtree(tmp, ignore_errors=True)
            return root
        old = None
        if osp.exists(root):
            old = tempfile.mkdtemp(
                prefix=f'.{osp.basename(root)}.old-', dir=parent)
            os.rename(root, osp.join(old, 'data'))
        os.rename(tmp, root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _meta(fmt: str,
          num_train: int,
          num_val: int,
          size: int,
          seed: int,
          task: str = 'scene') -> dict:
    if num_train < 0 or num_val < 0:
        raise ValueError('num_train and num_val must be >= 0')
    if task not in IMAGENET_TASKS:
        raise ValueError(f'task must be one of {sorted(IMAGENET_TASKS)}, '
                         f'got {task!r}')
    return dict(
        format=fmt,
        version=GENERATOR_VERSION,
        classes=list(SHAPE_CLASSES),
        num_train=int(num_train),
        num_val=int(num_val),
        size=int(size),
        seed=int(seed),
        task=task)


def make_imagenet_style(root: str,
                        num_train: int = 200,
                        num_val: int = 50,
                        size: int = 64,
                        seed: int = 0,
                        task: str = 'scene') -> str:
    """Write a classification dataset in mmpretrain's folder / ImageNet layout.

    Two tasks share the layout and the classes: ``'scene'`` (the default, the
    images of the segmentation and detection sets: a dominant shape among
    extras, random colours and textures) and ``'objects'``
    (:func:`render_object`: one shape, the nuisances a ViT trained from scratch
    gets past in minutes; what the CPU demo and study learn from).

    Layout::

        root/train/<class_name>/train_000000.png   root/val/<class_name>/...
        root/meta/train.txt   root/meta/val.txt    root/classes.txt

    Each line of ``meta/<split>.txt`` is ``<class_name>/<file>.png <label>``,
    relative to ``root/<split>``. Classes are balanced (sample ``i`` has label
    ``i % num_classes``) and every class folder exists even when empty.

    Args:
        root (str): Output folder.
        num_train (int): Training images. Defaults to 200.
        num_val (int): Validation images. Defaults to 50.
        size (int): Image side. Defaults to 64.
        seed (int): Random seed. Defaults to 0.
        task (str): ``'scene'`` or ``'objects'``. Defaults to ``'scene'``.

    Returns:
        str: ``root`` (absolute).
    """
    meta = _meta('imagenet', num_train, num_val, size, seed, task)
    render = IMAGENET_TASKS[task]

    def write(out: str) -> None:
        os.makedirs(osp.join(out, 'meta'))
        with open(osp.join(out, 'classes.txt'), 'w') as f:
            f.write('\n'.join(SHAPE_CLASSES) + '\n')
        for split, num in (('train', num_train), ('val', num_val)):
            for name in SHAPE_CLASSES:
                os.makedirs(osp.join(out, split, name))
            lines = []
            for i in range(num):
                label = i % len(SHAPE_CLASSES)
                sample = render(
                    _sample_rng(seed, 'imagenet', split, i), size, label=label)
                rel = f'{SHAPE_CLASSES[label]}/{split}_{i:06d}.png'
                Image.fromarray(sample['image']).save(
                    osp.join(out, split, rel))
                lines.append(f'{rel} {label}\n')
            with open(osp.join(out, 'meta', f'{split}.txt'), 'w') as f:
                f.writelines(lines)

    return _build_atomically(root, meta, write)


def make_ade20k_style(root: str,
                      num_train: int = 40,
                      num_val: int = 10,
                      size: int = 64,
                      seed: int = 0) -> str:
    """Write a semantic segmentation dataset in mmseg's ADE20K layout.

    Layout::

        root/images/training/train_000000.jpg
        root/annotations/training/train_000000.png
        root/images/validation/val_000000.jpg
        root/annotations/validation/val_000000.png

    Label PNGs are mode ``'L'`` with the ADE20K convention for
    ``reduce_zero_label=True``: 0 is background (ignored after reduction) and
    class ``c`` of :data:`SHAPE_CLASSES` is stored as ``c + 1``.

    Args:
        root (str): Output folder.
        num_train (int): Training images. Defaults to 40.
        num_val (int): Validation images. Defaults to 10.
        size (int): Image side. Defaults to 64.
        seed (int): Random seed. Defaults to 0.

    Returns:
        str: ``root`` (absolute).
    """
    meta = _meta('ade20k', num_train, num_val, size, seed)

    def write(out: str) -> None:
        for split, folder, num in (('train', 'training', num_train),
                                   ('val', 'validation', num_val)):
            img_dir = osp.join(out, 'images', folder)
            ann_dir = osp.join(out, 'annotations', folder)
            os.makedirs(img_dir)
            os.makedirs(ann_dir)
            for i in range(num):
                sample = _render(_sample_rng(seed, 'ade20k', split, i), size)
                seg = np.zeros((size, size), dtype=np.uint8)
                for inst in sample['instances']:
                    seg[inst['mask']] = inst['label'] + 1
                stem = f'{split}_{i:06d}'
                Image.fromarray(sample['image']).save(
                    osp.join(img_dir, stem + '.jpg'),
                    quality=95,
                    subsampling=0)
                Image.fromarray(
                    seg, mode='L').save(osp.join(ann_dir, stem + '.png'))

    return _build_atomically(root, meta, write)


def make_coco_style(root: str,
                    num_train: int = 40,
                    num_val: int = 10,
                    size: int = 64,
                    seed: int = 0) -> str:
    """Write an instance detection / segmentation dataset in COCO 2017 layout.

    Layout::

        root/train2017/000000000001.jpg
        root/val2017/000000000001.jpg
        root/annotations/instances_train2017.json
        root/annotations/instances_val2017.json

    Category ids are ``1..len(SHAPE_CLASSES)`` in :data:`SHAPE_CLASSES` order;
    annotations carry ``bbox`` (xywh, the tight box of the rendered mask),
    ``area`` (mask pixel count), ``iscrowd=0`` and polygon ``segmentation``.

    Args:
        root (str): Output folder.
        num_train (int): Training images. Defaults to 40.
        num_val (int): Validation images. Defaults to 10.
        size (int): Image side. Defaults to 64.
        seed (int): Random seed. Defaults to 0.

    Returns:
        str: ``root`` (absolute).
    """
    meta = _meta('coco', num_train, num_val, size, seed)
    categories = [
        dict(id=i + 1, name=n, supercategory='shape')
        for i, n in enumerate(SHAPE_CLASSES)
    ]

    def write(out: str) -> None:
        os.makedirs(osp.join(out, 'annotations'))
        for split, num in (('train', num_train), ('val', num_val)):
            img_dir = osp.join(out, f'{split}2017')
            os.makedirs(img_dir)
            images, annotations = [], []
            for i in range(num):
                sample = _render(_sample_rng(seed, 'coco', split, i), size)
                image_id = i + 1
                file_name = f'{image_id:012d}.jpg'
                Image.fromarray(sample['image']).save(
                    osp.join(img_dir, file_name), quality=95, subsampling=0)
                images.append(
                    dict(
                        id=image_id,
                        file_name=file_name,
                        width=size,
                        height=size))
                for inst in sample['instances']:
                    annotations.append(
                        dict(
                            id=len(annotations) + 1,
                            image_id=image_id,
                            category_id=inst['label'] + 1,
                            bbox=inst['bbox'],
                            area=float(inst['mask'].sum()),
                            iscrowd=0,
                            segmentation=[inst['polygon']]))
            coco = dict(
                info=dict(
                    description='mmhybrid generated shapes',
                    version='1.0',
                    year=2017),
                licenses=[],
                images=images,
                annotations=annotations,
                categories=categories)
            with open(
                    osp.join(out, 'annotations',
                             f'instances_{split}2017.json'), 'w') as f:
                json.dump(coco, f)

    return _build_atomically(root, meta, write)


_MAKERS = {
    'imagenet': make_imagenet_style,
    'ade20k': make_ade20k_style,
    'coco': make_coco_style,
}


def make_all(root: str,
             size: int = 64,
             seed: int = 0,
             **counts) -> Dict[str, str]:
    """Write all three layouts under ``root/imagenet``, ``root/ade20k``,
    ``root/coco``.

    Args:
        root (str): Parent output folder.
        size (int): Image side. Defaults to 64.
        seed (int): Random seed. Defaults to 0.
        **counts: ``num_train`` / ``num_val`` for every format, or per
            format as ``<format>_num_train`` / ``<format>_num_val`` (e.g.
            ``coco_num_val=5``), which take precedence. Unset counts keep each
            writer's default.

    Returns:
        dict: Format name (``'imagenet'``, ``'ade20k'``, ``'coco'``) to the
            path
        written.
    """
    allowed = {'num_train', 'num_val'} | {
        f'{fmt}_{k}'
        for fmt in _MAKERS
        for k in ('num_train', 'num_val')
    }
    unknown = set(counts) - allowed
    if unknown:
        raise TypeError(f'make_all() got unexpected counts {sorted(unknown)}; '
                        f'allowed: {sorted(allowed)}')
    paths = {}
    for fmt, maker in _MAKERS.items():
        kwargs = {}
        for k in ('num_train', 'num_val'):
            value = counts.get(f'{fmt}_{k}', counts.get(k))
            if value is not None:
                kwargs[k] = value
        paths[fmt] = maker(osp.join(root, fmt), size=size, seed=seed, **kwargs)
    return paths
