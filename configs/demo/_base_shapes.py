# Shared settings of the CPU demo: the built-in generated "shapes" data
# (tools/data/make_shapes.py) at 64 px, tiny ViTs with 8 px patches (8 x 8 tokens).
data_root = 'data/shapes/imagenet/'
num_classes = 5
img_size = 64
patch_size = 8
tiny_arch = dict(
    embed_dims=96, num_layers=4, num_heads=3, feedforward_channels=384)

default_scope = 'mmpretrain'
custom_imports = dict(imports=['mmhybrid'], allow_failed_imports=False)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=100, by_epoch=False,
                    max_keep_ckpts=2),
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
