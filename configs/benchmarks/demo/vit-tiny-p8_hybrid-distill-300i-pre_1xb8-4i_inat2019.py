# CPU miniature of the iNaturalist 2019 transfer benchmark on generated data in
# the official layout (train2019.json, val2019.json, train_val2019/): the
# full-size config (iBOT's transfer recipe, INaturalist2019, repeated
# augmentation, best top-1) with the demo student's tiny ViT, 64 px images and
# a few iterations.
_base_ = [
    '../mmpretrain/vit-base-p16_hybrid-distill-300e-pre_8xb96-coslr-360e_inat2019.py'  # noqa: E501
]

data_root = 'data/transfer/inat2019/'
pretrained = 'work_dirs/demo/student_mmpretrain.pth'
img_size = 64

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
        init_cfg=dict(checkpoint=pretrained)),
    head=dict(in_channels=96))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=img_size,
        backend='pillow',
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(pad_val=[104, 116, 124], interpolation='bicubic')),
    dict(
        type='RandomErasing',
        erase_prob=0.1,
        mode='rand',
        min_area_ratio=0.02,
        max_area_ratio=1 / 3,
        fill_color=[103.53, 116.28, 123.675],
        fill_std=[57.375, 57.12, 58.395]),
    dict(type='PackInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='ResizeEdge',
        scale=73,
        edge='short',
        backend='pillow',
        interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs')
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=20,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

# CPU: plain OptimWrapper (AmpOptimWrapper asserts a GPU)
optim_wrapper = dict(type='OptimWrapper')
max_iters = 4
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2),
    dict(
        type='CosineAnnealingLR',
        by_epoch=False,
        begin=2,
        end=max_iters,
        eta_min=1e-6)
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
auto_scale_lr = dict(base_batch_size=8)
