# ViT-L/16 student from CLIP ViT-L/14 (features) + MAE ViT-L/16 (relations),
# ImageNet-1K, 300 epochs, 8 GPUs x 128 images (x 2 gradient accumulation would
# restore 2048 if memory allows a smaller per-GPU batch only).
#   tools/dist_train.sh configs/hybrid_vitl.py 8
_base_ = './hybrid_vitb.py'

clip_l14_ckpt = 'https://download.openmmlab.com/mmclassification/v0/clip/vit-large-p14_clip-openai-pre_3rdparty_20230517-95e2af0b.pth'  # noqa
mae_l16_ckpt = 'https://download.openmmlab.com/mmselfsup/1.x/mae/mae_vit-large-p16_8xb512-fp16-coslr-1600e_in1k/mae_vit-large-p16_8xb512-fp16-coslr-1600e_in1k_20220825-cc7e98c9.pth'  # noqa

model = dict(
    # Feature Distillation's value for ViT-L from CLIP-L/14, 300 epochs
    backbone=dict(arch='l', drop_path_rate=0.3),
    neck=dict(in_channels=1024, out_channels=1024),
    teacher_feat=dict(
        # 196 px through a /14 patch embedding = the student's 14 x 14 grid
        backbone=dict(arch='l', img_size=196, patch_size=14),
        checkpoint=clip_l14_ckpt,
        checkpoint_format='mmpretrain'),
    teacher_rel=dict(
        backbone=dict(arch='l'),
        checkpoint=mae_l16_ckpt,
        checkpoint_format='mmpretrain'))

train_dataloader = dict(batch_size=128)
optim_wrapper = dict(optimizer=dict(lr=1.5e-4 * 1024 / 256))
auto_scale_lr = dict(base_batch_size=1024)
