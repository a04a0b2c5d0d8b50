# CPU miniature of the ADE20K UperNet benchmark on the generated ADE20K-style
# shapes data (tools/data/make_shapes.py; 5 classes, background ignored as
# ADE20K's "other"): the full-size config with the demo student's tiny ViT, 64
# x 64 crops, BatchNorm instead of SyncBN, a few iterations, sliding-window
# inference (48 px windows, stride 32) and mIoU through mmseg's IoUMetric.
_base_ = [
    '../mmseg/upernet_vit-base-p16_hybrid-distill-300e-pre_8xb2-160k_ade20k-512x512.py'  # noqa: E501
]

data_root = 'data/shapes/ade20k/'
pretrained = 'work_dirs/demo/student_mmseg.pth'
crop_size = (64, 64)
norm_cfg = dict(type='BN', requires_grad=True)

data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        arch=dict(
            _delete_=True,
            embed_dims=96,
            num_layers=4,
            num_heads=3,
            feedforward_channels=384),
        img_size=crop_size,
        patch_size=8,
        out_indices=[0, 1, 2, 3],
        init_cfg=dict(checkpoint=pretrained)),
    neck=dict(embed_dim=96, norm_cfg=norm_cfg),
    decode_head=dict(
        in_channels=[96, 96, 96, 96],
        channels=64,
        num_classes=5,
        norm_cfg=norm_cfg),
    auxiliary_head=dict(
        in_channels=96, channels=32, num_classes=5, norm_cfg=norm_cfg),
    test_cfg=dict(mode='slide', crop_size=(48, 48), stride=(32, 32)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(
        type='RandomResize',
        scale=(128, 64),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 64), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        _delete_=True,
        type='ShapesSegDataset',
        data_root=data_root,
        data_prefix=dict(
            img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        _delete_=True,
        type='ShapesSegDataset',
        data_root=data_root,
        data_prefix=dict(
            img_path='images/validation',
            seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

# CPU: plain OptimWrapper (AmpOptimWrapper asserts a GPU)
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=1e-3))
max_iters = 4
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=2,
        end=max_iters,
        by_epoch=False)
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1),
    visualization=dict(type='SegVisualizationHook', draw=False))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
