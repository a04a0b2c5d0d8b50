# The demo HybridDistill run on mmengine's FlexibleRunner with an explicit
# DDPStrategy: the runner FSDP / DeepSpeed configs use (runner_type + strategy,
# as mmpretrain's *-fsdp-* / *-ds-* configs), here with the strategy that runs
# on CPUs (gloo). DDPStrategy wraps the model for a process group, so start it
# with a launcher, e.g. one process:
#   tools/dist_train.sh configs/demo/hybrid-distill_vit-tiny-p8_1xb32-flexible-ddp-300i_shapes.py 1  # noqa: E501
_base_ = ['./hybrid-distill_vit-tiny-p8_1xb32-300i_shapes.py']

runner_type = 'FlexibleRunner'
strategy = dict(type='DDPStrategy')
