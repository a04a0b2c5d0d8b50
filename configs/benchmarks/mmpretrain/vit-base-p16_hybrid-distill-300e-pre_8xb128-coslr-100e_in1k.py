# ImageNet-1K fine-tuning of a Hybrid Distill ViT-B/16 student
# (docs/method.md): 100 epochs, batch 8 x 128, AdamW lr 2e-3, layer-wise lr
# decay 0.65, drop path 0.1, RandAugment (9/0.5), random erasing 0.25, mixup
# 0.8 / cutmix 1.0, label smoothing 0.1. Everything but the head and the
# optimizer constructor is mmpretrain's own MAE fine-tuning recipe, inherited
# (not copied).
#
#   tools/benchmarks/dist_downstream.sh in1k-ft PRETRAIN.pth 8
# or, by hand, with the pretraining checkpoint itself
# (work_dirs/.../epoch_300.pth) or a converter's output
# (tools/model_converters/hybrid2mmpretrain.py):
#   tools/dist_train.sh THIS_CONFIG 8 --cfg-options \
#       model.backbone.init_cfg.checkpoint=PRETRAIN.pth
# The backbone (StrictPretrainedViT: mmpretrain's VisionTransformer, same keys)
# loads every tensor or stops with an ERROR before training; pos_embed is
# resized.
_base_ = 'mmpretrain::mae/benchmarks/vit-base-p16_8xb128-coslr-100e_in1k.py'  # noqa: E501

custom_imports = dict(imports=['mmhybrid'], allow_failed_imports=False)

# a pretraining checkpoint (backbone.* + neck.*) or a converter's output; a
# prefix='backbone.' in init_cfg is accepted but not needed
pretrained = 'pretrain/hybrid_vitb_mmpretrain.pth'

model = dict(
    backbone=dict(
        type='StrictPretrainedViT',
        # [CLS] token after the final norm: the student's [CLS] and final norm
        # are distilled (the feature loss covers [CLS]), so every pretrained
        # tensor is used and the backbone loads with zero missing keys.
        # MAE/MILAN-style global pooling: out_type='avg_featmap',
        # final_norm=False, and convert with --allow 'ln[12]\.' / init_cfg
        # allow=r'^ln[12]\.' (ln2, the pooled-feature norm, starts fresh).
        out_type='cls_token',
        final_norm=True,
        init_cfg=dict(_delete_=True, type='Pretrained',
                      checkpoint=pretrained)))

# fp16 autocast with dynamic loss scaling (V100 and newer)
optim_wrapper = dict(
    type='AmpOptimWrapper',
    constructor='ViTLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(_delete_=True, layer_decay_rate=0.65))

auto_scale_lr = dict(base_batch_size=1024)
