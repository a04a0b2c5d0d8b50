import math

import pytest
import torch

from mmhybrid.models.losses import FeatureDistillLoss, whiten


def test_whiten_matches_layernorm_formula():
    x = torch.randn(2, 3, 8) * 5 + 2
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean)**2).mean(-1, keepdim=True)  # population variance
    expected = (x - mean) / torch.sqrt(var + 1e-6)
    torch.testing.assert_close(whiten(x), expected, rtol=1e-5, atol=1e-5)


def _smooth_l1(d, beta):
    d = abs(d)
    return 0.5 * d * d / beta if d < beta else d - 0.5 * beta


def test_smooth_l1_by_hand():
    pred = torch.tensor([[[0.0, 1.0, 5.0, -3.0]]])
    target = torch.tensor([[[0.5, -2.0, 0.0, -3.0]]])
    loss = FeatureDistillLoss(
        loss_type='smooth_l1', beta=2.0, whiten_target=False)(pred, target)
    diffs = [0.5, 3.0, 5.0, 0.0]
    expected = sum(_smooth_l1(d, 2.0) for d in diffs) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # 0.0625, 2.0, 4.0, 0 -> 6.0625 / 4
    assert expected == pytest.approx(1.515625)


def test_whitened_target_and_weight():
    pred = torch.randn(2, 5, 6)
    target = torch.randn(2, 5, 6) * 10 + 3
    loss = FeatureDistillLoss(loss_type='mse', loss_weight=0.5)(pred, target)
    t = target
    t = (t - t.mean(-1, keepdim=True)
         ) / torch.sqrt(t.var(-1, unbiased=False, keepdim=True) + 1e-6)
    expected = 0.5 * ((pred - t)**2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_cosine_by_hand():
    pred = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    target = torch.tensor([[[0.0, 2.0], [2.0, 2.0]]])
    loss = FeatureDistillLoss(
        loss_type='cosine', whiten_target=False)(pred, target)
    # token 0: orthogonal -> 1 - 0; token 1: parallel -> 1 - 1
    assert loss.item() == pytest.approx(0.5, abs=1e-6)
    pred2 = torch.tensor([[[1.0, 0.0]]])
    target2 = torch.tensor([[[1.0, 1.0]]])
    loss2 = FeatureDistillLoss(
        loss_type='cosine', whiten_target=False)(pred2, target2)
    assert loss2.item() == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-6)


def test_errors_name_the_value():
    with pytest.raises(ValueError, match="'l3'"):
        FeatureDistillLoss(loss_type='l3')
    with pytest.raises(ValueError, match=r'\(1, 2, 3\)'):
        FeatureDistillLoss()(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4))
