# The shorter COCO schedule: the same model and recipe as the 100-epoch config,
# 25 epochs of LSJ (no dataset repetition; steps at epochs 22 and 24).
#
#   tools/benchmarks/dist_downstream.sh coco-25e PRETRAIN.pth 8
_base_ = './mask-rcnn_vit-base-p16_hybrid-distill-300e-pre_sfp_8xb8-lsj-100e_coco.py'  # noqa: E501

train_dataloader = dict(dataset=dict(times=1))
