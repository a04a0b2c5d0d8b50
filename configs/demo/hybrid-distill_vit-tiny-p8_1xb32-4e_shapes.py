# The CPU demo's Hybrid Distillation run, epoch-based as the flagship is
# (EpochBasedTrainLoop, DefaultSampler, epoch checkpoints), with mid-epoch
# checkpoints from PreemptionHook: the config of the pre-emption and mid-epoch
# resume tests (tests/test_reliability/test_preemption.py).
_base_ = ['./hybrid-distill_vit-tiny-p8_1xb32-300i_shapes.py']

max_epochs = 4
train_dataloader = dict(
    sampler=dict(type='DefaultSampler', shuffle=True, _delete_=True))
train_cfg = dict(
    type='EpochBasedTrainLoop', max_epochs=max_epochs, _delete_=True)
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.01,
        by_epoch=True,
        begin=0,
        end=1,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        by_epoch=True,
        begin=1,
        end=max_epochs,
        convert_to_iter_based=True)
]
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(
        type='CheckpointHook',
        by_epoch=True,
        interval=1,
        max_keep_ckpts=2,
        _delete_=True))
custom_hooks = [
    dict(type='ProgressiveMaskingHook', final_ratio=0.5, schedule='linear'),
    # a resumable checkpoint every 3 iterations inside the epochs
    dict(type='PreemptionHook', interval=3),
]
log_processor = dict(by_epoch=True)
