"""The generated ADE20K-style shapes data as an mmseg dataset.

mmseg's ``ADE20KDataset`` insists on ADE20K's 150 class names, so the built-in
generated segmentation data (:func:`mmhybrid.datasets.make_ade20k_style`) gets
its own small dataset class with the shapes' classes and palette. It is
registered in mmseg's ``DATASETS`` registry (``type='ShapesSegDataset'`` in an
mmseg config) when mmsegmentation is installed, and simply absent otherwise.

The label PNGs follow ADE20K's convention (0 = background, class ``c`` stored
as ``c + 1``), so the dataset reads them with ``reduce_zero_label=True`` and
its five classes are the five shapes, as ADE20K's 150 classes exclude "other".
"""
from .shapes import SHAPE_CLASSES, SHAPE_PALETTE

try:
    from mmseg.datasets import BaseSegDataset
    from mmseg.registry import DATASETS as _SEG_DATASETS
except (ImportError, AssertionError):
    # mmseg is an optional (downstream) dependency; it asserts its mmcv range
    BaseSegDataset = None

__all__ = []

if BaseSegDataset is not None:

    @_SEG_DATASETS.register_module()
    class ShapesSegDataset(BaseSegDataset):
        """ADE20K-layout shapes data: ``images/<split>/*.jpg`` and
        ``annotations/<split>/*.png``; five classes, background ignored."""

        METAINFO = dict(
            classes=tuple(SHAPE_CLASSES),
            palette=[list(c) for c in SHAPE_PALETTE])

        def __init__(self,
                     img_suffix='.jpg',
                     seg_map_suffix='.png',
                     reduce_zero_label=True,
                     **kwargs) -> None:
            super().__init__(
                img_suffix=img_suffix,
                seg_map_suffix=seg_map_suffix,
                reduce_zero_label=reduce_zero_label,
                **kwargs)

    __all__.append('ShapesSegDataset')
