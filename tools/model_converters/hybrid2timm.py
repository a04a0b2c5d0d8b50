"""mmhybrid pretraining checkpoint -> timm ``VisionTransformer`` weights.

The weights are written as ``.safetensors``, to use the student outside
OpenMMLab. Keys are checked strictly against a timm model of the same
architecture (no classifier).

    python tools/model_converters/hybrid2timm.py \\
        work_dirs/hybrid_vitb/epoch_300.pth hybrid_vitb.safetensors

    import timm
    model = timm.create_model(
        'vit_base_patch16_224', pretrained=True, num_classes=0,
        pretrained_cfg_overlay=dict(file='hybrid_vitb.safetensors'))
"""
import os.path as osp
import sys

# this checkout's mmhybrid when run as a script from anywhere
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if sys.path[:1] != [ROOT]:  # this checkout's mmhybrid first
    sys.path.insert(0, ROOT)

from mmhybrid.converters.cli import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main('timm'))
