"""Drop path and gradient clipping of the pretraining configs, as resolved.

Feature Distillation (Wei et al. 2022), the nearest published recipe at the
same lr (1.2e-3 at batch 2048, 10 warm-up epochs), clips the gradient norm at
3.0 and sets drop path per student/teacher/schedule
(SwinTransformer/Feature-Distillation, configs/pretrain/*.yaml): 0.2 for ViT-B
from CLIP-B/16 over 300 epochs, 0.1 over 100 epochs, 0.3 for ViT-B from DeiT-B
and for ViT-L from CLIP-L/14. The configs follow it.
"""
import os.path as osp

import pytest
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

# config -> Feature Distillation's drop path for the same setting
DROP_PATH = {
    'hybrid_vitb.py':
    0.2,
    'hybrid-distill_vit-base-p16_clip-b16-mae-b16_8xb256-fp16-coslr-300e_in1k.py':  # noqa: E501
    0.2,
    'hybrid-distill_vit-base-p16_clip-b16-mae-b16_8xb256-amp-coslr-100e_in1k.py':  # noqa: E501
    0.1,
    'hybrid-distill_vit-base-p16_deit-b-mae-b16_8xb256-amp-coslr-300e_in1k.py':
    0.3,
    'hybrid_vitl.py':
    0.3,
    'hybrid-distill_vit-large-p16_clip-l14-mae-l16_8xb128-fp16-coslr-300e_in1k.py':  # noqa: E501
    0.3,
}


@pytest.mark.parametrize('name', list(DROP_PATH))
def test_pretraining_follows_feature_distillation(name):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
    assert cfg.model.backbone.drop_path_rate == DROP_PATH[name]
    assert cfg.optim_wrapper.clip_grad == dict(max_norm=3.0)
    # the lr these values were chosen at: 1.5e-4 per 256 images
    batch = cfg.auto_scale_lr.base_batch_size
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(1.5e-4 * batch /
                                                           256)
