# Linear probe of any tiny ViT checkpoint of the demo (student or teacher):
# frozen backbone, [CLS] token + BatchNorm + linear head, as mmpretrain's MAE
# probe.
#   tools/train.py configs/demo/linear-probe_vit-tiny-p8_1xb64-200i_shapes.py \
#       --cfg-options model.backbone.init_cfg.checkpoint=CKPT
_base_ = ['./vit-tiny-p8_sup_1xb32-300i_shapes.py']

model = dict(
    backbone=dict(
        frozen_stages=4,
        drop_path_rate=0.0,
        init_cfg=dict(type='Pretrained', checkpoint='', prefix='backbone.')),
    neck=dict(type='ClsBatchNormNeck', input_features=96),
    # the model-level Xavier init of the supervised config stays: with
    # model.backbone.init_cfg=None the probed network is initialised as every
    # demo ViT is (a pretrained backbone is loaded over it)
    head=dict(
        loss=dict(_delete_=True, type='CrossEntropyLoss', loss_weight=1.0)))
train_dataloader = dict(batch_size=64)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0.0))
max_iters = 200
param_scheduler = [
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=max_iters)
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(checkpoint=dict(interval=max_iters))
