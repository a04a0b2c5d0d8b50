# DeiT-B (supervised) + MAE-B teachers, the setting whose IN-1K fine-tune the
# paper reports as 83.7. DeiT uses ImageNet normalisation, like the student's
# input.
_base_ = './hybrid_vitb.py'

deit_b_ckpt = 'https://download.openmmlab.com/mmclassification/v0/deit/deit-base_3rdparty_pt-16xb64_in1k_20211124-6f40c188.pth'  # noqa

model = dict(
    # Feature Distillation's value for a ViT-B distilled from DeiT-B, 300
    # epochs
    backbone=dict(drop_path_rate=0.3),
    teacher_feat=dict(
        _delete_=True,
        type='FrozenTeacher',
        backbone=dict(
            type='HybridViT',
            arch='deit-base',
            img_size=224,
            patch_size=16,
            out_type='raw'),
        checkpoint=deit_b_ckpt,
        checkpoint_format='mmpretrain',
        autocast_dtype='bfloat16'))
