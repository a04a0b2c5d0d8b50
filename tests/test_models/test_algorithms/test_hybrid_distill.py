import copy

import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmpretrain.registry import MODELS

from mmhybrid.models.utils import num_kept_tokens, select_kept_tokens
from mmhybrid.testing import tiny_hybrid_cfg
from mmhybrid.testing.reference import plain_losses


def _build(**kw):
    torch.manual_seed(0)
    model = MODELS.build(tiny_hybrid_cfg(**kw))
    model.init_weights()
    return model


def _batch(n=4, size=32):
    torch.manual_seed(1)
    return torch.randn(n, 3, size, size)


def test_loss_terms_and_mask_ratio():
    model = _build()
    model.mask_ratio = 0.5
    losses = model.loss(_batch())
    assert set(losses) == {'loss_feat', 'loss_rel', 'mask_ratio'}
    assert losses['mask_ratio'].item() == pytest.approx(0.5)
    for k in ('loss_feat', 'loss_rel'):
        assert torch.isfinite(losses[k]) and losses[k].item() > 0
        assert losses[k].requires_grad
    # logged, but not summed into the total
    total, log_vars = model.parse_losses(losses)
    assert total.item() == pytest.approx(
        (losses['loss_feat'] + losses['loss_rel']).item(), rel=1e-6)
    assert 'mask_ratio' in log_vars


def test_teachers_are_frozen_and_not_saved():
    model = _build()
    teachers = [model.teacher_feat, model.teacher_rel]
    before = [copy.deepcopy(t.state_dict()) for t in teachers]
    optim = build_optim_wrapper(
        model,
        dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-2)))
    model.train()
    assert all(not t.training for t in teachers)
    assert all(not p.requires_grad for t in teachers for p in t.parameters())
    # the optimizer sees the student and head only
    optim_params = {
        id(p)
        for g in optim.optimizer.param_groups
        for p in g['params']
    }
    assert optim_params == {id(p) for p in model.parameters()}
    assert not optim_params & {id(p) for t in teachers for p in t.parameters()}
    student_before = copy.deepcopy(model.backbone.state_dict())
    for step in range(3):
        model.mask_ratio = 0.25 * step
        losses = model.loss(_batch())
        total, _ = model.parse_losses(losses)
        optim.update_params(total)
    for t, b in zip(teachers, before):
        for k, v in t.state_dict().items():
            assert torch.equal(v, b[k]), f'teacher weight {k} changed'
    changed = [
        k for k, v in model.backbone.state_dict().items()
        if not torch.equal(v, student_before[k])
    ]
    assert 'layers.0.attn.qkv.weight' in changed and 'cls_token' in changed
    sd = model.state_dict()
    assert not [k for k in sd if 'teacher' in k]
    assert {k.split('.')[0]
            for k in sd} <= {'backbone', 'neck', 'data_preprocessor'}


def test_student_gets_gradients_teachers_none():
    model = _build()
    model.mask_ratio = 0.5
    total, _ = model.parse_losses(model.loss(_batch()))
    total.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f'{name} got no gradient'
    for t in (model.teacher_feat, model.teacher_rel):
        assert all(p.grad is None for p in t.parameters())


@pytest.mark.parametrize('ratio', [0.0, 0.5])
def test_optimized_step_equals_plain_reference(ratio):
    model = _build(token_selection='topk')
    model.eval()  # no dropout anywhere; teachers are eval regardless
    model.mask_ratio = ratio
    x = _batch()
    losses = model.loss(x)
    # same kept tokens as the model: top-k of Tc's last-block [CLS] attention
    tc_in = x * model.teacher_feat.in_scale + model.teacher_feat.in_shift
    imp = model.teacher_feat.backbone.attention_maps(tc_in, [2])[2][:, :, 0,
                                                                    1:].mean(1)
    keep = select_kept_tokens(imp, num_kept_tokens(16, ratio), 'topk')
    with torch.no_grad():
        ref_feat, ref_rel = plain_losses(model, x,
                                         None if ratio == 0 else keep)
    assert losses['loss_feat'].item() == pytest.approx(
        ref_feat.item(), rel=1e-5, abs=1e-6)
    assert losses['loss_rel'].item() == pytest.approx(
        ref_rel.item(), rel=1e-5, abs=1e-6)


def test_keep_ratio_shrinks_student_sequence():
    model = _build()
    seen = []
    handle = model.backbone.layers[0].ln1.register_forward_hook(
        lambda m, i, o: seen.append(i[0].shape[1]))
    for ratio in (0.0, 0.5, 0.75):
        model.mask_ratio = ratio
        model.loss(_batch())
    handle.remove()
    assert seen == [17, 9, 5]  # [CLS] + 16, 8, 4 patch tokens


def test_defaults_and_layer_depth():
    model = _build()
    assert model.relation_pairs == [(0, 0), (1, 1)]
    depth, total = model.get_layer_depth('backbone.layers.1.attn.qkv.weight')
    assert (depth, total) == (2, 5)
    assert model.get_layer_depth('neck.proj.weight') == (4, 5)
    feats = model.extract_feat(_batch())
    assert feats[0].shape == (4, 17, 48)


@pytest.mark.parametrize('kwargs,match', [
    (dict(relation_pairs=[(0, 3)]),
     r'relation_pairs\[0\]=\(0, 3\): teacher block 3 out of range \[0, 3\)'),
    (dict(relation_pairs=[(5, 0)]), r'student block 5 out of range'),
    (dict(relation_pairs=[(0, 0), (0, 0)]),
     r'relation_pairs\[1\]=\(0, 0\): duplicate layer pair'),
    (dict(relation_pairs=[]),
     r'relation_pairs=\[\]: expected a non-empty list'),
    (dict(importance_source='cls'),
     r"importance_source='cls': expected one of \('feat', 'rel'\)"),
    (dict(token_selection='random'),
     r"token_selection='random': expected one of \('sample', 'topk'\)"),
    (dict(mask_ratio=1.0), r'mask_ratio=1.0: mask ratio must be in \[0, 1\)'),
    (dict(
        rel_arch=dict(
            embed_dims=40, num_layers=3, num_heads=5, feedforward_channels=80)
    ), 'student width 48 cannot be re-split into the 5 heads of '
     'teacher_rel.backbone.arch'),
    (dict(loss_feat=dict(type='FeatureDistillLoss', loss_type='huber')),
     "FeatureDistillLoss: loss_type='huber': expected one of"),
])
def test_bad_config_fails_at_build(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MODELS.build(tiny_hybrid_cfg(**kwargs))


def test_head_resplit_other_teacher_width():
    # a 96-wide, 4-head relation teacher with a 48-wide, 3-head student: the
    # student's q/k are split into 4 heads of 12 channels
    model = _build(
        rel_arch=dict(
            embed_dims=96, num_layers=3, num_heads=4,
            feedforward_channels=192),
        feat_arch=dict(
            embed_dims=64, num_layers=2, num_heads=4,
            feedforward_channels=128))
    model.mask_ratio = 0.5
    losses = model.loss(_batch())
    assert torch.isfinite(losses['loss_rel'])


def test_patch_grid_mismatch_is_rejected():
    with pytest.raises(ValueError, match='same grid'):
        MODELS.build(
            tiny_hybrid_cfg(
                teacher_rel=dict(
                    type='FrozenTeacher',
                    backbone=dict(
                        type='HybridViT',
                        arch='deit-tiny',
                        img_size=32,
                        patch_size=4,
                        out_type='raw'))))
