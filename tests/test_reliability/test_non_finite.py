"""A NaN/inf loss stops training, naming the iteration and the term; no NaN/inf
weights are applied or saved; ``max_skips`` skips N bad steps.

Toy runs (mmengine Runner, a two-term toy model that turns NaN on chosen
iterations) test the mechanics exactly; the tools/train.py runs inject the
fault the way it happens in practice: a teacher checkpoint holding a NaN
weight.
"""
import os.path as osp

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner

from mmhybrid.engine.hooks import NonFiniteLossError, NonFiniteLossHook
# mmengine's checkpoints hold a HistoryBuffer: read them as mmhybrid does
# (torch's own weights-only reader takes them only from torch 2.6)
from mmhybrid.utils.checkpoint import load_checkpoint_file


class TwoTermToy(BaseModel):
    """``loss_feat`` and ``loss_rel``; ``bad`` maps iteration (1-based) ->
    ``'feat'`` / ``'rel'`` (NaN loss) or ``'grad'`` (finite loss, NaN grad)."""

    def __init__(self, bad):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(4))
        self.bad = bad
        self.calls = 0

    def forward(self, inputs, data_samples=None, mode='loss'):
        self.calls += 1
        fault = self.bad.get(self.calls)
        feat = (self.w * inputs).sum(1).pow(2).mean()
        rel = (self.w - 0.5).pow(2).sum()
        if fault == 'feat':
            feat = feat * float('nan')
        elif fault == 'rel':
            rel = rel + float('inf')
        elif fault == 'grad':  # sqrt'(0) = inf: finite loss, NaN gradient
            rel = rel + torch.sqrt(self.w[0] * 0.0)
        return dict(loss_feat=feat, loss_rel=rel)


class Recorder(Hook):
    priority = 'VERY_LOW'

    def __init__(self):
        self.weights = {}

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None):
        self.weights[runner.iter + 1] = runner.model.w.detach().clone()


def _toy_run(tmp_path, bad, max_skips=0, iters=6):
    model = TwoTermToy(bad)
    rec = Recorder()
    runner = Runner(
        model=model,
        work_dir=str(tmp_path),
        train_dataloader=dict(
            dataset=[dict(inputs=torch.ones(4) * (i + 1)) for i in range(8)],
            batch_size=2,
            sampler=dict(type='InfiniteSampler', shuffle=False),
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=iters),
        default_hooks=dict(
            checkpoint=dict(
                type='CheckpointHook',
                interval=1,
                by_epoch=False,
                max_keep_ckpts=-1)),
        custom_hooks=[NonFiniteLossHook(max_skips=max_skips), rec],
        default_scope='mmengine')
    return runner, rec


def _ckpt_weights(tmp_path, it):
    path = osp.join(tmp_path, f'iter_{it}.pth')
    if not osp.exists(path):
        return None
    return load_checkpoint_file(path)['state_dict']['w']


@pytest.mark.parametrize('term,name', [('feat', 'loss_feat (feature term)'),
                                       ('rel', 'loss_rel (relation term)')])
def test_stops_naming_iteration_and_term(tmp_path, term, name):
    runner, rec = _toy_run(tmp_path, {3: term})
    with pytest.raises(NonFiniteLossError) as info:
        runner.train()
    msg = str(info.value)
    assert f'non-finite loss at iteration 3: {name} is NaN/inf' in msg
    other = 'loss_rel' if term == 'feat' else 'loss_feat'
    assert f'{other} (' not in msg.split('[')[0]  # only the bad term is blamed
    # the step was not applied; nothing was saved from it
    assert torch.equal(runner.model.w.detach(), rec.weights[2])
    assert torch.isfinite(runner.model.w).all()
    assert _ckpt_weights(tmp_path, 2) is not None
    assert _ckpt_weights(tmp_path, 3) is None
    assert 3 not in rec.weights


def test_non_finite_gradients_stop(tmp_path):
    runner, rec = _toy_run(tmp_path, {2: 'grad'})
    with pytest.raises(
            NonFiniteLossError, match='non-finite gradients at iteration 2'):
        runner.train()
    assert torch.equal(runner.model.w.detach(), rec.weights[1])
    assert torch.isfinite(runner.model.w).all()


def test_skips_up_to_max_then_continues(tmp_path):
    runner, rec = _toy_run(tmp_path, {2: 'rel', 4: 'feat'}, max_skips=2)
    runner.train()  # two bad steps, both skipped: the run completes
    assert sorted(rec.weights) == [1, 2, 3, 4, 5, 6]
    assert torch.equal(rec.weights[2], rec.weights[1])  # skipped
    assert not torch.equal(rec.weights[3], rec.weights[2])  # trained
    assert torch.equal(rec.weights[4], rec.weights[3])  # skipped
    for it in range(1, 7):
        w = _ckpt_weights(tmp_path, it)
        assert torch.isfinite(w).all() and torch.equal(w, rec.weights[it])
    hook = [h for h in runner.hooks if isinstance(h, NonFiniteLossHook)][0]
    assert hook.skipped == 2
    assert load_checkpoint_file(osp.join(
        tmp_path, 'iter_6.pth'))['meta']['nonfinite_skips'] == 2


def test_stops_after_max_skips(tmp_path):
    runner, rec = _toy_run(
        tmp_path, {
            2: 'rel',
            3: 'rel',
            5: 'feat'
        }, max_skips=2)
    with pytest.raises(NonFiniteLossError) as info:
        runner.train()
    msg = str(info.value)
    assert 'iteration 5: loss_feat (feature term)' in msg
    assert '2 earlier bad step(s) were skipped' in msg
    assert 'max_skips=2' in msg
    assert torch.equal(runner.model.w.detach(), rec.weights[4])
    assert _ckpt_weights(tmp_path, 5) is None


