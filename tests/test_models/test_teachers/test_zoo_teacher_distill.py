"""``ZooTeacher`` inside ``HybridDistill``: three mmpretrain families as
teachers of one tiny student, a training step through the algorithm.

DINOv2 with registers (/14, features, its input resized so that its grid is the
student's), EVA-02 (/14, features, its tokens interpolated to the student's
grid) and BEiT v2 (relations with its relative position bias, and the ranking
of tokens by its [CLS] attention).
"""
import torch
from mmpretrain.registry import MODELS

from mmhybrid.models.teachers import ZooTeacher
from mmhybrid.testing import IMAGENET_MEAN, IMAGENET_STD, tiny_vit_cfg

ARCH = dict(embed_dims=48, num_layers=3, num_heads=3, feedforward_channels=96)


def _neck(width: int) -> dict:
    return dict(
        type='DistillProjectionNeck', in_channels=48, out_channels=width)


def _cfg() -> dict:
    return dict(
        type='HybridDistill',
        data_preprocessor=dict(
            type='SelfSupDataPreprocessor',
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            to_rgb=True),
        backbone=tiny_vit_cfg(ARCH, img_size=32, patch_size=8),
        teachers=dict(
            dinov2=dict(
                teacher=dict(
                    type='ZooTeacher',
                    model=dict(
                        type='RegisterViT',
                        arch=ARCH,
                        img_size=42,
                        patch_size=14,
                        layer_scale_init_value=1e-5,
                        num_register_tokens=2),
                    checkpoint=False),
                feature=dict(neck=_neck(48)),
                grid='resize'),
            eva02=dict(
                teacher=dict(
                    type='ZooTeacher',
                    model=dict(
                        type='mmpretrain.ViTEVA02',
                        arch=dict(ARCH, embed_dims=36),
                        img_size=42,
                        patch_size=14,
                        sub_ln=True,
                        final_norm=False,
                        out_type='avg_featmap'),
                    checkpoint=False,
                    mean=[127.5] * 3,
                    std=[127.5] * 3),
                feature=dict(neck=_neck(36), tokens='patches'),
                grid='interpolate'),
            beit=dict(
                teacher=dict(
                    type='ZooTeacher',
                    model=dict(
                        type='mmpretrain.BEiTViT',
                        arch=ARCH,
                        img_size=32,
                        patch_size=8,
                        use_rel_pos_bias=True),
                    checkpoint=False),
                relation=dict(relation_pairs=[(0, 0), (1, 2)]))),
        importance_source='beit',
        mask_ratio=0.5)


def test_three_zoo_teachers_train_a_student():
    torch.manual_seed(0)
    model = MODELS.build(_cfg())
    model.init_weights()
    teachers = model.teachers
    assert all(isinstance(t, ZooTeacher) for t in teachers.values())
    # grid 'resize': the /14 teacher now sees 56 px, a 4x4 grid as the
    # student's; 'interpolate' leaves the teacher at its own 3x3
    assert teachers['dinov2'].grid == (4, 4)
    assert teachers['dinov2'].img_size == (56, 56)
    assert teachers['eva02'].grid == (3, 3)
    # teachers are outside the module tree: not trained, not saved
    assert not any(
        k.startswith(('dinov2', 'eva02', 'beit', '_teachers'))
        for k in model.state_dict())
    x = torch.randn(2, 3, 32, 32)  # as normalised by the data preprocessor
    losses = model.loss(x)
    names = {k for k in losses if k.startswith('loss')}
    assert names == {'loss_feat_dinov2', 'loss_feat_eva02', 'loss_rel_beit'}
    total = sum(losses[k] for k in names)
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for t in teachers.values()
               for p in t.parameters())
