# CPU miniature of the COCO Mask R-CNN benchmark on the generated COCO-style
# shapes data (tools/data/make_shapes.py): the full-size config (mmpretrain ViT
# + simple feature pyramid, LSJ, layer decay) with the demo student's tiny ViT
# (8 px patches; the pyramid scales 2, 1, 1/2, 1/4 give the usual strides 4-32,
# +64), 96 x 96 large-scale-jitter crops of the 64 px images (so the position
# embedding is resized 8 x 8 -> 12 x 12, by the converter or by the backbone's
# strict load of a raw pretraining checkpoint), narrow heads, a few iterations,
# bbox and segm AP through mmdet's CocoMetric (pycocotools).
_base_ = [
    '../mmdet/mask-rcnn_vit-base-p16_hybrid-distill-300e-pre_sfp_8xb8-lsj-100e_coco.py'  # noqa: E501
]

data_root = 'data/shapes/coco/'
pretrained = 'work_dirs/demo/student_mmdet.pth'
image_size = (96, 96)
classes = ('circle', 'ring', 'square', 'star', 'triangle')  # SHAPE_CLASSES
norm_cfg = dict(type='mmpretrain.LN2d', requires_grad=True)
batch_augments = [
    dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)
]

model = dict(
    data_preprocessor=dict(batch_augments=batch_augments),
    backbone=dict(
        arch=dict(
            _delete_=True,
            embed_dims=96,
            num_layers=4,
            num_heads=3,
            feedforward_channels=384),
        img_size=image_size,
        patch_size=8,
        out_indices=[3],
        init_cfg=dict(checkpoint=pretrained)),
    neck=dict(
        backbone_channel=96,
        out_channels=64,
        scale_factors=(2.0, 1.0, 0.5, 0.25)),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(
            in_channels=64,
            conv_out_channels=64,
            fc_out_channels=128,
            num_classes=5),
        mask_roi_extractor=dict(out_channels=64),
        mask_head=dict(in_channels=64, conv_out_channels=64, num_classes=5)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=100), rcnn=dict(max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='RandomResize',
        scale=image_size,
        ratio_range=(0.5, 1.5),
        keep_ratio=True),
    dict(
        type='RandomCrop',
        crop_type='absolute_range',
        crop_size=image_size,
        recompute_bbox=True,
        allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='Pad', size=image_size, pad_val=dict(img=(114, 114, 114))),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        _delete_=True,
        type='CocoDataset',
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        _delete_=True,
        type='CocoDataset',
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

# CPU: plain OptimWrapper (AmpOptimWrapper asserts a GPU)
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=1e-4))
max_iters = 4
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2)
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
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
auto_scale_lr = dict(base_batch_size=2)
