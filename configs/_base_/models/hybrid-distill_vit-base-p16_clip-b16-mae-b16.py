# Hybrid Distillation, ViT-B/16 student, CLIP ViT-B/16 (features) + MAE
# ViT-B/16 (relations) teachers. Teachers are read from their own files at
# init_weights(); they are never trained and never saved with the student.

# OpenAI CLIP normalisation (0-255 RGB); the data preprocessor uses ImageNet's.
clip_mean = [0.48145466 * 255, 0.4578275 * 255, 0.40821073 * 255]
clip_std = [0.26862954 * 255, 0.26130258 * 255, 0.27577711 * 255]

# OpenAI CLIP ViT-B/16 state dict (the file mmpretrain's MILAN uses as its
# target).
clip_b16_ckpt = 'https://download.openmmlab.com/mmselfsup/1.x/target_generator_ckpt/clip_vit_base_16.pth.tar'  # noqa
# MAE ViT-B/16, 1600 epochs, as published by mmpretrain/mmselfsup.
mae_b16_ckpt = 'https://download.openmmlab.com/mmselfsup/1.x/mae/mae_vit-base-p16_8xb512-fp16-coslr-1600e_in1k/mae_vit-base-p16_8xb512-fp16-coslr-1600e_in1k_20220825-f7569ca2.pth'  # noqa

# The two teachers, by name: configs with other teachers reuse them
# (teachers=dict(mae=dict(teacher={{_base_.mae_b16_teacher}}, ...))).
clip_b16_teacher = dict(
    type='FrozenTeacher',
    backbone=dict(
        type='HybridViT',
        arch='b',
        img_size=224,
        patch_size=16,
        pre_norm=True,
        norm_cfg=dict(type='LN', eps=1e-5),
        layer_cfgs=dict(act_cfg=dict(type='mmpretrain.QuickGELU')),
        out_type='raw'),
    checkpoint=clip_b16_ckpt,
    checkpoint_format='openai_clip',
    mean=clip_mean,
    std=clip_std,
    autocast_dtype='bfloat16',
    # True compiles the teacher (one graph per batch size);
    # not yet timed on a GPU, see docs/speed.md
    compile=False)

mae_b16_teacher = dict(
    type='FrozenTeacher',
    backbone=dict(
        type='HybridViT',
        arch='b',
        img_size=224,
        patch_size=16,
        out_type='raw'),
    checkpoint=mae_b16_ckpt,
    checkpoint_format='mmpretrain',
    autocast_dtype='bfloat16',
    compile=False)

model = dict(
    type='HybridDistill',
    data_preprocessor=dict(
        type='SelfSupDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(
        type='HybridViT',
        arch='b',
        img_size=224,
        patch_size=16,
        # Feature Distillation's value for a ViT-B distilled from CLIP-B/16 for
        # 300 epochs at this lr (its fd_pretrain__clip_vit_base__img224__300ep)
        drop_path_rate=0.2,
        out_type='raw',
        final_norm=True),
    neck=dict(
        type='DistillProjectionNeck',
        in_channels=768,
        out_channels=768,
        proj_type='linear'),
    teacher_feat=clip_b16_teacher,
    teacher_rel=mae_b16_teacher,
    loss_feat=dict(
        type='FeatureDistillLoss',
        loss_type='smooth_l1',
        beta=2.0,
        whiten_target=True,
        loss_weight=1.0),
    loss_rel=dict(
        type='RelationDistillLoss',
        loss_type='kl',
        use_vv=False,
        loss_weight=1.0,
        # torch.compile the KL over the (B, H, L, L) maps on CUDA: measured
        # faster and lighter by tools/speed/gpu_check.sh (docs/benchmarks/)
        compile=True),
    # None = student blocks 0..10 with teacher blocks 0..10 (last block:
    # features)
    relation_pairs=None,
    importance_source='feat',
    token_selection='sample',
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
        dict(type='Constant', layer='LayerNorm', val=1.0, bias=0.0)
    ])
