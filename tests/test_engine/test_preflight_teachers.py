"""Preflight of ``HybridDistill(teachers=...)``: each problem is one line
naming the teacher and the key, found before anything is built, and the same
that the model's constructor says."""
import os.path as osp

import pytest
from mmengine.config import Config
from mmpretrain.registry import MODELS

from mmhybrid.engine.preflight import _Checker
from mmhybrid.testing import tiny_vit_cfg

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
THREE = osp.join(
    ROOT, 'configs', 'hybrid-distill_vit-base-p16_dinov2-b14-clip-b16-'
    'mae-b16_8xb256-amp-coslr-300e_in1k.py')


def _errors(cfg):
    checker = _Checker(cfg)
    checker.check_model()
    return checker.errors


def test_three_teacher_config_passes():
    assert _errors(Config.fromfile(THREE)) == []


@pytest.mark.parametrize('options, line', [
    ({
        'model.teachers.dinov2.teacher.model': 'vit-base-p14_dinov3'
    }, "model.teachers.dinov2.teacher.model='vit-base-p14_dinov3': cannot "
     'build this teacher: mmpretrain knows no model of that name'),
    ({
        'model.teachers.clip.feature.neck.out_channels': 1024
    }, 'model.teachers.clip.feature.neck.out_channels=1024: the teacher width '
     'is 768'),
    ({
        'model.importance_source': 'siglip'
    }, "model.importance_source='siglip': expected 'feat', 'rel' or a "
     "teacher's name: one of ('dinov2', 'mae', 'clip')"),
    ({
        'model.teachers.mae.relation.relation_pairs': [(0, 12)]
    }, 'model.teachers.mae.relation.relation_pairs[0]=(0, 12): teacher block '
     '12 out of range [0, 12) (model.teachers.mae.teacher has 12 blocks)'),
    ({
        'model.teachers.dinov2.feature.loss.loss_weight': -1.0
    }, 'model.teachers.dinov2.feature.loss.loss_weight=-1.0: a negative '
     'weight maximises the loss'),
    ({
        'model.teachers.clip.feature.loss.loss_type': 'l3'
    }, "model.teachers.clip.feature.loss.loss_type='l3': expected one of"),
])
def test_a_bad_teacher_is_one_line_naming_it(options, line):
    cfg = Config.fromfile(THREE)
    cfg.merge_from_dict(options)
    errors = _errors(cfg)
    assert len(errors) == 1, errors
    assert errors[0].startswith(line), errors[0]


def test_relations_refuse_a_resampled_grid_in_preflight_and_model():
    """A teacher whose grid is not the student's (4x4 tokens of 16 px at 64 px
    against 5x5 of 14 px at 70 px, as DINOv2's 16x16 against a /16 student's
    14x14 at 224 px): fine for features with either grid mode, refused for
    relations with 'interpolate' (the same line from preflight and model)."""
    teacher = dict(
        type='ZooTeacher',
        model=dict(
            type='VisionTransformer',
            arch=dict(
                embed_dims=48,
                num_layers=2,
                num_heads=3,
                feedforward_channels=96),
            img_size=64,
            patch_size=16,
            layer_scale_init_value=1e-5))
    cfg = Config(
        dict(
            model=dict(
                type='HybridDistill',
                backbone=tiny_vit_cfg(img_size=70, patch_size=14),
                teachers=dict(
                    dino=dict(
                        teacher=teacher,
                        feature=dict(
                            neck=dict(
                                type='DistillProjectionNeck',
                                in_channels=48,
                                out_channels=48)),
                        relation=dict(),
                        grid='interpolate')))))
    errors = _errors(cfg)
    assert errors == [
        "model.teachers.dino.grid='interpolate': the teacher sees a (4, 4) "
        'patch grid, the student a (5, 5): relations need the same grid; use '
        "grid='resize'"
    ]
    with pytest.raises(ValueError) as e:
        MODELS.build(cfg.model)
    assert errors[0].replace('model.', '', 1) in str(e.value)
    # features alone may be resampled; 'resize' makes the teacher see 80 px
    cfg.model.teachers.dino.pop('relation')
    assert _errors(cfg) == []
    model = MODELS.build(cfg.model)
    assert model.resampled == {'dino': (4, 4)}
    cfg.model.teachers.dino.grid = 'resize'
    model = MODELS.build(cfg.model)
    assert model.teachers['dino'].grid == (5, 5)
    assert model.resampled == {}
