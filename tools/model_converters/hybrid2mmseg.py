"""mmhybrid pretraining checkpoint -> backbone weights for the mmseg UperNet
configs (mmpretrain ``VisionTransformer`` inside mmseg; position embeddings
resized to 512 x 512 by default).

    python tools/model_converters/hybrid2mmseg.py \\
        work_dirs/hybrid_vitb/epoch_300.pth pretrain/hybrid_vitb_mmseg.pth \\
        --config $CONFIG

with CONFIG=
configs/benchmarks/mmseg/upernet_vit-base-p16_hybrid-distill-300e-pre_8xb2-160k_ade20k-512x512.py
(whose backbone also reads the pretraining checkpoint directly), or mmseg's own
MAE protocol, the one MAE's 48.1 mIoU comes from (mmseg's ``MAE`` backbone,
also ``BEiT``):

    python tools/model_converters/hybrid2mmseg.py \\
        work_dirs/hybrid_vitb/epoch_300.pth \\
        pretrain/hybrid_vitb_mae-mmseg.pth \\
        --config mmseg::mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py
    # then train mmseg's config (or a copy) with
    #     --cfg-options model.pretrained=pretrain/hybrid_vitb_mae-mmseg.pth

mmseg loads ``model.pretrained`` with ``strict=False`` and reports nothing, so
the converter checks that every tensor of the target backbone except layer
scale (``gamma_1/2``) and relative-position tables comes from the student, and
lists what the target has no place for (the final norm with
``final_norm=False``; BEiT: ``pos_embed``). BEiT's ``q_bias``/``v_bias`` are
split off the student's qkv bias; its key bias is dropped, which is exact
(softmax ignores a per-query constant).
"""
import os.path as osp
import sys

# this checkout's mmhybrid when run as a script from anywhere
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if sys.path[:1] != [ROOT]:  # this checkout's mmhybrid first
    sys.path.insert(0, ROOT)

from mmhybrid.converters.cli import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main('mmseg'))
