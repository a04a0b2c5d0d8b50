# COCO Mask R-CNN with ViTDet's backbone (Li et al. 2022, "Exploring Plain
# Vision Transformer Backbones for Object Detection", Sec. 3 and A.2): the
# global-attention benchmark (same pyramid, heads, LSJ 1024 px, 100 epochs,
# batch 64, AdamW 1e-4, weight decay 0.1, layer decay 0.7, drop path 0.1) with
# ViTDet's attention: 14 x 14 windows (the 64 x 64 grid zero-padded to 70 x 70)
# in every block but 2, 5, 8, 11 (global), and decomposed relative position
# biases in every block, initialised to zero (ViTDet's rel_pos_zero_init).
# The backbone (WindowedViT) is mmpretrain's VisionTransformer with the
# student's keys: every student tensor is loaded (pos_embed resized to 64 x
# 64); the [CLS] token is kept (global blocks only: in windowed blocks it
# attends to itself), where ViTDet drops it. The 24 relative position tables
# are the only new tensors: init_cfg.allow names them, so the load reports them
# as left to their (zero) init instead of failing on them as missing.
#
#   tools/benchmarks/dist_downstream.sh coco-vitdet PRETRAIN.pth 8
# or, by hand, with the pretraining checkpoint itself or a converter's output
# (tools/model_converters/hybrid2mmdet.py ... --config THIS_CONFIG
#  --allow '^layers\.\d+\.attn\.rel_pos_[hw]$'):
#   tools/dist_train.sh THIS_CONFIG 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=PRETRAIN.pth
_base_ = './mask-rcnn_vit-base-p16_hybrid-distill-300e-pre_sfp_8xb8-lsj-100e_coco.py'  # noqa: E501

model = dict(
    backbone=dict(
        type='mmpretrain.WindowedViT',
        window_size=14,
        global_attn_indexes=[2, 5, 8, 11],
        use_rel_pos=True,
        init_cfg=dict(allow=r'^layers\.\d+\.attn\.rel_pos_[hw]$')))
