# 100-epoch ablation schedule of the flagship (docs/method.md: ablations use
# 100 epochs).
_base_ = './hybrid_vitb.py'

max_epochs = 100
warmup_epochs = 5
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
train_cfg = dict(max_epochs=max_epochs)
# Feature Distillation's value for its 100-epoch CLIP-B/16 schedule
model = dict(backbone=dict(drop_path_rate=0.1))
