"""``HybridDistill(teachers=...)``: any number of teachers, each with its own
targets, necks and losses; the two-teacher form is one case of it."""
import copy

import pytest
import torch
from mmpretrain.registry import MODELS

from mmhybrid.models.algorithms.hybrid_distill import _gather_bias
from mmhybrid.models.losses.relation_functional import relation_logits
from mmhybrid.testing import TINY_ARCH, tiny_hybrid_cfg, tiny_vit_cfg

WIDE = dict(embed_dims=64, num_layers=2, num_heads=4, feedforward_channels=64)


def _neck(out):
    return dict(
        type='DistillProjectionNeck',
        in_channels=TINY_ARCH['embed_dims'],
        out_channels=out)


def three_teachers(**kw):
    """Two feature teachers (one wider, one on a 5x5 grid resampled to the
    student's 4x4) and a relation teacher."""
    cfg = tiny_hybrid_cfg()
    for k in ('neck', 'teacher_feat', 'teacher_rel'):
        cfg.pop(k)
    cfg['teachers'] = dict(
        clip=dict(
            teacher=dict(type='FrozenTeacher', backbone=tiny_vit_cfg(WIDE)),
            feature=dict(neck=_neck(64))),
        coarse=dict(
            teacher=dict(
                type='FrozenTeacher',
                backbone=tiny_vit_cfg(img_size=40, patch_size=8)),
            feature=dict(neck=_neck(48), tokens='all'),
            grid='interpolate'),
        mae=dict(
            teacher=dict(type='FrozenTeacher', backbone=tiny_vit_cfg()),
            relation=dict(relation_pairs=[(0, 0), (1, 2)])))
    cfg.update(kw)
    return cfg


