import pytest
import torch

from mmhybrid.models.utils import (gather_tokens, mask_ratio_at,
                                   num_kept_tokens, renormalize_relation,
                                   select_kept_tokens, with_cls_index)


def test_num_kept_tokens():
    assert num_kept_tokens(196, 0.0) == 196
    assert num_kept_tokens(196, 0.5) == 98
    assert num_kept_tokens(196, 0.75) == 49
    with pytest.raises(ValueError, match=r'\[0, 1\)'):
        num_kept_tokens(196, 1.0)
    with pytest.raises(ValueError, match='-0.1'):
        num_kept_tokens(196, -0.1)
    with pytest.raises(ValueError, match='keeps zero'):
        num_kept_tokens(2, 0.8)


def test_schedules():
    assert mask_ratio_at(0.0, 0.5) == 0.0
    assert mask_ratio_at(0.5, 0.5) == pytest.approx(0.25)
    assert mask_ratio_at(1.0, 0.5) == pytest.approx(0.5)
    assert mask_ratio_at(2.0, 0.5) == pytest.approx(0.5)  # clipped
    assert mask_ratio_at(0.5, 0.5, 'cosine') == pytest.approx(0.25)
    assert mask_ratio_at(0.25, 0.5, 'cosine') < mask_ratio_at(0.25, 0.5)
    assert mask_ratio_at(0.0, 0.4, 'constant') == pytest.approx(0.4)
    with pytest.raises(ValueError, match="'step'"):
        mask_ratio_at(0.1, 0.5, 'step')


@pytest.mark.parametrize('mode', ['sample', 'topk'])
def test_selection_invariants(mode):
    imp = torch.rand(4, 50)
    idx = select_kept_tokens(imp, 20, mode)
    assert idx.shape == (4, 20)
    assert idx.dtype == torch.int64
    for row in idx:
        assert len(set(row.tolist())) == 20  # without replacement
        assert row.tolist() == sorted(row.tolist())
        assert 0 <= row.min() and row.max() < 50


def test_topk_keeps_most_important():
    imp = torch.tensor([[0.1, 0.9, 0.3, 0.8, 0.0]])
    assert select_kept_tokens(imp, 2, 'topk').tolist() == [[1, 3]]


def test_sampling_is_seeded_and_random():
    imp = torch.rand(2, 30)
    a = select_kept_tokens(imp, 10, generator=torch.Generator().manual_seed(3))
    b = select_kept_tokens(imp, 10, generator=torch.Generator().manual_seed(3))
    c = select_kept_tokens(imp, 10, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_sampling_follows_importance():
    # 10 tokens with importance 10, 10 with importance 1; keep 5 of 20
    imp = torch.cat([torch.full((10, ), 10.0), torch.ones(10)])[None]
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(20)
    for _ in range(400):
        counts[select_kept_tokens(imp, 5, generator=gen)[0]] += 1
    high, low = counts[:10].sum(), counts[10:].sum()
    assert high > 5 * low  # importance-weighted, not uniform
    assert low > 0  # but still random: unimportant tokens are drawn too


def test_gather_and_cls_index():
    x = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    keep = torch.tensor([[0, 2], [1, 3]])
    idx = with_cls_index(keep)
    assert idx.tolist() == [[0, 1, 3], [0, 2, 4]]
    out = gather_tokens(x, idx)
    assert torch.equal(out[1, 2], x[1, 4])


def test_renormalised_relation_rows_and_softmax_identity():
    logits = torch.randn(2, 3, 6, 6)
    attn = logits.softmax(-1)
    idx = torch.tensor([[0, 2, 5], [0, 1, 4]])
    sub = renormalize_relation(attn, idx)
    torch.testing.assert_close(sub.sum(-1), torch.ones(2, 3, 3))
    # the training path: softmax of logits restricted to kept x kept
    rows = idx[:, None, :, None].expand(2, 3, 3, 6)
    kept_logits = logits.gather(2, rows).gather(
        3, idx[:, None, None, :].expand(2, 3, 3, 3))
    torch.testing.assert_close(
        sub, kept_logits.softmax(-1), rtol=1e-5, atol=1e-6)
