# CPU miniature of the ImageNet linear-probe benchmark on the generated shapes
# data: the full-size config (frozen backbone, [CLS] + BatchNorm + linear head,
# LARS) with the demo student's tiny ViT, 64 px images and a few iterations.
_base_ = [
    '../mmpretrain/vit-base-p16_hybrid-distill-300e-pre_8xb2048-linear-coslr-90e_in1k.py'  # noqa: E501
]

data_root = 'data/shapes/imagenet/'
pretrained = 'work_dirs/demo/student_mmpretrain.pth'
img_size = 64

data_preprocessor = dict(num_classes=5)
model = dict(
    backbone=dict(
        arch=dict(
            _delete_=True,
            embed_dims=96,
            num_layers=4,
            num_heads=3,
            feedforward_channels=384),
        img_size=img_size,
        patch_size=8,
        frozen_stages=4,
        init_cfg=dict(checkpoint=pretrained)),
    neck=dict(input_features=96),
    head=dict(num_classes=5, in_channels=96))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=img_size, backend='pillow'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs')
]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    drop_last=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        _delete_=True,
        type='CustomDataset',
        data_root=data_root,
        data_prefix='train',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=20,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        _delete_=True,
        type='CustomDataset',
        data_root=data_root,
        data_prefix='val',
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='LARS', lr=0.1, weight_decay=0.0, momentum=0.9))
max_iters = 4
param_scheduler = [
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=max_iters)
]
train_cfg = dict(
    _delete_=True,
    type='IterBasedTrainLoop',
    max_iters=max_iters,
    val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0, diff_rank_seed=False)
