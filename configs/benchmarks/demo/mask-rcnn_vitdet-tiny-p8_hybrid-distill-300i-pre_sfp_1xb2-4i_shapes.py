# CPU miniature of the ViTDet-style COCO benchmark: the global-attention
# miniature (tiny ViT, 96 px LSJ crops, narrow heads, a few iterations, bbox
# and segm AP) with the full-size config's WindowedViT backbone scaled to 4
# blocks: 5 x 5 windows (the 12 x 12 grid zero-padded to 15 x 15) in blocks 0
# and 2, global attention in blocks 1 and 3, relative position biases in all.
_base_ = './mask-rcnn_vit-tiny-p8_hybrid-distill-300i-pre_sfp_1xb2-4i_shapes.py'  # noqa: E501

model = dict(
    backbone=dict(
        type='mmpretrain.WindowedViT',
        window_size=5,
        global_attn_indexes=[1, 3],
        use_rel_pos=True,
        init_cfg=dict(allow=r'^layers\.\d+\.attn\.rel_pos_[hw]$')))
