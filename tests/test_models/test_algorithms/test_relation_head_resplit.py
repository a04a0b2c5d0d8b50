"""The relation loss splits the student's q/k into the RELATION TEACHER's head
count (docs/method.md#head-resplit), whatever the student's own width and head
count: the step's ``loss_rel`` equals the plain reference that re-splits the
student into the teacher's heads, and differs from the value with the student's
own head count (so the check can fail)."""
import pytest
import torch
from mmpretrain.registry import MODELS

from mmhybrid.testing import tiny_hybrid_cfg
from mmhybrid.testing.reference import (plain_importance, plain_losses,
                                        plain_topk)

STUDENT = dict(
    embed_dims=48, num_layers=3, num_heads=3, feedforward_channels=96)
FEAT = dict(embed_dims=64, num_layers=2, num_heads=4, feedforward_channels=128)
TEACHERS = {
    # wider teacher, other head count: student q/k as 4 heads of 12 channels
    'wider_4_heads':
    dict(embed_dims=96, num_layers=3, num_heads=4, feedforward_channels=192),
    # same width, more heads: the student's 3 heads become 6 of 8 channels
    'same_width_6_heads':
    dict(embed_dims=48, num_layers=3, num_heads=6, feedforward_channels=96),
}


def _close(a, b):
    return abs(a - b) <= 1e-6 + 1e-5 * abs(b)


@pytest.mark.parametrize('ratio', [0.0, 0.5])
@pytest.mark.parametrize('teacher', sorted(TEACHERS))
def test_relation_loss_uses_relation_teachers_heads(teacher, ratio):
    torch.manual_seed(0)
    model = MODELS.build(
        tiny_hybrid_cfg(
            student_arch=STUDENT,
            feat_arch=FEAT,
            rel_arch=TEACHERS[teacher],
            token_selection='topk'))
    model.init_weights()
    model.eval()
    model.mask_ratio = ratio
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    keep = None
    if ratio:
        keep = plain_topk(
            plain_importance(model.teacher_feat, x), round(16 * (1 - ratio)))

    losses = model.loss(x)
    with torch.no_grad():
        want_feat, want_rel = plain_losses(model, x, keep)
    assert _close(losses['loss_feat'].item(), want_feat.item())
    assert _close(losses['loss_rel'].item(), want_rel.item()), \
        (losses['loss_rel'].item(), want_rel.item())

    # split into the student's own 3 heads on both sides, the loss differs:
    # the head count the loss is given matters
    with torch.no_grad():
        _, other_rel = plain_losses(
            model, x, keep, relation_heads=STUDENT['num_heads'])
    assert not _close(losses['loss_rel'].item(), other_rel.item()), \
        (losses['loss_rel'].item(), other_rel.item())
