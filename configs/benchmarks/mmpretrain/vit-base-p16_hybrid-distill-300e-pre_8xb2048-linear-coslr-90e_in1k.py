# ImageNet-1K linear probing of a Hybrid Distill ViT-B/16 student: frozen
# backbone, [CLS] after the final norm, BatchNorm without affine + linear
# classifier, LARS lr 6.4 for batch 8 x 2048, 90 epochs: mmpretrain's MAE
# linear-probe recipe, inherited.
#
#   tools/benchmarks/dist_downstream.sh in1k-linear PRETRAIN.pth 8
_base_ = 'mmpretrain::mae/benchmarks/vit-base-p16_8xb2048-linear-coslr-90e_in1k.py'  # noqa: E501

custom_imports = dict(imports=['mmhybrid'], allow_failed_imports=False)

# a pretraining checkpoint (backbone.* + neck.*) or a converter's output
pretrained = 'pretrain/hybrid_vitb_mmpretrain.pth'

model = dict(
    backbone=dict(
        type='StrictPretrainedViT',  # see the ViT-B config
        init_cfg=dict(_delete_=True, type='Pretrained',
                      checkpoint=pretrained)))
