# The flagship (configs/hybrid_vitb.py) in fp16 for GPUs without bf16 (V100,
# T4).
# On A100/H100 use the bf16 flagship: same range as fp32, no loss scaling.
#   tools/dist_train.sh configs/hybrid-distill_vit-base-p16_clip-b16-mae-b16_8xb256-fp16-coslr-300e_in1k.py 8  # noqa: E501
# Only the precision differs: student and teachers autocast to fp16; the losses
# take their softmax / LayerNorm / distances in fp32 (mmhybrid/models/losses).
# Batch 256 per GPU needs about 30 GiB at the start of the schedule, more than
# a 32 GB V100 leaves: there, add --auto-scale-lr --cfg-options
# train_dataloader.batch_size=128 (64 on 16 GB); docs/gpu.md, "fp16 memory".
_base_ = './hybrid_vitb.py'

model = dict(
    teacher_feat=dict(autocast_dtype='float16'),
    teacher_rel=dict(autocast_dtype='float16'))

# fp16 gradients underflow without loss scaling: a dynamic GradScaler (start
# 2**16, halved and the step skipped on inf/NaN, doubled after 2000 clean
# steps); gradients are unscaled before the norm clipping of the base config.
optim_wrapper = dict(
    type='AmpOptimWrapper', dtype='float16', loss_scale='dynamic')
