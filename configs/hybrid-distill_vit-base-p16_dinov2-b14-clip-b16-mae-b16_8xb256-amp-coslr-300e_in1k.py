# Hybrid Distillation from three teachers (AM-RADIO's mix, plus relations):
# DINOv2 ViT-B/14 and CLIP ViT-B/16 features, MAE ViT-B/16 relations; a
# ViT-B/16 student on ImageNet-1K, the flagship's schedule
# (configs/hybrid_vitb.py).
#   tools/dist_train.sh configs/hybrid-distill_vit-base-p16_dinov2-b14-clip-b16-mae-b16_8xb256-amp-coslr-300e_in1k.py 8  # noqa
# Each feature teacher has its own head (necks.dinov2, necks.clip) and loss
# (loss_feat_dinov2, loss_feat_clip); DINOv2's [CLS] attention ranks the
# tokens for progressive masking.
_base_ = [
    './hybrid-distill_vit-base-p16_dinov2-b14-mae-b16_8xb256-amp-coslr-300e_in1k.py'  # noqa
]

model = dict(
    teachers=dict(
        clip=dict(
            teacher={{_base_.clip_b16_teacher}},
            feature=dict(
                neck=dict(
                    type='DistillProjectionNeck',
                    in_channels=768,
                    out_channels=768,
                    proj_type='linear'),
                loss={{_base_.model.teachers.dinov2.feature.loss}}))))
