# Demo relation teacher Tm: an MAE (mmpretrain's own MAE algorithm) pretrained
# from scratch on the shapes data.
_base_ = ['./_base_shapes.py']

model = dict(
    type='MAE',
    data_preprocessor=dict(
        type='SelfSupDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(
        type='MAEViT',
        arch={{_base_.tiny_arch}},
        img_size={{_base_.img_size}},
        patch_size={{_base_.patch_size}},
        mask_ratio=0.75),
    neck=dict(
        type='MAEPretrainDecoder',
        num_patches=64,
        patch_size={{_base_.patch_size}},
        in_chans=3,
        embed_dim=96,
        decoder_embed_dim=64,
        decoder_depth=2,
        decoder_num_heads=4,
        mlp_ratio=4.),
    head=dict(
        type='MAEPretrainHead',
        norm_pix=True,
        patch_size={{_base_.patch_size}},
        loss=dict(type='PixelReconstructionLoss', criterion='L2')),
    init_cfg=[
        dict(type='Xavier', layer='Linear', distribution='uniform'),
        dict(type='Constant', layer='LayerNorm', val=1.0, bias=0.0)
    ])

optim_wrapper = dict(
    optimizer=dict(lr=1.5e-3),
    paramwise_cfg=dict(custom_keys={'mask_token': dict(decay_mult=0.)}))
