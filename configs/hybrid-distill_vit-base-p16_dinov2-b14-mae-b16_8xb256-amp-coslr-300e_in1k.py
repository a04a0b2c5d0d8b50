# Hybrid Distillation of a ViT-B/16 from DINOv2 ViT-B/14 (features) + MAE
# ViT-B/16 (relations) on ImageNet-1K, 300 epochs, 8 GPUs x 256 images: the
# flagship's schedule (configs/hybrid_vitb.py) with today's feature teacher.
#   tools/dist_train.sh configs/hybrid-distill_vit-base-p16_dinov2-b14-mae-b16_8xb256-amp-coslr-300e_in1k.py 8  # noqa
# The teachers are named as mmpretrain names them: DINOv2 is mmpretrain's own
# model-zoo entry (VisionTransformer with layer scale, 14-px patches), built
# and loaded by mmpretrain from its metafile's weights; it sees 196-px images
# (grid='resize') so that its 14x14 tokens line up with the student's.
_base_ = ['./hybrid_vitb.py']

# mmpretrain's DINOv2-B/14 (configs/dinov2/metafile.yml)
dinov2_b14_ckpt = 'https://download.openmmlab.com/mmpretrain/v1.0/dinov2/vit-base-p14_dinov2-pre_3rdparty_20230426-ba246503.pth'  # noqa

model = dict(
    _delete_=True,
    type='HybridDistill',
    data_preprocessor={{_base_.model.data_preprocessor}},
    backbone={{_base_.model.backbone}},
    init_cfg={{_base_.model.init_cfg}},
    teachers=dict(
        dinov2=dict(
            teacher=dict(
                type='ZooTeacher',
                model='vit-base-p14_dinov2-pre_3rdparty',
                checkpoint=dinov2_b14_ckpt,
                autocast_dtype='bfloat16'),
            feature=dict(
                neck=dict(
                    type='DistillProjectionNeck',
                    in_channels=768,
                    out_channels=768,
                    proj_type='linear'),
                loss={{_base_.model.loss_feat}}),
            grid='resize'),
        mae=dict(
            teacher={{_base_.mae_b16_teacher}},
            relation=dict(loss={{_base_.model.loss_rel}}))),
    importance_source='dinov2',
    token_selection='sample')
