# Demo Hybrid Distillation on CPU: tiny student from the two demo teachers
# (run their configs first, or `make demo`, which does everything in order).
_base_ = ['./_base_shapes.py']

teacher_feat_ckpt = 'work_dirs/demo/teacher_sup/iter_300.pth'
teacher_rel_ckpt = 'work_dirs/demo/teacher_mae/iter_300.pth'

model = dict(
    type='HybridDistill',
    data_preprocessor=dict(
        type='SelfSupDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(
        type='HybridViT',
        arch={{_base_.tiny_arch}},
        img_size={{_base_.img_size}},
        patch_size={{_base_.patch_size}},
        out_type='raw'),
    neck=dict(type='DistillProjectionNeck', in_channels=96, out_channels=96),
    teacher_feat=dict(
        type='FrozenTeacher',
        backbone=dict(
            type='HybridViT',
            arch={{_base_.tiny_arch}},
            img_size={{_base_.img_size}},
            patch_size={{_base_.patch_size}},
            out_type='raw'),
        checkpoint=teacher_feat_ckpt,
        checkpoint_format='mmpretrain'),
    teacher_rel=dict(
        type='FrozenTeacher',
        backbone=dict(
            type='HybridViT',
            arch={{_base_.tiny_arch}},
            img_size={{_base_.img_size}},
            patch_size={{_base_.patch_size}},
            out_type='raw'),
        checkpoint=teacher_rel_ckpt,
        checkpoint_format='mmpretrain'),
    loss_feat=dict(type='FeatureDistillLoss', loss_type='smooth_l1', beta=2.0),
    loss_rel=dict(type='RelationDistillLoss', loss_type='kl'),
    # Xavier-uniform as both demo teachers (see the supervised teacher's
    # config)
    init_cfg=[
        dict(type='Xavier', layer='Linear', distribution='uniform'),
        dict(type='Constant', layer='LayerNorm', val=1.0, bias=0.0)
    ])

custom_hooks = [
    dict(type='ProgressiveMaskingHook', final_ratio=0.5, schedule='linear')
]
