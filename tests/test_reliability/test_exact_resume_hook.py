"""ExactResumeHook on toy runs (fast, in-process): randomness in the model
(torch RNG, like token sampling) and in a data pipeline that runs in the main
process (numpy and python RNG, ``num_workers=0``), iteration- and epoch-based
loops, and a validation loop in between.

A run resumed from a checkpoint gives bit-equal per-iteration losses; without
the hook it does not.
"""
import random

import numpy as np
import pytest
import torch
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from mmhybrid.engine.hooks import ExactResumeHook
from mmhybrid.engine.hooks.exact_resume_hook import (get_rng_state,
                                                     set_rng_state)


class NoisyData:
    """Each item draws from numpy and python's RNG (like augmentations)."""

    def __len__(self):
        return 6

    def __getitem__(self, i):
        return dict(
            inputs=torch.tensor(
                [float(i), np.random.rand(),
                 random.random()],
                dtype=torch.float32))


class NoisyModel(BaseModel):
    """The loss draws from torch's RNG (like Gumbel-top-k token sampling)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))

    def forward(self, inputs, data_samples=None, mode='loss'):
        noise = torch.rand(inputs.shape)
        out = ((inputs + noise) * self.w).sum(1)
        if mode == 'loss':
            return dict(loss=out.pow(2).mean())
        return [dict(pred=o) for o in out]


class DummyMetric(BaseMetric):

    def process(self, data_batch, data_samples):
        self.results.append(0.0)

    def compute_metrics(self, results):
        return dict(dummy=0.0)


class Losses(Hook):

    def __init__(self):
        self.by_iter = {}

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None):
        self.by_iter[runner.iter + 1] = float(outputs['loss'])


def _runner(work,
            by_epoch,
            hook=True,
            resume=False,
            load_from=None,
            val=False):
    rec = Losses()
    hooks = [rec] + ([ExactResumeHook()] if hook else [])
    train_cfg = dict(by_epoch=True, max_epochs=4, val_interval=1) \
        if by_epoch else dict(by_epoch=False, max_iters=12, val_interval=4)
    sampler = dict(type='DefaultSampler', shuffle=True) if by_epoch \
        else dict(type='InfiniteSampler', shuffle=True)
    loader = dict(
        dataset=NoisyData(),
        batch_size=2,
        num_workers=0,
        sampler=sampler,
        collate_fn=dict(type='default_collate'))
    kw = dict(
        val_dataloader=dict(
            loader, sampler=dict(type='DefaultSampler', shuffle=True)),
        val_cfg=dict(),
        val_evaluator=[DummyMetric()]) if val else {}
    runner = Runner(
        model=NoisyModel(),
        work_dir=str(work),
        train_dataloader=loader,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=train_cfg,
        default_hooks=dict(
            checkpoint=dict(
                type='CheckpointHook',
                interval=1 if by_epoch else 4,
                by_epoch=by_epoch,
                max_keep_ckpts=-1)),
        custom_hooks=hooks,
        randomness=dict(seed=3),
        resume=resume,
        load_from=load_from,
        default_scope='mmengine',
        experiment_name=f'toy_{id(rec)}',
        **kw)
    return runner, rec


@pytest.mark.parametrize('by_epoch,ckpt,start', [(False, 'iter_4.pth', 4),
                                                 (True, 'epoch_2.pth', 6)])
@pytest.mark.parametrize('val', [False, True])
def test_resumed_toy_run_is_bit_equal(tmp_path, by_epoch, ckpt, start, val):
    with DefaultScope.overwrite_default_scope('mmengine'):
        full, ref = _runner(tmp_path / 'full', by_epoch, val=val)
        full.train()
        resumed, got = _runner(
            tmp_path / 'resumed',
            by_epoch,
            resume=True,
            load_from=str(tmp_path / 'full' / ckpt),
            val=val)
        resumed.train()
    assert sorted(got.by_iter) == list(range(start + 1, 13))
    for it, loss in got.by_iter.items():
        assert loss == ref.by_iter[it], (it, loss, ref.by_iter[it])


def test_without_the_hook_resume_is_not_exact(tmp_path):
    """The test above would catch a broken hook: mmengine alone differs."""
    with DefaultScope.overwrite_default_scope('mmengine'):
        full, ref = _runner(tmp_path / 'full', False, hook=False)
        full.train()
        resumed, got = _runner(
            tmp_path / 'resumed',
            False,
            hook=False,
            resume=True,
            load_from=str(tmp_path / 'full' / 'iter_4.pth'))
        resumed.train()
    assert any(got.by_iter[it] != ref.by_iter[it] for it in got.by_iter)


def test_load_from_is_not_a_resume(tmp_path, monkeypatch):
    """Fine-tuning from a checkpoint (load_from, no resume) keeps fresh
    randomness: the saved RNG state is not applied."""
    import mmhybrid.engine.hooks.exact_resume_hook as mod
    with DefaultScope.overwrite_default_scope('mmengine'):
        full, _ = _runner(tmp_path / 'full', False)
        full.train()
        calls = []
        monkeypatch.setattr(mod, 'set_rng_state', calls.append)
        loaded, b = _runner(
            tmp_path / 'b',
            False,
            load_from=str(tmp_path / 'full' / 'iter_4.pth'))
        loaded.train()
    assert sorted(b.by_iter) == list(range(1, 13))
    assert calls == []
    ckpt = torch.load(tmp_path / 'full' / 'iter_4.pth', weights_only=True)
    assert ckpt['rng_state']['iter'] == 4
    assert len(ckpt['rng_state']['states']) == 1


def test_rng_state_round_trip():
    state = get_rng_state()
    a = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[2] == b[2]
    # safe to store: plain tensors and values only
    import io
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    assert torch.equal(
        torch.load(buf, weights_only=True)['torch'], state['torch'])
