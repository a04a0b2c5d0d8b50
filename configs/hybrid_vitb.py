# Flagship: Hybrid Distillation of a ViT-B/16 from CLIP ViT-B/16 + MAE
# ViT-B/16 on ImageNet-1K, 300 epochs, 8 GPUs x 256 images, AdamW, bf16 AMP,
# cosine with warmup.
#   tools/dist_train.sh configs/hybrid_vitb.py 8
_base_ = [
    './_base_/models/hybrid-distill_vit-base-p16_clip-b16-mae-b16.py',
    'mmpretrain::_base_/datasets/imagenet_bs512_mae.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmhybrid'], allow_failed_imports=False)

# mmhybrid's runner (safe checkpoint reads, atomic saves, resume from the
# newest readable checkpoint, the _scope_-d collate_fn of mmpretrain:: bases),
# also when mmpretrain's own tools/train.py runs this config
runner_type = 'mmpretrain.HybridRunner'

train_dataloader = dict(batch_size=256, num_workers=10)

# lr = 1.5e-4 * total_batch / 256 (docs/method.md); 8 x 256 = 2048
# bf16 autocast without a GradScaler (mmhybrid.engine.BF16OptimWrapper): bf16
# needs no loss scaling, and the scaler's per-step inf check stalls the GPU
# pipeline. GPUs without bf16 (V100): the *-fp16-* configs.
# Gradient norm clipped at 3.0, as Feature Distillation does at this lr.
optim_wrapper = dict(
    type='BF16OptimWrapper',
    clip_grad=dict(max_norm=3.0),
    optimizer=dict(
        type='AdamW',
        lr=1.5e-4 * 2048 / 256,
        betas=(0.9, 0.95),
        weight_decay=0.05,
        fused=True),
    paramwise_cfg=dict(
        custom_keys={
            'ln': dict(decay_mult=0.0),
            'bias': dict(decay_mult=0.0),
            'pos_embed': dict(decay_mult=0.),
            'cls_token': dict(decay_mult=0.)
        }))

max_epochs = 300
warmup_epochs = 10
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-4,
        by_epoch=True,
        begin=0,
        end=warmup_epochs,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs - warmup_epochs,
        eta_min=1e-6,
        by_epoch=True,
        begin=warmup_epochs,
        end=max_epochs,
        convert_to_iter_based=True)
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)

# progressive redundant token masking: 0 -> 0.5 linearly over the whole run
custom_hooks = [
    dict(type='ProgressiveMaskingHook', final_ratio=0.5, schedule='linear'),
    # pre-emptible: a resumable mid-epoch checkpoint every 200 of an epoch's
    # 625 iterations (a hard kill loses at most ~3 min of 8 GPUs; a save costs
    # seconds), next to the epoch checkpoints; SIGTERM/SIGUSR1 save at once
    dict(type='PreemptionHook', interval=200),
    # per-layer attention distance, head spread and NMI of the student on 16
    # fixed images every 1000 iterations and each epoch end, the teachers'
    # once; a WARNING when the deep layers fall below half the MAE teacher's
    # diversity 3 checks in a row (docs/monitors.md: 0.11 % of training time)
    dict(type='AttentionDiversityHook'),
    # DINO's k-NN top-1 (k=20, T=0.07) every 10 epochs: a bank of every 10th
    # image of the run's train set, its val split as queries, both resized
    # to 256 and centre-cropped (docs/monitors.md: 0.23 % of training time,
    # 1.4 % if data loading is the bottleneck)
    dict(
        type='KNNMonitorHook',
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(
                type='ResizeEdge',
                scale=256,
                edge='short',
                backend='pillow',
                interpolation='bicubic'),
            dict(type='CenterCrop', crop_size=224),
            dict(type='PackInputs')
        ],
        val_overrides=dict(split='val'))
]

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=100),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3))
randomness = dict(seed=0, diff_rank_seed=True)
resume = True
auto_scale_lr = dict(base_batch_size=2048)
