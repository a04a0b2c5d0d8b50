"""mmhybrid pretraining checkpoint -> backbone weights for the mmdet Mask R-CNN
configs (mmpretrain ``VisionTransformer`` + simple feature pyramid; position
embeddings resized to 1024 x 1024 by default).

    python tools/model_converters/hybrid2mmdet.py \\
        work_dirs/hybrid_vitb/epoch_300.pth pretrain/hybrid_vitb_mmdet.pth \\
        --config $CONFIG

with CONFIG=
configs/benchmarks/mmdet/mask-rcnn_vit-base-p16_hybrid-distill-300e-pre_sfp_8xb8-lsj-100e_coco.py
"""
import os.path as osp
import sys

# this checkout's mmhybrid when run as a script from anywhere
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if sys.path[:1] != [ROOT]:  # this checkout's mmhybrid first
    sys.path.insert(0, ROOT)

from mmhybrid.converters.cli import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main('mmdet'))
