"""``importance_source='rel'``: the relation teacher ranks the tokens.

The kept tokens are the most important ones by the [CLS]->patch attention of
the relation teacher's last block, averaged over its heads
(docs/method.md#importance); the step's losses must then equal the
plain reference step on exactly those tokens, and differ from the reference on
the tokens the feature teacher would keep (so the check can fail).
"""
import pytest
import torch
from mmpretrain.registry import MODELS

from mmhybrid.testing import tiny_hybrid_cfg
from mmhybrid.testing.reference import (plain_importance, plain_losses,
                                        plain_topk)

NUM_PATCHES = 16


def _model(**kw):
    torch.manual_seed(0)
    model = MODELS.build(tiny_hybrid_cfg(token_selection='topk', **kw))
    model.init_weights()
    model.eval()  # no dropout; teachers are in eval mode regardless
    return model


def _close(a, b):
    return abs(a - b) <= 1e-6 + 1e-5 * abs(b)


@pytest.mark.parametrize('ratio', [0.25, 0.5, 0.75])
def test_rel_importance_keeps_relation_teachers_top_tokens(ratio):
    model = _model(importance_source='rel')
    model.mask_ratio = ratio
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    num_keep = round(NUM_PATCHES * (1 - ratio))

    keep_rel = plain_topk(plain_importance(model.teacher_rel, x), num_keep)
    keep_feat = plain_topk(plain_importance(model.teacher_feat, x), num_keep)
    assert not torch.equal(keep_rel, keep_feat)  # the teachers disagree

    losses = model.loss(x)
    with torch.no_grad():
        want = plain_losses(model, x, keep_rel)
        other = plain_losses(model, x, keep_feat)
    got = (losses['loss_feat'].item(), losses['loss_rel'].item())
    assert _close(got[0], want[0].item()), (got, want)
    assert _close(got[1], want[1].item()), (got, want)
    # the feature teacher's tokens give other losses
    assert not (_close(got[0], other[0].item())
                and _close(got[1], other[1].item()))


def test_feat_importance_is_the_default_and_differs_from_rel():
    """The default ranks by the feature teacher: same model weights, same
    images, the other teacher's tokens."""
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    model = _model()
    model.mask_ratio = 0.5
    keep_feat = plain_topk(plain_importance(model.teacher_feat, x), 8)
    losses = model.loss(x)
    with torch.no_grad():
        want = plain_losses(model, x, keep_feat)
    assert _close(losses['loss_feat'].item(), want[0].item())
    assert _close(losses['loss_rel'].item(), want[1].item())
