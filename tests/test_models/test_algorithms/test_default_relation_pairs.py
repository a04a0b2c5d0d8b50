"""Default relation pairs match student and teacher blocks by relative depth.

Without ``relation_pairs`` the relation loss pairs every student block but the
last with the relation-teacher block at the same relative depth,
``j = round(i * (Lt - 1) / (Ls - 1))`` (docs/method.md#relation-pairs). The
pairs below are written out by hand from that rule; the step's ``loss_rel``
must equal the plain reference on them and differ from the identity pairing.
"""
import pytest
import torch
from mmpretrain.registry import MODELS

from mmhybrid.testing import tiny_hybrid_cfg
from mmhybrid.testing.reference import plain_losses


def _arch(depth):
    return dict(
        embed_dims=48, num_layers=depth, num_heads=3, feedforward_channels=96)


def _close(a, b):
    return abs(a - b) <= 1e-6 + 1e-5 * abs(b)


@pytest.mark.parametrize(
    'student_depth,teacher_depth,pairs',
    [
        # shallower student, scale (5 - 1) / (3 - 1) = 2: block 1 -> 2
        (3, 5, [(0, 0), (1, 2)]),
        # scale 5 / 3: block 1 -> 1.67 -> 2, block 2 -> 3.33 -> 3
        (4, 6, [(0, 0), (1, 2), (2, 3)]),
        # deeper student, scale 2 / 3: 1 -> 0.67 -> 1, 2 -> 1.33 -> 1
        (4, 3, [(0, 0), (1, 1), (2, 1)]),
    ])
def test_default_pairs_follow_relative_depth(student_depth, teacher_depth,
                                             pairs):
    torch.manual_seed(0)
    model = MODELS.build(
        tiny_hybrid_cfg(
            student_arch=_arch(student_depth), rel_arch=_arch(teacher_depth)))
    model.init_weights()
    model.eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    losses = model.loss(x)  # mask ratio 0: every token kept
    identity = [(i, i) for i in range(student_depth - 1)]
    with torch.no_grad():
        _, want = plain_losses(model, x, relation_pairs=pairs)
        _, other = plain_losses(model, x, relation_pairs=identity)
    got = losses['loss_rel'].item()
    assert _close(got, want.item()), (got, want.item())
    assert not _close(got, other.item()), (got, other.item())


def test_equal_depths_pair_block_by_block():
    torch.manual_seed(0)
    model = MODELS.build(
        tiny_hybrid_cfg(student_arch=_arch(4), rel_arch=_arch(4)))
    model.init_weights()
    model.eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model.loss(x)['loss_rel'].item()
        _, want = plain_losses(
            model, x, relation_pairs=[(0, 0), (1, 1), (2, 2)])
    assert _close(got, want.item())
