# Transfer classification on iNaturalist 2019 (1,010 species; 265,213 train,
# 3,030 val images): the Stanford Cars config's protocol (iBOT's transfer
# recipe, see there) with iBOT's iNaturalist 2019 values (run.sh
# `inat19_cls`): lr 7.5e-6 x 768 / 512 = 1.125e-5, 360 epochs, random erasing
# 0.1; evaluated on val2019.json (test2019.json has no labels). Read from the
# official JSON annotations by INaturalist2019 (mmhybrid.datasets; labels =
# category ids, which iBOT's loader renumbers by first appearance: the same
# classes, a different order).
#
#   tools/benchmarks/dist_downstream.sh inat19 PRETRAIN.pth 8
# Data: docs/downstream.md#transfer-classification-data.
_base_ = './vit-base-p16_hybrid-distill-300e-pre_8xb96-coslr-1000e_stanfordcars.py'  # noqa: E501

data_root = 'data/inat2019/'
num_classes = 1010
batch_size = 96
lr = 7.5e-6 * batch_size * 8 / 512
# the schedule's constants, as the base's (a list is replaced whole)
warmup_lr = 1e-6
min_lr = 1e-5
warmup_epochs = 5
max_epochs = 360
bgr_mean = [103.53, 116.28, 123.675]
bgr_std = [57.375, 57.12, 58.395]

data_preprocessor = dict(num_classes=num_classes)
model = dict(head=dict(num_classes=num_classes))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=224,
        backend='pillow',
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(pad_val=[104, 116, 124], interpolation='bicubic')),
    dict(
        type='RandomErasing',
        erase_prob=0.1,
        mode='rand',
        min_area_ratio=0.02,
        max_area_ratio=1 / 3,
        fill_color=bgr_mean,
        fill_std=bgr_std),
    dict(type='PackInputs')
]
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='INaturalist2019',
        data_root=data_root,
        split='train',
        pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='INaturalist2019',
        data_root=data_root,
        split='val',
        pipeline={{_base_.test_pipeline}}))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=warmup_lr / lr,
        by_epoch=True,
        begin=0,
        end=warmup_epochs,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        by_epoch=True,
        begin=warmup_epochs,
        end=max_epochs,
        eta_min=min_lr,
        convert_to_iter_based=True)
]
train_cfg = dict(max_epochs=max_epochs)
