"""The shapes a compiled run meets, emulated on the CPU (dynamo's tracing and
guards through the ``aot_eager`` backend, without code generation).

* Progressive masking changes the student's kept-token count as training goes
  (99 counts for the ViT-B flagship); with automatic dynamic shapes the
  compiled step makes that dimension dynamic once and never recompiles again,
  where ``dynamic=False`` would recompile per count and hit dynamo's
  recompile limit (the step would run eagerly from then on, silently).
* The last batch of an epoch is smaller.
* Both teachers compile the same function (``FrozenTeacher._encode``), so they
  share one code object and its recompile limit.

Each run sets ``fail_on_recompile_limit_hit``: reaching the limit is an error
here, not a silent fall-back.
"""
import pytest
import torch
import torch._dynamo as dynamo
from mmpretrain.registry import MODELS

from mmhybrid.engine.hooks import ProgressiveMaskingHook
from mmhybrid.testing import tiny_hybrid_cfg


def _graphs() -> int:
    return dynamo.utils.counters['stats']['unique_graphs']


@pytest.fixture
def fresh_dynamo():
    dynamo.reset()
    dynamo.utils.counters.clear()
    with dynamo.config.patch(fail_on_recompile_limit_hit=True):
        yield
    dynamo.reset()


def test_the_flagship_schedule_has_99_kept_counts():
    """ViT-B/16 (196 patches), 0 -> 0.5 linearly over 300 epochs of 625
    iterations: 99 counts, far over dynamo's recompile limit of 8."""
    hook = ProgressiveMaskingHook(final_ratio=0.5, schedule='linear')
    counts = hook.kept_counts(196, 300 * 625)
    assert counts == list(range(196, 97, -1))
    assert len(counts) > dynamo.config.recompile_limit


def _tiny_model():
    torch.manual_seed(0)
    model = MODELS.build(tiny_hybrid_cfg(token_selection='topk'))
    model.init_weights()
    model.train()
    return model


def _schedule(model, iters=20):
    """(mask ratio, batch size) per iteration: the tiny student's whole
    schedule (16 patches: 9 kept counts, over the recompile limit) and a short
    last batch."""
    hook = ProgressiveMaskingHook(final_ratio=0.5)
    counts = hook.kept_counts(model.backbone.num_patches, iters)
    assert len(counts) > dynamo.config.recompile_limit
    steps = [(hook.ratio_at(it, iters), 2) for it in range(iters)]
    return steps + [(0.5, 1), (0.5, 2)]


def test_automatic_dynamic_compiles_the_whole_schedule_in_few_graphs(
        fresh_dynamo):
    """mmengine's ``compile=True`` (torch.compile's defaults): every kept count
    and the short batch in at most 4 graphs, losses equal to eager."""
    model = _tiny_model()
    compiled = torch.compile(model.loss, backend='aot_eager')
    for ratio, batch in _schedule(model):
        model.mask_ratio = float(ratio)
        x = torch.randn(batch, 3, 32, 32)
        got, want = compiled(x), model.loss(x)
        for k in ('loss_feat', 'loss_rel'):
            torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6)
    assert _graphs() <= 4


def test_static_shapes_would_hit_the_recompile_limit(fresh_dynamo):
    """What the test above guards against: ``dynamic=False`` recompiles per
    kept count until the limit (lowered to 3 here to reach it sooner)."""
    model = _tiny_model()
    compiled = torch.compile(model.loss, backend='aot_eager', dynamic=False)
    x = torch.randn(2, 3, 32, 32)
    with dynamo.config.patch(recompile_limit=3), pytest.raises(
            Exception, match='(?i)recompil'):
        for ratio, _ in _schedule(model):
            model.mask_ratio = float(ratio)
            compiled(x)


def test_two_compiled_teachers_share_a_code_object_within_the_limit(
        fresh_dynamo):
    """Both teachers compile ``FrozenTeacher._encode``: with their different
    requests and a short last batch they stay under the recompile limit (it
    would raise here), and give the eager outputs."""
    cfg = tiny_hybrid_cfg()
    for name in ('teacher_feat', 'teacher_rel'):
        cfg[name]['compile'] = dict(backend='aot_eager')
    model = MODELS.build(cfg)
    model.init_weights()
    asked = model.teacher_requests()
    for batch in (4, 4, 3, 4, 3):
        x = torch.randn(batch, 3, 32, 32)
        for name in ('teacher_feat', 'teacher_rel'):
            teacher = getattr(model, name)
            got = teacher(x, **asked[name])
            teacher.compile_cfg = False
            want = teacher(x, **asked[name])
            teacher.compile_cfg = dict(backend='aot_eager')
            for a, b in ((got.tokens, want.tokens), (got.cls_attn,
                                                     want.cls_attn)):
                if b is not None:
                    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert model.teacher_feat._compiled is not None
    assert model.teacher_rel._compiled is not None
    graphs = _graphs()
    assert 2 <= graphs <= 4, graphs  # one per teacher, one more per dynamic
