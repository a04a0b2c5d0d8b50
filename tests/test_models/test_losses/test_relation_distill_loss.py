import math

import pytest
import torch

from mmhybrid.models.losses import (RelationDistillLoss, kl_relation,
                                    relation_logits)


def _manual_logits(a, b, heads):
    B, L, C = a.shape
    d = C // heads
    out = torch.zeros(B, heads, L, L)
    for bi in range(B):
        for h in range(heads):
            for i in range(L):
                for j in range(L):
                    qa = a[bi, i, h * d:(h + 1) * d]
                    kb = b[bi, j, h * d:(h + 1) * d]
                    out[bi, h, i, j] = (qa * kb).sum() / math.sqrt(d)
    return out


def test_relation_logits_by_hand():
    a, b = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    torch.testing.assert_close(
        relation_logits(a, b, 2),
        _manual_logits(a, b, 2),
        rtol=1e-5,
        atol=1e-5)


def _manual_kl(s_logits, t_logits):
    B, H, L, _ = s_logits.shape
    total, count = 0.0, 0
    for bi in range(B):
        for h in range(H):
            for i in range(L):
                s = torch.softmax(s_logits[bi, h, i].double(), -1)
                t = torch.softmax(t_logits[bi, h, i].double(), -1)
                total += float((t * (t.log() - s.log())).sum())
                count += 1
    return total / count


def test_kl_by_hand():
    s, t = torch.randn(2, 2, 4, 4), torch.randn(2, 2, 4, 4) * 3
    assert kl_relation(s, t).item() == pytest.approx(
        _manual_kl(s, t), rel=1e-5)
    assert kl_relation(t, t).item() == pytest.approx(0.0, abs=1e-6)
    # KL is not symmetric: the teacher is the reference distribution
    assert kl_relation(s, t).item() != pytest.approx(kl_relation(t, s).item())


def test_head_resplit_student_other_width():
    # student width 8 with its own 4 heads; teacher width 12 with 2 heads:
    # the student's q/k are split into the teacher's 2 heads (d = 4)
    sq, sk = torch.randn(1, 5, 8), torch.randn(1, 5, 8)
    tq, tk = torch.randn(1, 5, 12), torch.randn(1, 5, 12)
    loss = RelationDistillLoss()([dict(q=sq, k=sk)], [dict(q=tq, k=tk)],
                                 num_heads=2)
    expected = _manual_kl(_manual_logits(sq, sk, 2), _manual_logits(tq, tk, 2))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_pairs_are_averaged_and_weighted():
    pairs_s = [
        dict(q=torch.randn(1, 4, 8), k=torch.randn(1, 4, 8)) for _ in range(3)
    ]
    pairs_t = [
        dict(q=torch.randn(1, 4, 8), k=torch.randn(1, 4, 8)) for _ in range(3)
    ]
    loss = RelationDistillLoss(loss_weight=2.0)(pairs_s, pairs_t, num_heads=2)
    each = [
        kl_relation(
            relation_logits(s['q'], s['k'], 2),
            relation_logits(t['q'], t['k'], 2))
        for s, t in zip(pairs_s, pairs_t)
    ]
    assert loss.item() == pytest.approx(2.0 * sum(each).item() / 3, rel=1e-6)


def test_vv_relations_added():
    s = dict(
        q=torch.randn(1, 4, 8), k=torch.randn(1, 4, 8), v=torch.randn(1, 4, 8))
    t = dict(
        q=torch.randn(1, 4, 8), k=torch.randn(1, 4, 8), v=torch.randn(1, 4, 8))
    crit = RelationDistillLoss(use_vv=True)
    assert crit.parts == ('q', 'k', 'v')
    qk = kl_relation(
        relation_logits(s['q'], s['k'], 2), relation_logits(t['q'], t['k'], 2))
    vv = kl_relation(
        relation_logits(s['v'], s['v'], 2), relation_logits(t['v'], t['v'], 2))
    assert crit([s], [t], 2).item() == pytest.approx(
        (qk + vv).item(), rel=1e-6)


@pytest.mark.parametrize('loss_type', ['smooth_l1', 'mse'])
def test_map_distances_by_hand(loss_type):
    s = dict(q=torch.randn(1, 3, 4), k=torch.randn(1, 3, 4))
    t = dict(q=torch.randn(1, 3, 4), k=torch.randn(1, 3, 4))
    loss = RelationDistillLoss(loss_type=loss_type)([s], [t], num_heads=1)
    ps = _manual_logits(s['q'], s['k'], 1).softmax(-1)
    pt = _manual_logits(t['q'], t['k'], 1).softmax(-1)
    d = (ps - pt).abs()
    if loss_type == 'mse':
        expected = (d**2).mean()
    else:  # beta 1, |d| < 1 always for probabilities
        expected = (0.5 * d**2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_bad_config_and_shapes():
    with pytest.raises(ValueError, match="'js'"):
        RelationDistillLoss(loss_type='js')
    with pytest.raises(ValueError, match='not a multiple of 3'):
        relation_logits(torch.zeros(1, 2, 8), torch.zeros(1, 2, 8), 3)
