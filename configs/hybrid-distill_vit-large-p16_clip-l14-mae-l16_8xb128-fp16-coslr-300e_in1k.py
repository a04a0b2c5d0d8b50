# The ViT-L flagship (configs/hybrid_vitl.py) in fp16 for GPUs without bf16
# (V100).
# On A100/H100 use the bf16 config. Memory on a 32 GB V100 not measured:
# section (d) of tools/speed/gpu_check.sh measures the bf16 ViT-L step; pick
# the batch as docs/gpu.md ("fp16 memory") does for ViT-B.
#   tools/dist_train.sh configs/hybrid-distill_vit-large-p16_clip-l14-mae-l16_8xb128-fp16-coslr-300e_in1k.py 8  # noqa: E501
_base_ = './hybrid_vitl.py'

model = dict(
    teacher_feat=dict(autocast_dtype='float16'),
    teacher_rel=dict(autocast_dtype='float16'))

# dynamic loss scaling; see the ViT-B fp16 config
optim_wrapper = dict(
    type='AmpOptimWrapper', dtype='float16', loss_scale='dynamic')