def _build(cfg):
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def _batch(n=3):
    return torch.randn(
        n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize('ratio', [0.0, 0.5])
def test_three_teachers_give_one_loss_per_target(ratio):
    model = _build(three_teachers())
    model.mask_ratio = ratio
    losses = model.loss(_batch())
    assert set(losses) == {
        'loss_feat_clip', 'loss_feat_coarse', 'loss_rel_mae', 'mask_ratio'
    }
    for k, v in losses.items():
        if k.startswith('loss'):
            assert torch.isfinite(v) and v.item() > 0, k
    total, _ = model.parse_losses(losses)
    total.backward()
    for name in ('clip', 'coarse'):
        grads = [p.grad for p in model.necks[name].parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), name
    # the student and its heads are saved, the teachers are not
    keys = set(model.state_dict())
    assert any(k.startswith('necks.clip.') for k in keys)
    assert any(k.startswith('necks.coarse.') for k in keys)
    assert not any('teacher' in k for k in keys)
    # the resampled teacher still sees its own 40-px images, 5x5 tokens
    assert model.resampled == {'coarse': (5, 5)}


def test_two_teachers_written_as_teachers_give_the_same_losses():
    legacy = tiny_hybrid_cfg()
    two = copy.deepcopy(legacy)
    for k in ('neck', 'teacher_feat', 'teacher_rel'):
        two.pop(k)
    two['teachers'] = dict(
        tc=dict(
            teacher=legacy['teacher_feat'], feature=dict(neck=legacy['neck'])),
        tm=dict(teacher=legacy['teacher_rel'], relation=dict()))
    a, b = _build(legacy), _build(two)
    b.necks['tc'].load_state_dict(a.neck.state_dict())
    b.backbone.load_state_dict(a.backbone.state_dict())
    for n_a, n_b in (('teacher_feat', 'tc'), ('teacher_rel', 'tm')):
        b.teachers[n_b].load_state_dict(a.teachers[n_a].state_dict())
    for ratio in (0.0, 0.5):
        a.mask_ratio = b.mask_ratio = ratio
        x = _batch()
        torch.manual_seed(3)
        la = a.loss(x)
        torch.manual_seed(3)
        lb = b.loss(x)
        assert la['loss_feat'].item() == pytest.approx(
            lb['loss_feat_tc'].item(), abs=1e-7)
        assert la['loss_rel'].item() == pytest.approx(
            lb['loss_rel_tm'].item(), abs=1e-7)


def test_importance_by_teacher_name_and_tokens_choice():
    cfg = three_teachers(importance_source='mae')
    cfg['teachers']['clip']['feature']['tokens'] = 'cls'
    model = _build(cfg)
    assert model.importance_teacher == 'mae'
    asked = model.teacher_requests()
    assert asked['mae']['cls_attn'] and not asked['clip']['cls_attn']
    # the relation-only teacher ranks, so it runs to its last block
    assert asked['mae']['out_layers'] == (0, 2)
    model.mask_ratio = 0.5
    losses = model.loss(_batch())
    assert torch.isfinite(losses['loss_feat_clip'])


@pytest.mark.parametrize('change, message', [
    (lambda c: c['teachers']['mae'].update(grid='interpolate') or c['teachers']
     ['mae']['teacher'].update(backbone=tiny_vit_cfg(img_size=40)),
     "teachers.mae.grid='interpolate': the teacher sees a (5, 5) patch grid, "
     'the student a (4, 4): relations need the same grid'),
    (lambda c: c['teachers']['coarse'].pop('grid'),
     'teachers.coarse.teacher.backbone.img_size=40: gives a (5, 5) patch grid'
     ),
    (lambda c: c.update(importance_source='dino'),
     "importance_source='dino': expected 'feat', 'rel' or a teacher's name"),
    (lambda c: c['teachers']['clip']['feature']['neck'].update(out_channels=48
                                                               ),
     'teachers.clip.feature.neck.out_channels=48: the teacher width is 64'),
    (lambda c: c['teachers']['mae'].pop('relation'), 'teachers.mae='),
    (lambda c: c['teachers']['mae']['relation'].update(relation_pairs=[(0, 5)]
                                                       ),
     'teachers.mae.relation.relation_pairs[0]=(0, 5): teacher block 5 out of '
     'range [0, 3) (teachers.mae.teacher has 3 blocks)'),
    (lambda c: c['teachers']['clip']['feature'].update(
        loss=dict(type='FeatureDistillLoss', loss_weight=-1.0)),
     'teachers.clip.feature.loss.loss_weight=-1.0: a negative weight'),
    (lambda c: c['teachers']['clip'].update(ranks=True),
     'teachers.clip.ranks=True: unknown key'),
    (lambda c: c.update(neck=_neck(64)),
     'give either teachers=... or the two-teacher keys'),
])
def test_bad_teachers_are_one_clear_error(change, message):
    cfg = three_teachers()
    change(cfg)
    with pytest.raises(ValueError) as e:
        MODELS.build(cfg)
    assert message in str(e.value)
    assert '\n' not in str(e.value)


def test_relation_bias_is_gathered_at_kept_tokens_and_added():
    g = torch.Generator().manual_seed(0)
    B, H, L, C = 2, 3, 6, 12
    bias = torch.randn(1, H, L, L, generator=g)
    keep = torch.tensor([[3, 1], [4, 2]])
    index = torch.cat([torch.zeros(B, 1, dtype=torch.long), keep + 1], 1)
    got = _gather_bias(bias, index)
    for b in range(B):
        want = bias[0][:, index[b]][:, :, index[b]]
        assert torch.equal(got[b], want)
    # the relation loss adds it to the teacher's logits
    loss = MODELS.build(dict(type='RelationDistillLoss'))
    q, k = torch.randn(2, B, L, C, generator=g)
    s = dict(
        q=torch.randn(B, L, C, generator=g),
        k=torch.randn(B, L, C, generator=g))
    with_bias = loss([s], [dict(q=q, k=k, bias=bias)], H)
    t = (relation_logits(q, k, H) + bias).softmax(-1)
    log_s = relation_logits(s['q'], s['k'], H).log_softmax(-1)
    want = (t * (t.log() - log_s)).sum(-1).mean()
    assert with_bias.item() == pytest.approx(want.item(), rel=1e-5)
    assert with_bias.item() != pytest.approx(
        loss([s], [dict(q=q, k=k)], H).item(), rel=1e-3)


@pytest.mark.parametrize('mode', ['standardize', 'phi-s'])
def test_feature_norm_measured_over_the_first_batches_then_fixed(mode):
    cfg = three_teachers()
    cfg['teachers']['clip']['feature']['norm'] = dict(mode=mode, num_batches=2)
    model = _build(cfg)
    norm = model.target_norms['clip']
    assert not model.loss_feat_clip.whiten_target  # normalised once
    model.train()
    for step in range(3):
        model.loss(_batch())
        assert int(norm.batches) == min(step + 1, 2)
    fixed = {k: v.clone() for k, v in norm.state_dict().items()}
    model.loss(_batch())
    for k, v in norm.state_dict().items():
        assert torch.equal(v, fixed[k]), k
    # saved with the student (a resumed run keeps them)
    assert 'target_norms.clip.mean' in model.state_dict()
    # the targets it gives: zero mean, unit variance per channel over the
    # data it measured (two batches of 3 images, 17 tokens each)
    clip = model.teachers['clip']
    x = torch.cat([_batch(), _batch()])  # the same images as measured
    with torch.no_grad():
        y = norm(clip(x).tokens).reshape(-1, 64).double()
    assert y.mean(0).abs().max() < 1e-4
    var = y.var(0, unbiased=False)
    if mode == 'standardize':
        assert (var - 1).abs().max() < 1e-3
    else:  # PHI-S: every channel the same variance, covariance rotated
        assert (var - 1).abs().max() < 1e-3
        cov = torch.cov(y.T, correction=0)
        assert cov.sub(torch.diag(cov.diagonal())).abs().max() > 1e-2


def test_phi_s_spreads_the_variance_evenly():
    from mmhybrid.models.utils.target_norm import equal_diagonal_rotation
    lam = torch.rand(
        48, dtype=torch.float64,
        generator=torch.Generator().manual_seed(0))**4 * 10
    Q = equal_diagonal_rotation(lam)
    assert torch.allclose(Q @ Q.T, torch.eye(48, dtype=torch.float64))
    diag = (Q @ torch.diag(lam) @ Q.T).diagonal()
    assert torch.allclose(diag, lam.mean().expand(48), atol=1e-12)


def test_a_whitening_loss_with_a_feature_norm_is_refused():
    cfg = three_teachers()
    cfg['teachers']['clip']['feature'].update(
        norm='phi-s', loss=dict(type='FeatureDistillLoss', whiten_target=True))
    with pytest.raises(
            ValueError,
            match='teachers.clip.feature.loss.'
            'whiten_target=True: the target is normalised by '
            "teachers.clip.feature.norm='phi-s' already"):
        MODELS.build(cfg)


def _no_cls_teacher():
    """A ZooTeacher without [CLS] (SAM-, SigLIP-style) on the student's 4x4
    grid."""
    return dict(
        type='ZooTeacher',
        model=dict(
            type='VisionTransformer',
            arch=dict(
                embed_dims=48,
                num_layers=2,
                num_heads=3,
                feedforward_channels=96),
            img_size=32,
            patch_size=8,
            with_cls_token=False,
            out_type='featmap'),
        checkpoint=False)


def test_a_teacher_without_cls_teaches_its_patches_only():
    cfg = three_teachers()
    cfg['teachers']['siglip'] = dict(
        teacher=_no_cls_teacher(),
        feature=dict(neck=_neck(48), tokens='patches'))
    model = _build(cfg)
    assert model.without_cls == {'siglip'}
    for ratio in (0.0, 0.5):
        model.mask_ratio = ratio
        loss = model.loss(_batch())['loss_feat_siglip']
        assert torch.isfinite(loss) and loss.item() > 0
    # anything that needs its [CLS] is one line naming the key
    bad = copy.deepcopy(cfg)
    bad['teachers']['siglip']['feature']['tokens'] = 'all'
    bad['teachers']['siglip']['relation'] = dict()
    bad['importance_source'] = 'siglip'
    with pytest.raises(ValueError) as e:
        MODELS.build(bad)
    msg = str(e.value)
    assert "teachers.siglip.feature.tokens='all': the teacher has no [CLS] " \
        "token; expected 'patches'" in msg
    assert 'teachers.siglip.relation={}: the teacher has no [CLS] token' in msg
    assert "importance_source='siglip': teacher 'siglip' has no [CLS] token" \
        in msg


@pytest.mark.parametrize('ratio', [0.0, 0.5])
def test_three_teachers_step_equals_the_plain_reference(ratio):
    """Every loss of the optimised step (teachers run once and truncated, q/k
    gathered, tokens resampled on a grid of their own, the student on kept
    tokens only) against the plain one (explicit maps, full teacher maps
    restricted and renormalised)."""
    from mmhybrid.models.utils import num_kept_tokens, select_kept_tokens
    from mmhybrid.testing.reference import (plain_importance,
                                            plain_teacher_losses)
    cfg = three_teachers(token_selection='topk')
    cfg['teachers']['coarse']['feature']['tokens'] = 'patches'
    model = _build(cfg)
    model.eval()
    model.mask_ratio = ratio
    x = _batch()
    losses = model.loss(x)
    keep = None
    if ratio:
        imp = plain_importance(model.teachers['clip'], x)
        keep = select_kept_tokens(imp, num_kept_tokens(16, ratio), 'topk')
    with torch.no_grad():
        ref = plain_teacher_losses(model, x, keep)
    assert set(ref) == {'loss_feat_clip', 'loss_feat_coarse', 'loss_rel_mae'}
    for name, value in ref.items():
        assert losses[name].item() == pytest.approx(
            value.item(), rel=1e-5, abs=1e-6), name


def test_a_loaded_target_norm_is_measured_by_its_loaded_count():
    from mmhybrid.models.utils.target_norm import TargetNorm
    done = TargetNorm(4, 'standardize', num_batches=1)
    done.update(torch.randn(2, 3, 4))
    assert done.measured
    fresh = TargetNorm(4, 'standardize', num_batches=1)
    assert not fresh.measured
    fresh.load_state_dict(done.state_dict())
    assert fresh.measured  # a resumed run does not measure again
    before = fresh.mean.clone()
    fresh.update(torch.randn(2, 3, 4) + 5)
    assert torch.equal(fresh.mean, before)
    # and a fresh state loaded into a measured one measures again
    done.load_state_dict(TargetNorm(4, 'standardize', 1).state_dict())
    assert not done.measured
