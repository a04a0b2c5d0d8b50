"""mmengine's own ``compile=True`` (it compiles the model's ``train_step``)
trains a HybridDistill config: the teachers (inference mode), the token
selection (the mask ratio) and the optimizer update (backward, step, the guard
against non-finite losses) stay outside the compiled graph, the student and the
losses inside it."""
import subprocess

import pytest

from mmhybrid.utils.scalars import scalars_by_iter


def _train(repo_root, demo_train_cmd, work_dir, iters, extra=()):
    cmd = demo_train_cmd(work_dir, iters,
                         ['default_hooks.logger.interval=1', *extra])
    proc = subprocess.run(
        cmd, cwd=repo_root, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return scalars_by_iter(work_dir), proc.stdout + proc.stderr


@pytest.mark.slow
def test_mmengine_compile_trains_hybrid_distill(repo_root, tmp_path,
                                                demo_train_cmd):
    """Compiled student and losses (mmengine) with compiled teachers (their own
    flag) inside: the losses of the eager run, iteration by iteration (token
    sampling runs eagerly in both, from the same random state)."""
    iters = 2
    eager, _ = _train(repo_root, demo_train_cmd, tmp_path / 'eager', iters)
    compiled, log = _train(
        repo_root,
        demo_train_cmd,
        tmp_path / 'compiled',
        iters,
        extra=[
            'compile=True', 'model.teacher_feat.compile=True',
            'model.teacher_rel.compile=True'
        ])
    assert 'Model has been "compiled"' in log
    assert sorted(compiled) == sorted(eager) == list(range(1, iters + 1))
    assert eager[1]['mask_ratio'] == 0 < eager[2]['mask_ratio']
    for it in range(1, iters + 1):
        assert compiled[it]['mask_ratio'] == eager[it]['mask_ratio']
        for k in ('loss_feat', 'loss_rel'):
            assert compiled[it][k] == pytest.approx(eager[it][k], rel=1e-3), \
                (it, k)


def test_compiled_loss_does_not_recompile_per_mask_ratio():
    """The mask ratio changes every iteration.

    Traced as a Python float it would recompile the step every iteration, until
    dynamo's recompile limit turned compilation off; kept out of the trace, 40
    ratios cost three graphs (every token kept; the first masked count; then a
    dynamic count), and the compiled losses equal the eager ones (top-k
    selection: no randomness).
    """
    import numpy as np
    import torch
    import torch._dynamo as dynamo
    from mmpretrain.registry import MODELS

    from mmhybrid.testing import tiny_hybrid_cfg

    torch.manual_seed(0)
    model = MODELS.build(tiny_hybrid_cfg(token_selection='topk'))
    model.init_weights()
    model.train()
    dynamo.reset()
    dynamo.utils.counters.clear()
    # aot_eager: dynamo's tracing and guards exactly, without code generation
    compiled = torch.compile(model.loss, backend='aot_eager')
    x = torch.randn(2, 3, 32, 32)
    for ratio in np.linspace(0.0, 0.5, 40):
        model.mask_ratio = float(ratio)
        got = compiled(x)
        want = model.loss(x)
        for k in ('loss_feat', 'loss_rel', 'mask_ratio'):
            torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6)
        (got['loss_feat'] + got['loss_rel']).backward()
    assert dynamo.utils.counters['stats']['unique_graphs'] <= 3
    dynamo.reset()
