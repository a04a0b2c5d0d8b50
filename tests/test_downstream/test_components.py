"""The simple feature pyramid neck and the shapes segmentation dataset."""
import numpy as np
import pytest
import torch
from mmengine.registry import DefaultScope

from mmhybrid.models.necks import SimpleFeaturePyramid


@pytest.mark.parametrize(
    'scales,strides',
    [
        ((4.0, 2.0, 1.0, 0.5), (4, 8, 16, 32, 64)),  # ViT-B/16: ViTDet
        ((2.0, 1.0, 0.5, 0.25), (4, 8, 16, 32, 64)),  # /8 tiny demo ViT
    ])
def test_simple_feature_pyramid_strides_and_channels(scales, strides):
    patch = 16 if scales[0] == 4.0 else 8
    neck = SimpleFeaturePyramid(
        backbone_channel=32,
        out_channels=16,
        scale_factors=scales,
        num_outs=5,
        norm_cfg=dict(type='mmpretrain.LN2d'))
    img = 128
    x = torch.randn(2, 32, img // patch, img // patch)
    outs = neck((x, ))
    assert len(outs) == 5
    for out, stride in zip(outs, strides):
        assert out.shape == (2, 16, img // stride, img // stride)
    # the 4x level is two transposed convs with norm + GELU between (ViTDet)
    if scales[0] == 4.0:
        kinds = [type(m).__name__ for m in neck.stages[0]]
        assert kinds == [
            'ConvTranspose2d', 'LayerNorm2d', 'GELU', 'ConvTranspose2d'
        ]
        assert neck.lateral_convs[0].conv.in_channels == 8
    outs[0].sum().backward()
    assert neck.stages[0][0].weight.grad is not None


def test_simple_feature_pyramid_rejects_bad_scales():
    with pytest.raises(ValueError, match='powers of two'):
        SimpleFeaturePyramid(32, 16, scale_factors=(3.0, 1.0))
    with pytest.raises(ValueError, match='num_outs'):
        SimpleFeaturePyramid(32, 16, num_outs=2)


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain'])
def test_simple_feature_pyramid_found_from_every_scope(scope):
    from mmengine.registry import MODELS
    with DefaultScope.overwrite_default_scope(scope):
        neck = MODELS.build(
            dict(
                type='SimpleFeaturePyramid',
                backbone_channel=8,
                out_channels=4,
                _scope_=scope))
    assert isinstance(neck, SimpleFeaturePyramid)


def test_shapes_seg_dataset_reads_generated_ade20k(downstream_data):
    """mmseg's own loading pipeline on the generated data: 5 shape classes,
    background (0) -> 255 ignored, class c stored as c + 1 -> c."""
    from mmseg.registry import DATASETS
    from PIL import Image

    from mmhybrid.datasets import SHAPE_CLASSES
    root = downstream_data['ade20k']
    with DefaultScope.overwrite_default_scope('mmseg'):
        ds = DATASETS.build(
            dict(
                type='ShapesSegDataset',
                data_root=root,
                data_prefix=dict(
                    img_path='images/training',
                    seg_map_path='annotations/training'),
                pipeline=[
                    dict(type='LoadImageFromFile'),
                    dict(type='LoadAnnotations', reduce_zero_label=True)
                ]))
    assert len(ds) == 8
    assert ds.metainfo['classes'] == tuple(SHAPE_CLASSES)
    assert len(ds.metainfo['palette']) == len(SHAPE_CLASSES)
    item = ds[0]
    raw = np.array(Image.open(item['seg_map_path']))
    seg = item['gt_seg_map']
    assert seg.shape == raw.shape == (64, 64)
    assert np.all(seg[raw == 0] == 255)
    fg = raw > 0
    assert fg.any() and np.all(seg[fg] == raw[fg] - 1)
    assert set(np.unique(seg[fg])) <= set(range(len(SHAPE_CLASSES)))
