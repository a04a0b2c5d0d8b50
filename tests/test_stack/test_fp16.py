"""fp16 pretraining for GPUs without bf16 (V100): configs, scaling, numerics.

mmengine's ``AmpOptimWrapper`` refuses to start without a GPU and creates a
CUDA ``GradScaler``. Here it runs on the CPU with exactly two changes: the GPU
check passes and its scaler is ``torch.amp.GradScaler('cpu')`` (same algorithm,
same defaults). Everything else (scaling, unscaling before clipping, skipped
steps, scale updates, its state in checkpoints) is mmengine's and torch's real
code. A whole HybridDistill step in fp16 needs a GPU: mmengine's ``autocast``
asserts bf16 on the CPU ("In CPU autocast, only support `torch.bfloat16`
dtype").
"""
import functools
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmhybrid.models.losses.relation_functional import (kl_relation,
                                                        relation_logits)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# fp16 config -> the bf16 config it must equal apart from precision
FP16 = {
    'hybrid-distill_vit-base-p16_clip-b16-mae-b16_8xb256-fp16-coslr-300e_in1k.py':  # noqa: E501
    'hybrid_vitb.py',
    'hybrid-distill_vit-large-p16_clip-l14-mae-l16_8xb128-fp16-coslr-300e_in1k.py':  # noqa: E501
    'hybrid_vitl.py',
}
PRECISION_KEYS = ('type', 'dtype', 'loss_scale')


def _cfg(name):
    return Config.fromfile(osp.join(ROOT, 'configs', name))


@pytest.mark.parametrize('name', list(FP16))
def test_fp16_config_differs_from_bf16_only_in_precision(name):
    fp16, bf16 = _cfg(name).to_dict(), _cfg(FP16[name]).to_dict()
    ow = fp16['optim_wrapper']
    assert (ow['type'], ow['dtype'],
            ow['loss_scale']) == ('AmpOptimWrapper', 'float16', 'dynamic')
    assert bf16['optim_wrapper']['type'] == 'BF16OptimWrapper'
    for teacher in ('teacher_feat', 'teacher_rel'):
        assert fp16['model'][teacher].pop('autocast_dtype') == 'float16'
        assert bf16['model'][teacher].pop('autocast_dtype') == 'bfloat16'
    for key in PRECISION_KEYS:
        ow.pop(key)
        bf16['optim_wrapper'].pop(key, None)
    assert fp16 == bf16


@pytest.fixture
def cpu_amp_wrapper(monkeypatch):
    """``build_optim_wrapper`` with mmengine's AmpOptimWrapper runnable on CPU
    (see the module docstring)."""
    import mmengine.optim.optimizer.amp_optimizer_wrapper as amp
    monkeypatch.setattr(amp, 'is_cuda_available', lambda: True)
    monkeypatch.setattr(amp, 'GradScaler',
                        functools.partial(torch.amp.GradScaler, 'cpu'))
    from mmengine.optim import build_optim_wrapper

    def build(model, name=list(FP16)[0]):
        cfg = _cfg(name).optim_wrapper
        return build_optim_wrapper(model, cfg)

    return build


def _grad_norm(model):
    return torch.cat([p.grad.flatten() for p in model.parameters()]).norm()


def test_fp16_loss_scaling_skips_overflow_and_clips_unscaled(cpu_amp_wrapper):
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    ow = cpu_amp_wrapper(model)
    from mmengine.optim import AmpOptimWrapper
    assert type(ow) is AmpOptimWrapper and ow.cast_dtype == torch.float16
    scaler = ow.loss_scaler
    assert scaler.get_scale() == 2.0**16  # dynamic: torch's default start
    x = torch.randn(16, 8)

    # a finite step: the weights move, the scale stays (grows after 2000)
    before = model.weight.detach().clone()
    ow.update_params(model(x).square().mean())
    assert not torch.equal(model.weight, before)
    assert scaler.get_scale() == 2.0**16

    # an overflow: the step is skipped, the scale halves
    before = model.weight.detach().clone()
    ow.update_params(model(x).sum() * float('inf'))
    assert torch.equal(model.weight, before)
    assert scaler.get_scale() == 2.0**15

    # a large gradient: unscaled first, then clipped to the config's 3.0
    loss = 1e3 * model(x).sum()
    ow.backward(loss)
    true_norm = float(_grad_norm(model)) / scaler.get_scale()
    assert true_norm > 3.0
    ow.step()
    assert float(_grad_norm(model)) == pytest.approx(3.0, rel=1e-4)
    logged = ow.message_hub.get_scalar('train/grad_norm').current()
    assert logged == pytest.approx(true_norm, rel=1e-4)
    ow.zero_grad()

    # the scale is part of the checkpoint, so --resume continues with it
    state = ow.state_dict()
    assert state['loss_scaler']['scale'] == 2.0**15
    fresh = cpu_amp_wrapper(torch.nn.Linear(8, 4))
    fresh.load_state_dict(state)
    assert fresh.loss_scaler.get_scale() == 2.0**15


def _relation_kl(q_s, k_s, q_t, k_t, dtype, heads=12, scale=2.0**16):
    """The loss as training computes it: q/k in ``dtype``, the logits matmul in
    ``dtype``, softmax and KL in fp32 (kl_relation); the backward pass of the
    loss times ``scale``, unscaled in fp64 (the GradScaler's job: without it
    fp16 gradients of this size are subnormal)."""
    q_s = q_s.detach().to(dtype).requires_grad_()
    loss = kl_relation(
        relation_logits(q_s, k_s.to(dtype), heads),
        relation_logits(q_t.to(dtype), k_t.to(dtype), heads))
    (loss * scale).backward()
    return loss.detach().double(), q_s.grad.double() / scale


# stated tolerances, about 10x above the errors measured (seed 0, torch 2.14
# CPU): loss 8e-6 / 5e-6, gradient 1.3e-3 / 2.4e-3 (distinct / close maps)
FP16_LOSS_RTOL = 1e-4
FP16_GRAD_RTOL = 2e-2


@pytest.mark.parametrize(
    'student_noise', [None, 0.3], ids=['distinct-maps', 'close-maps'])
def test_relation_kl_in_fp16_matches_fp32(student_noise):
    """ViT-B shapes (197 tokens, 768 channels, 12 heads); q/k of std 2 give
    logits of std 4, about as peaked as trained attention.

    ``close-maps``: the student's q/k are the teacher's plus noise, as late in
    training.
    """
    g = torch.Generator().manual_seed(0)
    q_t, k_t, q_s, k_s = (2 * torch.randn(2, 197, 768, generator=g)
                          for _ in range(4))
    if student_noise is not None:
        q_s = q_t + student_noise * q_s
        k_s = k_t + student_noise * k_s
    ref_loss, ref_grad = _relation_kl(q_s, k_s, q_t, k_t, torch.float32)
    loss, grad = _relation_kl(q_s, k_s, q_t, k_t, torch.float16)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert float(ref_loss) > 0.01  # not a trivially zero KL
    loss_err = abs(float(loss - ref_loss)) / float(ref_loss)
    grad_err = float((grad - ref_grad).norm() / ref_grad.norm())
    print(
        f'fp16 vs fp32: KL {float(ref_loss):.4f}, loss rel. err {loss_err:.2e}'
        f', grad rel. err {grad_err:.2e}')
    assert loss_err < FP16_LOSS_RTOL, loss_err
    assert grad_err < FP16_GRAD_RTOL, grad_err
