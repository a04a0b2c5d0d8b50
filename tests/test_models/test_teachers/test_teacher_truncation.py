"""Teachers run only up to the deepest block they feed.

Calls are counted with forward hooks on the real sub-modules of each block
(``block_forward`` calls ``layer.ln1``, ``layer.attn.qkv``, ... but not the
block itself) and on the final norm.
"""
import contextlib
from typing import Dict, Iterator

import pytest
import torch
from mmpretrain.registry import MODELS

from mmhybrid.models.backbones.hybrid_vit import HybridViT, num_blocks_to_run
from mmhybrid.testing import tiny_hybrid_cfg, tiny_vit_cfg

EMBED = 48
DEEP = dict(
    embed_dims=EMBED,
    num_layers=5,
    num_heads=3,
    feedforward_channels=2 * EMBED)


def _perturb(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def _teacher(**kw):
    torch.manual_seed(0)
    teacher = MODELS.build(
        dict(
            type='FrozenTeacher',
            backbone=tiny_vit_cfg(DEEP, norm_cfg=dict(type='LN', eps=1e-6)),
            **kw))
    teacher.init_weights()
    _perturb(teacher.backbone, 1)  # final norm != identity
    return teacher


def _images(n=2, seed=3):
    return torch.randn(
        n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@contextlib.contextmanager
def count_calls(vit: HybridViT) -> Iterator[Dict[str, int]]:
    """Counts, per block (``'block0'``, ...) and for the final norm
    (``'final_norm'``), how often it ran."""
    calls = {f'block{i}': 0 for i in range(vit.num_layers)}
    calls['final_norm'] = 0

    def hook(name):

        def fn(module, args, out):
            calls[name] += 1

        return fn

    handles = [
        layer.attn.qkv.register_forward_hook(hook(f'block{i}'))
        for i, layer in enumerate(vit.layers)
    ]
    if vit.final_norm:
        handles.append(vit.ln1.register_forward_hook(hook('final_norm')))
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize('out_layers, cls_attn, final_tokens, expected',
                         [((0, 2), False, False, 3), ((), False, False, 0),
                          ((4, ), False, False, 5), ((0, ), True, False, 5),
                          ((0, ), False, True, 5)])
def test_num_blocks_to_run(out_layers, cls_attn, final_tokens, expected):
    assert num_blocks_to_run(5, out_layers, cls_attn, final_tokens) == expected


def test_truncated_teacher_returns_the_full_teachers_projections():
    """fp32, exact: the blocks that run are the full teacher's blocks."""
    teacher = _teacher()
    x = _images()
    full = teacher(x, out_layers=(0, 2), parts=('q', 'k', 'v'))
    cut = teacher(
        x, out_layers=(0, 2), parts=('q', 'k', 'v'), final_tokens=False)
    assert cut.tokens is None and cut.cls_attn is None
    assert set(cut.relations) == set(full.relations) == {0, 2}
    for i in (0, 2):
        assert set(cut.relations[i]) == {'q', 'k', 'v'}
        for p, t in cut.relations[i].items():
            assert t.dtype == torch.float32
            torch.testing.assert_close(t, full.relations[i][p], rtol=0, atol=0)


def test_blocks_beyond_the_deepest_requested_are_not_run():
    teacher = _teacher()
    x = _images()
    with count_calls(teacher.backbone) as calls:
        teacher(x, out_layers=(2, 0), final_tokens=False)
    assert calls == dict(
        block0=1, block1=1, block2=1, block3=0, block4=0, final_norm=0)
    # the feature teacher's request: every block, then the final norm
    with count_calls(teacher.backbone) as calls:
        teacher(x, cls_attn=True)
    assert calls == dict(
        block0=1, block1=1, block2=1, block3=1, block4=1, final_norm=1)


@pytest.mark.slow  # inductor's C++ compile: ~40 s on 2 cores
def test_compiled_truncated_teacher_equals_eager():
    eager = _teacher()
    compiled = _teacher(compile=True)
    x = _images()
    want = eager(x, out_layers=(1, ), final_tokens=False)
    got = compiled(x, out_layers=(1, ), final_tokens=False)
    assert got.tokens is None and set(got.relations) == {1}
    for p in ('q', 'k'):
        torch.testing.assert_close(
            got.relations[1][p], want.relations[1][p], rtol=1e-5, atol=1e-5)


def _distiller(**kw):
    torch.manual_seed(0)
    model = MODELS.build(
        tiny_hybrid_cfg(rel_arch=DEEP, relation_pairs=[(0, 0), (1, 2)], **kw))
    model.init_weights()
    return model


@pytest.mark.parametrize('ratio', [0.0, 0.5])
def test_training_step_runs_the_relation_teacher_to_its_deepest_pair(ratio):
    """Pairs reach Tm block 2 of 5: blocks 3, 4 and the final norm of Tm never
    run; Tc (feature target and [CLS] attention) runs in full."""
    model = _distiller()
    model.mask_ratio = ratio
    with count_calls(model.teacher_rel.backbone) as tm, \
            count_calls(model.teacher_feat.backbone) as tc:
        losses = model.loss(_images(4))
    assert tm == dict(
        block0=1, block1=1, block2=1, block3=0, block4=0, final_norm=0)
    assert set(tc.values()) == {1}
    assert torch.isfinite(losses['loss_rel']) and losses['loss_rel'] > 0


def test_relation_teacher_that_ranks_tokens_runs_every_block():
    """``importance_source='rel'`` needs Tm's last-block [CLS] attention, but
    still not its final norm."""
    model = _distiller(importance_source='rel')
    model.mask_ratio = 0.5
    with count_calls(model.teacher_rel.backbone) as tm:
        model.loss(_images(4))
    assert tm == dict(
        block0=1, block1=1, block2=1, block3=1, block4=1, final_norm=0)


@pytest.mark.parametrize('ratio', [0.0, 0.5])
def test_truncated_step_loss_equals_plain_reference(ratio):
    """The plain reference runs both teachers in full (every block, final
    norm): the step's losses are unchanged by the truncation."""
    from mmhybrid.models.utils import num_kept_tokens, select_kept_tokens
    from mmhybrid.testing.reference import plain_losses
    model = _distiller(token_selection='topk')
    model.eval()
    model.mask_ratio = ratio
    x = _images(4)
    losses = model.loss(x)
    tc = model.teacher_feat
    last = tc.num_layers - 1
    imp = tc.backbone.attention_maps(x * tc.in_scale + tc.in_shift,
                                     [last])[last][:, :, 0, 1:].mean(1)
    keep = select_kept_tokens(imp, num_kept_tokens(16, ratio), 'topk')
    with torch.no_grad():
        ref_feat, ref_rel = plain_losses(model, x,
                                         None if ratio == 0 else keep)
    assert losses['loss_feat'].item() == pytest.approx(
        ref_feat.item(), rel=1e-5, abs=1e-6)
    assert losses['loss_rel'].item() == pytest.approx(
        ref_rel.item(), rel=1e-5, abs=1e-6)
