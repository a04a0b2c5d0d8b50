"""Attention statistics against hand-computed cases."""
import math

import pytest
import torch

from mmhybrid.analysis import (attention_distance, attention_entropy,
                               attention_stats, patch_attention,
                               patch_distance_matrix, query_key_nmi)


def _uniform(n, b=1, h=1):
    return torch.full((b, h, n, n), 1.0 / n)


def _diag(n, b=1, h=1):
    return torch.eye(n).expand(b, h, n, n).clone()


def test_distance_matrix_2x2():
    d = patch_distance_matrix((2, 2), 16)
    s2 = 16 * math.sqrt(2)
    expected = torch.tensor([[0, 16, 16, s2], [16, 0, s2, 16], [16, s2, 0, 16],
                             [s2, 16, 16, 0]])
    assert torch.allclose(d, expected, atol=1e-5)
    # non-square patches: (height, width)
    d = patch_distance_matrix((1, 2), (4, 10))
    assert d[0, 1].item() == pytest.approx(10.0)


def test_uniform_map():
    # 2x2 grid, patch 16 px: from any patch the distances are 0, 16, 16,
    # 16*sqrt2
    a = _uniform(4, b=2, h=3)
    dist = attention_distance(a, (2, 2), 16)
    assert dist.shape == (2, 3)
    assert torch.allclose(dist, torch.full((2, 3),
                                           (32 + 16 * math.sqrt(2)) / 4))
    assert torch.allclose(
        attention_entropy(a), torch.full((2, 3), math.log(4)))
    assert torch.allclose(query_key_nmi(a), torch.zeros(2, 3), atol=1e-6)


def test_one_hot_diagonal():
    a = _diag(9, b=1, h=2)
    assert torch.allclose(attention_distance(a, 3, 8), torch.zeros(1, 2))
    assert torch.allclose(attention_entropy(a), torch.zeros(1, 2), atol=1e-6)
    assert torch.allclose(query_key_nmi(a), torch.ones(1, 2), atol=1e-5)


def test_every_query_attends_one_far_token():
    # 3x3 grid, patch 10 px, every query looks at the bottom-right corner (8)
    n, p = 9, 10.0
    a = torch.zeros(1, 1, n, n)
    a[..., 8] = 1.0
    expected = sum(p * math.hypot(2 - r, 2 - c) for r in range(3)
                   for c in range(3)) / n
    assert attention_distance(a, (3, 3), p).item() == pytest.approx(
        expected, rel=1e-5)
    assert attention_entropy(a).item() == pytest.approx(0.0, abs=1e-6)
    # full collapse: the key says nothing about the query, H(K) = 0 -> NMI 0
    assert query_key_nmi(a).item() == pytest.approx(0.0, abs=1e-6)


def test_far_permutation_has_nmi_one():
    # 1x2 grid, patch 16: each query attends only to the *other* token
    a = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).view(1, 1, 2, 2)
    assert attention_distance(a, (1, 2), 16).item() == pytest.approx(16.0)
    assert attention_entropy(a).item() == pytest.approx(0.0, abs=1e-6)
    assert query_key_nmi(a).item() == pytest.approx(1.0, abs=1e-5)


def test_two_blocks_nmi_hand_computed():
    # 4 queries: 0,1 attend uniformly to keys {0,1}; 2,3 to keys {2,3}
    # H(K) = log 4, H(K|Q) = log 2, I = log 2, H(Q) = log 4 -> NMI = 1/2
    a = torch.zeros(1, 1, 4, 4)
    a[..., :2, :2] = 0.5
    a[..., 2:, 2:] = 0.5
    assert query_key_nmi(a).item() == pytest.approx(0.5, abs=1e-5)
    assert attention_entropy(a).item() == pytest.approx(math.log(2))


def test_cls_is_dropped_and_rows_renormalised():
    # [CLS] + 2x2 patches; patch rows put half their mass on [CLS] and the rest
    # on themselves -> after renormalisation: the diagonal
    n = 4
    a = torch.zeros(1, 2, 1 + n, 1 + n)
    a[..., 0, :] = 1.0 / (1 + n)  # [CLS] row: ignored
    a[..., 1:, 0] = 0.5
    a[..., 1:, 1:] = 0.5 * torch.eye(n)
    sub = patch_attention(a, 1)
    assert sub.shape == (1, 2, n, n)
    assert torch.allclose(sub, _diag(n, 1, 2))
    # distance infers the [CLS] prefix from the grid
    assert torch.allclose(attention_distance(a, 2, 16), torch.zeros(1, 2))
    s = attention_stats(a, (2, 2), 16)
    assert torch.allclose(s['nmi'], torch.ones(1, 2), atol=1e-5)
    assert torch.allclose(s['entropy'], torch.zeros(1, 2), atol=1e-6)
    # a patch row that gives everything to [CLS] becomes uniform over patches
    b = torch.zeros(1, 1, 1 + n, 1 + n)
    b[..., 0] = 1.0
    assert torch.allclose(patch_attention(b, 1), _uniform(n))


def test_per_head_outputs_and_ranges():
    torch.manual_seed(0)
    a = torch.randn(3, 4, 17, 17).softmax(-1)
    s = attention_stats(a, (4, 4), 8)
    for k in ('distance', 'entropy', 'nmi'):
        assert s[k].shape == (3, 4)
    assert (s['nmi'] >= 0).all() and (s['nmi'] <= 1).all()
    assert (s['entropy'] >= 0).all() and (s['entropy']
                                          <= math.log(16) + 1e-5).all()
    max_dist = 8 * math.hypot(3, 3)
    assert (s['distance'] >= 0).all() and (s['distance'] <= max_dist).all()
    # heads are independent: permuting heads permutes the outputs
    perm = torch.tensor([2, 0, 3, 1])
    s2 = attention_stats(a[:, perm], (4, 4), 8)
    assert torch.allclose(s2['nmi'], s['nmi'][:, perm], atol=1e-6)


def test_bad_shapes():
    with pytest.raises(ValueError):
        attention_distance(torch.ones(1, 1, 5, 4), 2, 16)
    with pytest.raises(ValueError):
        attention_distance(_uniform(6), (2, 2), 16, num_prefix_tokens=1)
