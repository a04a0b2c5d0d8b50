# COCO instance segmentation with a Hybrid Distill ViT-B/16 student: Mask R-CNN
# on a plain ViT with ViTDet's simple feature pyramid (Li et al. 2022),
# large-scale jitter (1024 x 1024, scale 0.1-2.0), 100 epochs (mmdet's LSJ
# recipe: 25 epochs of a 4x repeated dataset), batch 64 (8 GPUs x 8), AdamW lr
# 1e-4, weight decay 0.1, layer-wise lr decay 0.7 and drop path 0.1 (ViTDet's
# ViT-B values), a 2-conv RPN and a 4-conv + 1-fc box head with LayerNorm as
# ViTDet. The backbone (StrictPretrainedViT) is mmpretrain's own
# VisionTransformer with global attention in every block (ViTDet's window
# attention / relative positions are not used), so the pretrained keys need no
# renaming.
#
#   tools/benchmarks/dist_downstream.sh coco PRETRAIN.pth 8
# or, by hand, with the pretraining checkpoint itself
# (work_dirs/.../epoch_300.pth) or a converter's output
# (tools/model_converters/hybrid2mmdet.py):
#   tools/dist_train.sh THIS_CONFIG 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=PRETRAIN.pth
# The backbone loads every tensor or stops with an ERROR before training;
# pos_embed is resized to the 64 x 64 grid.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::common/lsj-100e_coco-instance.py',
]

custom_imports = dict(imports=['mmhybrid'], allow_failed_imports=False)

# a pretraining checkpoint (backbone.* + neck.*) or hybrid2mmdet.py's output
pretrained = 'pretrain/hybrid_vitb_mmdet.pth'
image_size = (1024, 1024)
norm_cfg = dict(type='mmpretrain.LN2d', requires_grad=True)
batch_augments = [
    dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)
]

model = dict(
    data_preprocessor=dict(pad_size_divisor=32, batch_augments=batch_augments),
    backbone=dict(
        _delete_=True,
        type='mmpretrain.StrictPretrainedViT',
        arch='base',
        img_size=image_size,
        patch_size=16,
        drop_path_rate=0.1,
        out_type='featmap',
        out_indices=[11],
        final_norm=True,  # every pretrained tensor used
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(
        _delete_=True,
        type='SimpleFeaturePyramid',
        backbone_channel=768,
        out_channels=256,
        scale_factors=(4.0, 2.0, 1.0, 0.5),  # strides 4, 8, 16, 32 (+ 64)
        num_outs=5,
        norm_cfg=norm_cfg),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead',
            conv_out_channels=256,
            norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))

# ViTDet's test-time resizing: longest side 1024, padded to 1024 x 1024
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='Pad', size=image_size, pad_val=dict(img=(114, 114, 114))),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
# mmdet collates with pseudo_collate (tools/train.py defaults to mmpretrain's
# default_collate, which cannot batch boxes and masks)
train_dataloader = dict(
    batch_size=8,
    num_workers=8,  # x 8 GPUs = 64
    collate_fn=dict(type='pseudo_collate'))
val_dataloader = dict(
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    optimizer=dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
    constructor='ViTLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.7),
    clip_grad=None)

# 250 warm-up iterations, steps at 22 and 24 of 25 (repeated-dataset) epochs,
# i.e. at ~89 % and ~96 % of training as ViTDet
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(
        type='MultiStepLR',
        begin=0,
        end={{_base_.max_epochs}},
        by_epoch=True,
        milestones=[22, 24],
        gamma=0.1)
]

auto_scale_lr = dict(enable=False, base_batch_size=64)
