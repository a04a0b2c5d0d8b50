# Demo feature teacher Tc (contrastive): mmpretrain's own MoCoV3 algorithm with
# a tiny ViT (MoCoV3ViT: fixed 2-d sin-cos position embedding, frozen patch
# projection as in MoCo v3), trained from scratch on the shapes data with
# mmpretrain's own two-view pipeline (MultiView). The paper's CL teachers are
# MoCo v3 / DINO / CLIP ViTs; this is the closest one mmpretrain registers.
_base_ = ['./_base_shapes.py']

# two views of every image: MoCo v3's augmentations at 64 px (crops of at
# least 30 % of the image, so that the shape usually stays in the view; no hue
# jitter: mmcv's adjust_hue overflows a uint8 under NumPy 2 for negative hue
# factors)
view_pipeline1 = [
    dict(
        type='RandomResizedCrop',
        scale={{_base_.img_size}},
        crop_ratio_range=(0.3, 1.),
        backend='pillow'),
    dict(
        type='RandomApply',
        transforms=[
            dict(
                type='ColorJitter',
                brightness=0.4,
                contrast=0.4,
                saturation=0.2,
                hue=0.)
        ],
        prob=0.8),
    dict(
        type='RandomGrayscale',
        prob=0.2,
        keep_channels=True,
        channel_weights=(0.114, 0.587, 0.2989)),
    dict(
        type='GaussianBlur',
        magnitude_range=(0.1, 2.0),
        magnitude_std='inf',
        prob=1.),
    dict(type='Solarize', thr=128, prob=0.),
    dict(type='RandomFlip', prob=0.5),
]
view_pipeline2 = [
    dict(
        type='RandomResizedCrop',
        scale={{_base_.img_size}},
        crop_ratio_range=(0.3, 1.),
        backend='pillow'),
    dict(
        type='RandomApply',
        transforms=[
            dict(
                type='ColorJitter',
                brightness=0.4,
                contrast=0.4,
                saturation=0.2,
                hue=0.)
        ],
        prob=0.8),
    dict(
        type='RandomGrayscale',
        prob=0.2,
        keep_channels=True,
        channel_weights=(0.114, 0.587, 0.2989)),
    dict(
        type='GaussianBlur',
        magnitude_range=(0.1, 2.0),
        magnitude_std='inf',
        prob=0.1),
    dict(type='Solarize', thr=128, prob=0.2),
    dict(type='RandomFlip', prob=0.5),
]
# (ResizeEdge + CenterCrop: a user's own folder brought to img_size first,
# as in the other demo configs; no-ops on the built-in data)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='ResizeEdge',
        scale={{_base_.img_size}},
        edge='short',
        backend='pillow'),
    dict(type='CenterCrop', crop_size={{_base_.img_size}}),
    dict(
        type='MultiView',
        num_views=[1, 1],
        transforms=[view_pipeline1, view_pipeline2]),
    dict(type='PackInputs')
]
# batch 32 (the base's): 600 iterations cost what 300 at batch 64 did, and
# gave the better teacher (issue 21: k-NN 91.4 % against 85.2 %)
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

temperature = 0.2
model = dict(
    type='MoCoV3',
    base_momentum=0.01,
    data_preprocessor=dict(
        type='SelfSupDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(
        type='MoCoV3ViT',
        arch={{_base_.tiny_arch}},
        img_size={{_base_.img_size}},
        patch_size={{_base_.patch_size}},
        stop_grad_conv1=True),
    neck=dict(
        type='NonLinearNeck',
        in_channels=96,
        hid_channels=512,
        out_channels=128,
        num_layers=3,
        with_bias=False,
        with_last_bn=True,
        with_last_bn_affine=False,
        with_last_bias=False,
        with_avg_pool=False),
    head=dict(
        type='MoCoV3Head',
        predictor=dict(
            type='NonLinearNeck',
            in_channels=128,
            hid_channels=512,
            out_channels=128,
            num_layers=2,
            with_bias=False,
            with_last_bn=True,
            with_last_bn_affine=False,
            with_last_bias=False,
            with_avg_pool=False),
        loss=dict(type='CrossEntropyLoss', loss_weight=2 * temperature),
        temperature=temperature))

optim_wrapper = dict(
    optimizer=dict(lr=1.5e-3, betas=(0.9, 0.999), weight_decay=0.1))
max_iters = 600
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=60),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=60, end=max_iters)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)
find_unused_parameters = True