def test_bad_max_skips():
    with pytest.raises(ValueError, match='max_skips'):
        NonFiniteLossHook(max_skips=-1)


# ----------------------------------------------- real runs via tools/train.py
def _nan_teacher(src, dst, key):
    ckpt = load_checkpoint_file(src)
    ckpt['state_dict'][key][0, 0] = float('nan')
    torch.save(ckpt, dst)
    return str(dst)


@pytest.mark.parametrize('which,term', [
    ('teacher_feat', 'loss_feat (feature term)'),
    ('teacher_rel', 'loss_rel (relation term)'),
])
def test_train_stops_on_nan_teacher(run_train_inprocess, tiny, tmp_path, which,
                                    term):
    """Fault: a downloaded teacher file holds a NaN weight."""
    src = tiny.teachers[0 if which == 'teacher_feat' else 1]
    # Tc: its last block (the feature target); Tm: block 0 (a distilled
    # relation, the default pairs use Tm's blocks 0..2 of 4)
    key = 'backbone.layers.' + ('3.ffn.layers.1.weight' if which
                                == 'teacher_feat' else '0.attn.qkv.weight')
    bad = _nan_teacher(src, tmp_path / 'nan_teacher.pth', key)
    work = tmp_path / 'w'
    with pytest.raises(NonFiniteLossError) as info:
        run_train_inprocess(
            tiny.argv(
                work,
                3,
                workers=0,
                ckpt_interval=1,
                extra=[f'model.{which}.checkpoint={bad}']))
    msg = str(info.value)
    assert f'non-finite loss at iteration 1: {term} is NaN/inf' in msg
    assert not list(work.glob('*.pth'))


def test_train_skip_option(run_train_inprocess, tiny, tmp_path):
    """--max-nonfinite-skips 2: two steps skipped (weights untouched, and the
    checkpoints written after them are finite), the third bad one stops."""
    bad = _nan_teacher(tiny.teachers[1], tmp_path / 'nan_teacher.pth',
                       'backbone.layers.0.attn.qkv.weight')
    work = tmp_path / 'w'
    with pytest.raises(NonFiniteLossError) as info:
        run_train_inprocess(
            tiny.argv(
                work,
                4,
                workers=0,
                ckpt_interval=1,
                args=['--max-nonfinite-skips', '2'],
                extra=[f'model.teacher_rel.checkpoint={bad}']))
    assert 'iteration 3: loss_rel (relation term)' in str(info.value)
    assert '2 earlier bad step(s) were skipped' in str(info.value)
    w1 = load_checkpoint_file(work / 'iter_1.pth')['state_dict']
    w2 = load_checkpoint_file(work / 'iter_2.pth')['state_dict']
    assert not (work / 'iter_3.pth').exists()
    for k, v in w2.items():
        assert torch.isfinite(v).all(), k
        assert torch.equal(v, w1[k]), k  # no update was applied


DDP_SCRIPT = r'''
import os, sys
import torch, torch.distributed as dist, torch.multiprocessing as mp

def run(rank, port):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port),
                      RANK=str(rank), WORLD_SIZE='2')
    dist.init_process_group('gloo', rank=rank, world_size=2)
    import mmhybrid  # noqa
    from mmengine.optim import OptimWrapper
    from mmhybrid.engine.hooks import NonFiniteLossHook
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 1))
    ow = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    hook = NonFiniteLossHook(max_skips=5)
    hook._guard(ow)
    for it in range(5):
        loss = model(torch.ones(2, 3) * (it + 1)).pow(2).mean()
        if it == 2 and rank == 1:  # only rank 1 goes bad
            loss = loss * float('nan')
        ow.update_params(loss)
        bad, hook._bad = hook._bad, None
        # one write per line: atomic on a pipe, the two ranks cannot interleave
        sys.stdout.write(f'RESULT {{rank}} {{it}} {{bad}} '
                         f'{{model.module.weight.sum().item()}}\n')
        sys.stdout.flush()
    dist.destroy_process_group()

if __name__ == '__main__':
    mp.spawn(run, args=({port},), nprocs=2)
'''


@pytest.mark.slow
def test_ddp_ranks_skip_together(tmp_path, rel):
    """A NaN on one rank only: every rank skips that step (a rank that stepped
    alone would wait forever in DDP's all-reduce or drift apart), and DDP
    trains on afterwards with identical weights on both ranks."""
    import subprocess
    import sys
    script = tmp_path / 'ddp_skip.py'
    script.write_text(DDP_SCRIPT.format(port=rel.free_port()))
    # rel.env(): this checkout's mmhybrid first on PYTHONPATH
    proc = subprocess.run([sys.executable, str(script)],
                          capture_output=True,
                          text=True,
                          timeout=300,
                          env=rel.env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [
        ln.split()[1:] for ln in proc.stdout.splitlines()
        if ln.startswith('RESULT')
    ]
    res = {(int(r), int(i)): (b, float(w)) for r, i, b, w in rows}
    assert len(res) == 10
    for it in range(5):
        assert res[(0, it)] == res[(1, it)]  # same decision, same weights
        assert res[(0, it)][0] == ('loss' if it == 2 else 'None')
    assert res[(0, 2)][1] == res[(0, 1)][1]  # skipped: unchanged
    assert res[(0, 3)][1] != res[(0, 2)][1]  # and training went on
