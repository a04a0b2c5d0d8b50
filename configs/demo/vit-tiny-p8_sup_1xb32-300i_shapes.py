# Demo feature teacher Tc: a supervised ViT classifier (mmpretrain's own
# ImageClassifier), trained from scratch on the shapes data.
_base_ = ['./_base_shapes.py']

model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(
        num_classes={{_base_.num_classes}},
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(
        type='VisionTransformer',
        arch={{_base_.tiny_arch}},
        img_size={{_base_.img_size}},
        patch_size={{_base_.patch_size}},
        drop_path_rate=0.1,
        out_type='cls_token'),
    head=dict(
        type='LinearClsHead',
        num_classes={{_base_.num_classes}},
        in_channels=96,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1)),
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
        dict(type='Constant', layer='LayerNorm', val=1.0, bias=0.0)
    ])

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale={{_base_.img_size}},
         crop_ratio_range=(0.5, 1.0), backend='pillow'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=32,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='CustomDataset',
        data_root={{_base_.data_root}},
        data_prefix='train',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64,
    num_workers=2,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='CustomDataset',
        data_root={{_base_.data_root}},
        data_prefix='val',
        pipeline=test_pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

# CPU: plain OptimWrapper (AmpOptimWrapper asserts a GPU)
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'ln': dict(decay_mult=0.0),
        'bias': dict(decay_mult=0.0),
        'pos_embed': dict(decay_mult=0.),
        'cls_token': dict(decay_mult=0.)
    }))
max_iters = 300
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=30, end=max_iters)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
val_cfg = dict()
test_cfg = dict()
