"""mmhybrid pretraining checkpoint -> mmpretrain ``VisionTransformer`` weights
(ImageNet fine-tuning and linear probing; 224 px by default).

    python tools/model_converters/hybrid2mmpretrain.py \\
        work_dirs/hybrid_vitb/epoch_300.pth \\
        pretrain/hybrid_vitb_mmpretrain.pth --config $CONFIG

with CONFIG=
configs/benchmarks/mmpretrain/vit-base-p16_hybrid-distill-300e-pre_8xb128-coslr-100e_in1k.py

Keys are checked strictly against the config's backbone (or, without
``--config``, a ViT of the checkpoint's architecture); the exit status is 1
with the names of the missing / unexpected keys when they differ.
"""
import os.path as osp
import sys

# this checkout's mmhybrid when run as a script from anywhere
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if sys.path[:1] != [ROOT]:  # this checkout's mmhybrid first
    sys.path.insert(0, ROOT)

from mmhybrid.converters.cli import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main('mmpretrain'))
