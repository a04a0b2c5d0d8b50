# ImageNet-1K fine-tuning of a Hybrid Distill ViT-L/16 student. The paper gives
# no ViT-L fine-tuning recipe; this is mmpretrain's MAE ViT-L one, inherited:
# 50 epochs, batch 8 x 128, AdamW lr 4e-3, layer decay 0.75, drop path 0.2,
# same augmentation as ViT-B (RandAugment, mixup 0.8 / cutmix 1.0, label
# smoothing 0.1).
#
#   tools/benchmarks/dist_downstream.sh in1k-ft-l PRETRAIN.pth 8
_base_ = 'mmpretrain::mae/benchmarks/vit-large-p16_8xb128-coslr-50e_in1k.py'  # noqa: E501

custom_imports = dict(imports=['mmhybrid'], allow_failed_imports=False)

# a pretraining checkpoint (backbone.* + neck.*) or a converter's output
pretrained = 'pretrain/hybrid_vitl_mmpretrain.pth'

model = dict(
    backbone=dict(
        type='StrictPretrainedViT',  # see the ViT-B config
        out_type='cls_token',  # see the ViT-B config
        final_norm=True,
        init_cfg=dict(_delete_=True, type='Pretrained',
                      checkpoint=pretrained)))

optim_wrapper = dict(
    type='AmpOptimWrapper',
    constructor='ViTLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(_delete_=True, layer_decay_rate=0.75))

auto_scale_lr = dict(base_batch_size=1024)
