# ADE20K semantic segmentation with a Hybrid Distill ViT-B/16 student
# (docs/method.md): UperNet, 512 x 512 crops, 160k iterations, batch 16 (8 GPUs
# x 2), AdamW lr 1e-4, layer-wise lr decay 0.65, drop path 0.1, sliding-window
# inference (512 crops, stride 341). mmseg's MAE UperNet config is inherited;
# only the backbone (StrictPretrainedViT: mmpretrain's own VisionTransformer,
# so the pretrained keys need no renaming) and the optimizer constructor
# change.
#
#   tools/benchmarks/dist_downstream.sh ade20k PRETRAIN.pth 8
# or, by hand, with the pretraining checkpoint itself
# (work_dirs/.../epoch_300.pth) or a converter's output
# (tools/model_converters/hybrid2mmseg.py):
#   tools/dist_train.sh THIS_CONFIG 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=PRETRAIN.pth
# The backbone loads every tensor or stops with an ERROR before training;
# pos_embed is resized to the 32 x 32 grid.
_base_ = 'mmseg::mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py'

custom_imports = dict(imports=['mmhybrid'], allow_failed_imports=False)

# a pretraining checkpoint (backbone.* + neck.*) or hybrid2mmseg.py's output
pretrained = 'pretrain/hybrid_vitb_mmseg.pth'
crop_size = (512, 512)

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='mmpretrain.StrictPretrainedViT',
        arch='base',
        img_size=crop_size,
        patch_size=16,
        drop_path_rate=0.1,
        out_type='featmap',
        out_indices=[3, 5, 7, 11],
        # keeps every pretrained tensor (the last map is the normed one the
        # feature loss was taken on); zero missing / unexpected keys
        final_norm=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    # Feature2Pyramid (4x, 2x, 1x, 0.5x) and UPerHead from the MAE config
    neck=dict(embed_dim=768, rescales=[4, 2, 1, 0.5]),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

# fp16 autocast with dynamic loss scaling (replaces the MAE config's `fp16`
# field)
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    optimizer=dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='ViTLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.65))
fp16 = None

# mmseg collates with pseudo_collate (tools/train.py defaults to mmpretrain's
# default_collate, which cannot stack the variable-size crops' annotations)
train_dataloader = dict(
    batch_size=2,  # x 8 GPUs = 16
    collate_fn=dict(type='pseudo_collate'))
val_dataloader = dict(collate_fn=dict(type='pseudo_collate'))
test_dataloader = val_dataloader
auto_scale_lr = dict(enable=False, base_batch_size=16)
