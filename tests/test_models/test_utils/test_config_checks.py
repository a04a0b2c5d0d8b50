"""HybridDistill's checks in one call: values no run can mean are refused by
the constructor and reported by the preflight check, with the same key and
value, in one line each."""
import copy

import pytest
from mmengine.config import Config
from mmpretrain.registry import MODELS

from mmhybrid.engine.preflight import ConfigError, check_train_config
from mmhybrid.models.utils.config_checks import (ViTGeometry,
                                                 hybrid_distill_problems,
                                                 loss_problems)
from mmhybrid.testing import tiny_hybrid_cfg

NEGATIVE = ('a negative weight maximises the loss; expected a finite '
            'number >= 0')
NOT_FINITE = 'expected a finite number >= 0'


def _lines(problems):
    return [str(p) for p in problems]


@pytest.mark.parametrize('weight,message', [(-1.0, NEGATIVE), (-1, NEGATIVE),
                                            (float('nan'), NOT_FINITE),
                                            (float('inf'), NOT_FINITE),
                                            ('1', NOT_FINITE),
                                            (True, NOT_FINITE)])
def test_a_loss_weight_must_be_a_finite_number_not_below_zero(weight, message):
    problems = loss_problems(
        dict(
            loss_feat=dict(type='FeatureDistillLoss', loss_weight=weight),
            loss_rel=None),
        prefix='model.')
    assert _lines(problems) == [
        f'model.loss_feat.loss_weight={weight!r}: '
        f'{message}'
    ]


def test_weights_zero_and_positive_are_fine_but_not_all_zero():
    assert loss_problems(
        dict(loss_feat=dict(loss_weight=0), loss_rel=dict(loss_weight=0.5)))\
        == []
    assert loss_problems(dict(loss_feat=dict(loss_weight=0),
                              loss_rel=None)) == []  # loss_rel keeps its 1.0
    assert _lines(
        loss_problems(
            dict(
                loss_feat=dict(loss_weight=0),
                loss_rel=dict(loss_weight=0.0)))) == [
                    'loss_rel.loss_weight=0.0: every loss weight is 0 '
                    '(loss_feat.loss_weight, loss_rel.loss_weight): nothing '
                    'would be trained; expected at least one > 0'
                ]


def test_a_smooth_l1_beta_must_not_be_negative():
    assert _lines(loss_problems(dict(loss_feat=dict(beta=-2.0)))) == [
        'loss_feat.beta=-2.0: expected a finite number >= 0 (Smooth-L1 '
        'threshold)'
    ]
    assert loss_problems(dict(loss_feat=dict(beta=0.0))) == []


def test_every_check_in_one_call():
    vit = ViTGeometry(
        dims=48, layers=3, heads=3, grid=(4, 4), arch='x', img_size=32)
    assert hybrid_distill_problems(vit, vit, vit) == []
    found = hybrid_distill_problems(
        vit,
        vit,
        vit,
        neck_in=64,
        relation_pairs=[(5, 0)],
        importance_source='cls',
        mask_ratio=1.5,
        loss_rel=dict(loss_weight=-0.5),
        prefix='model.')
    assert [p.key for p in found] == [
        'model.importance_source', 'model.neck.in_channels',
        'model.relation_pairs[0]', 'model.mask_ratio',
        'model.loss_rel.loss_weight'
    ]


def _preflight_lines(model_cfg):
    try:
        check_train_config(Config(dict(model=copy.deepcopy(model_cfg))))
    except ConfigError as e:
        return str(e).split('\n  ')[1:]
    return []


@pytest.mark.parametrize('key,loss', [
    ('loss_feat', dict(type='FeatureDistillLoss', loss_weight=-1.0)),
    ('loss_rel', dict(type='RelationDistillLoss', loss_weight=float('nan'))),
    ('loss_feat', dict(type='FeatureDistillLoss', beta=-1.0)),
])
def test_constructor_refuses_what_preflight_reports(key, loss):
    cfg = tiny_hybrid_cfg(**{key: loss})
    lines = _preflight_lines(cfg)
    assert len(lines) == 1 and lines[0].startswith(f'model.{key}.')
    with pytest.raises(ValueError) as info:
        MODELS.build(copy.deepcopy(cfg))
    assert str(
        info.value) == 'HybridDistill: ' + lines[0].replace('model.', '')


def test_constructor_reports_every_problem_of_the_config_at_once():
    cfg = tiny_hybrid_cfg(
        importance_source='cls',
        relation_pairs=[(7, 0)],
        loss_rel=dict(type='RelationDistillLoss', loss_weight=-1))
    lines = _preflight_lines(cfg)
    assert len(lines) == 3
    with pytest.raises(ValueError) as info:
        MODELS.build(copy.deepcopy(cfg))
    assert str(info.value) == 'HybridDistill: ' + '; '.join(
        ln.replace('model.', '') for ln in lines)
