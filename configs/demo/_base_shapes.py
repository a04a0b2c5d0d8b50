# Shared settings of the CPU demo: the built-in generated shapes data, object
# task (one shape per image; `make_imagenet_style(..., task='objects')`, which
# tools/demo/run_demo.py writes) at 64 px, tiny ViTs with 8 px patches (8 x 8
# tokens).
data_root = 'data/shapes/objects/'
num_classes = 5
img_size = 64
patch_size = 8
tiny_arch = dict(
    embed_dims=96, num_layers=4, num_heads=3, feedforward_channels=384)

# The training data and schedule every demo run shares (teachers and students):
# flips only, batch 32, AdamW with warm-up + cosine over 300 iterations. The
# generator already varies position and size; random resized crops on top cut
# shapes apart and kept the supervised teacher at 56 % after 300 iterations.
# (ResizeEdge + CenterCrop are no-ops on the built-in data; they bring a user's
# own image folder, `run_demo.py --data-root`, to img_size.)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=img_size, edge='short', backend='pillow'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=img_size, edge='short', backend='pillow'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=32,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='CustomDataset',
        data_root=data_root,
        data_prefix='train',
        pipeline=train_pipeline))
optim_wrapper = dict(
    type='OptimWrapper',  # CPU: AMP wrappers need a GPU
    optimizer=dict(
        type='AdamW', lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'ln': dict(decay_mult=0.0),
            'bias': dict(decay_mult=0.0),
            'pos_embed': dict(decay_mult=0.),
            'cls_token': dict(decay_mult=0.)
        }))
max_iters = 300
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=30, end=max_iters)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)

default_scope = 'mmpretrain'
custom_imports = dict(imports=['mmhybrid'], allow_failed_imports=False)

# mmhybrid's runner (safe checkpoint reads, atomic saves, resume from the
# newest readable checkpoint, the _scope_-d collate_fn of mmpretrain:: bases),
# also when mmpretrain's own tools/train.py runs this config
runner_type = 'mmpretrain.HybridRunner'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook', interval=100, by_epoch=False, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False),
)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='gloo'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
