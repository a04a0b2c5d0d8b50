# Short end-to-end fine-tune of a tiny ViT checkpoint of the demo/study
# (student or teacher), through mmpretrain's own ImageClassifier: the
# supervised demo recipe (AdamW, label smoothing, drop path 0.1) with the
# backbone initialised from CHECKPOINT's ``backbone.*`` tensors.
#   tools/train.py configs/demo/finetune_vit-tiny-p8_1xb32-150i_shapes.py \
#       --cfg-options model.backbone.init_cfg.checkpoint=CKPT
# model.backbone.init_cfg=None fine-tunes from a random initialisation (the
# "no pretraining" reference with the same budget).
_base_ = ['./vit-tiny-p8_sup_1xb32-300i_shapes.py']

model = dict(
    backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint='', prefix='backbone.')))
optim_wrapper = dict(optimizer=dict(lr=5e-4))
max_iters = 150
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=15),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=15, end=max_iters)
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(checkpoint=dict(interval=max_iters))
