"""``BF16OptimWrapper`` (the flagship's optimizer wrapper): bf16 autocast with
no loss scaler. Its backward, step (with clipping and accumulation), zero_grad
and state dict equal a plain torch optimizer's on the same tensors.

It runs on CPU: mmengine's ``AmpOptimWrapper.__init__`` asserts a GPU, so
``torch.cuda.is_available`` reads True while the wrapper is built (nothing
touches a GPU: the GradScaler it would make is dropped); everything after the
build runs with the real answer (False), so ``optim_context`` is CPU bf16
autocast.
"""
import copy

import pytest
import torch
import torch.nn as nn
from mmengine.logging import MessageHub, MMLogger
from mmengine.optim import AmpOptimWrapper, build_optim_wrapper

import mmhybrid  # noqa: F401  (registers BF16OptimWrapper)

LR = dict(type='AdamW', lr=0.05, betas=(0.9, 0.95), weight_decay=0.05)


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 3))


def _batches(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(5, 6, generator=g), torch.randn(5, 3, generator=g))
            for _ in range(n)]


def _loss(net, batch):
    x, y = batch
    return ((net(x) - y)**2).mean()


def _patched_cuda(monkeypatch):
    # mmengine's logger reads the device id when first made: make it with the
    # real answer, before CUDA "is available"
    MMLogger.get_current_instance()
    return monkeypatch.context()


def _build(net, monkeypatch, **kw):
    with _patched_cuda(monkeypatch) as m:
        m.setattr(torch.cuda, 'is_available', lambda: True)
        return build_optim_wrapper(
            net, dict(type='BF16OptimWrapper', optimizer=dict(LR), **kw))


def _reference_optimizer(net):
    cfg = dict(LR)
    cfg.pop('type')
    return torch.optim.AdamW(net.parameters(), **cfg)


def _assert_same_params(a, b):
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


def test_no_loss_scaler_and_bf16_autocast(monkeypatch):
    # asked for a dynamic loss scale, as AmpOptimWrapper configs say: dropped
    wrapper = _build(_net(), monkeypatch, loss_scale='dynamic')
    assert type(wrapper).__name__ == 'BF16OptimWrapper'
    assert isinstance(wrapper, AmpOptimWrapper)
    assert wrapper.loss_scaler is None
    assert wrapper.cast_dtype is torch.bfloat16
    assert 'loss_scaler' not in wrapper.state_dict()
    net = _net()
    with wrapper.optim_context(net):
        out = net(torch.randn(2, 6))
    assert out.dtype is torch.bfloat16
    assert net(torch.randn(2, 6)).dtype is torch.float32  # only inside


def test_fp16_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="bfloat16, got dtype='float16'"):
        _build(_net(), monkeypatch, dtype='float16')


@pytest.mark.parametrize('clip', [None, 0.05])
def test_update_params_equals_plain_optimizer(monkeypatch, clip):
    """backward + step (+ clipping) + zero_grad equal the plain optimizer.

    Three iterations give the same weights, bit for bit, as loss.backward(),
    clip_grad_norm_ and AdamW.step() on a copy; the logged grad norm is the
    clipped norm.
    """
    kw = dict(clip_grad=dict(max_norm=clip)) if clip else {}
    net = _net()
    ref = copy.deepcopy(net)
    wrapper = _build(net, monkeypatch, **kw)
    ref_opt = _reference_optimizer(ref)
    hub = MessageHub.get_current_instance()
    for batch in _batches(3):
        wrapper.update_params(_loss(net, batch))
        assert all(p.grad is None or not p.grad.any()
                   for p in net.parameters())  # zero_grad ran

        ref_opt.zero_grad()
        _loss(ref, batch).backward()
        if clip:
            norm = nn.utils.clip_grad_norm_(ref.parameters(), clip)
            assert norm > clip  # the clip acted
            assert hub.get_scalar('train/grad_norm').current() == \
                pytest.approx(norm.item(), rel=1e-6)
        ref_opt.step()
        _assert_same_params(net, ref)


def test_gradient_accumulation(monkeypatch):
    """accumulative_counts=2: the first call only accumulates; the second
    steps with the mean of both gradients."""
    net = _net()
    ref = copy.deepcopy(net)
    wrapper = _build(net, monkeypatch, accumulative_counts=2)
    b1, b2 = _batches(2)
    before = copy.deepcopy(net)
    wrapper.update_params(_loss(net, b1))
    _assert_same_params(net, before)  # no step yet
    assert all(p.grad is not None and p.grad.any() for p in net.parameters())
    wrapper.update_params(_loss(net, b2))

    ref_opt = _reference_optimizer(ref)
    ((_loss(ref, b1) + _loss(ref, b2)) / 2).backward()
    ref_opt.step()
    for p, q in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_state_dict_round_trip_and_amp_resume(monkeypatch):
    """state_dict is the optimizer's (no loss scaler); a fresh wrapper that
    loads it, or loads an AmpOptimWrapper run's (with its loss scaler),
    continues to exactly the weights of the uninterrupted run."""
    net = _net()
    wrapper = _build(net, monkeypatch)
    batches = _batches(4)
    for batch in batches[:2]:
        wrapper.update_params(_loss(net, batch))
    state = copy.deepcopy(wrapper.state_dict())
    assert set(state) == {'state', 'param_groups'}
    assert state['state'][0]['step'].item() == 2
    torch.testing.assert_close(
        state['state'][0]['exp_avg'],
        wrapper.optimizer.state[net[0].weight]['exp_avg'],
        rtol=0,
        atol=0)
    with _patched_cuda(monkeypatch) as m:
        m.setattr(torch.cuda, 'is_available', lambda: True)
        amp = build_optim_wrapper(
            copy.deepcopy(net),
            dict(type='AmpOptimWrapper', optimizer=dict(LR)))
    amp_state = dict(
        copy.deepcopy(state), loss_scaler=amp.loss_scaler.state_dict())
    saved_net = copy.deepcopy(net)

    for batch in batches[2:]:  # the uninterrupted run
        wrapper.update_params(_loss(net, batch))
    for saved in (state, amp_state):
        resumed_net = copy.deepcopy(saved_net)
        resumed = _build(resumed_net, monkeypatch)
        resumed.load_state_dict(copy.deepcopy(saved))
        assert resumed.loss_scaler is None
        assert resumed.optimizer.state[resumed_net[0].weight]['step'] == 2
        for batch in batches[2:]:
            resumed.update_params(_loss(resumed_net, batch))
        _assert_same_params(resumed_net, net)
