"""mmhybrid pretraining checkpoint -> backbone weights for the mmseg UperNet
configs (mmpretrain ``VisionTransformer`` inside mmseg; position embeddings
resized to 512 x 512 by default).

    python tools/model_converters/hybrid2mmseg.py \\
        work_dirs/hybrid_vitb/epoch_300.pth pretrain/hybrid_vitb_mmseg.pth \\
        --config $CONFIG

with CONFIG=
configs/benchmarks/mmseg/upernet_vit-base-p16_hybrid-pre_8xb2-160k_ade20k-512x512.py
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from vit_convert import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main('mmseg'))
