"""Resume on a GPU node, emulated on the CPU.

mmengine's ``Runner.resume`` loads the checkpoint with ``map_location`` = the
run's device (``get_device()``: ``'cuda'`` on a GPU node), so every tensor in
it, the RNG states that ``ExactResumeHook`` saved included, comes back on the
GPU. torch's RNG setters take CPU ``ByteTensor`` s only and numpy cannot read
GPU memory: restoring them as loaded ended every GPU resume.

CI has no GPU. These tests make the runner's device ``'cuda'`` and load the
checkpoint as mmengine would there, with every tensor as an
:class:`OnAccelerator` tensor: a tensor that says it lives on ``cuda:0`` and
behaves as a CUDA tensor does where it matters here (``.numpy()`` refuses,
torch's RNG setters refuse it, ``.cpu()`` copies it to a plain CPU tensor).
"""
import random

import numpy as np
import pytest
import torch
from mmengine.registry import DefaultScope

import mmhybrid.engine.hooks.exact_resume_hook as exact_resume
from mmhybrid.engine.hooks.exact_resume_hook import (get_rng_state,
                                                     set_rng_state)
from .test_exact_resume_hook import _runner

CUDA0 = torch.device('cuda', 0)


class OnAccelerator(torch.Tensor):
    """A CPU tensor that behaves as a ``cuda:0`` tensor would for the RNG
    setters: its device is ``cuda:0``, ``numpy()`` refuses, ``cpu()`` and
    ``to('cpu')`` give the plain CPU tensor."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func == torch.Tensor.device.__get__:
            return CUDA0
        if func == torch.Tensor.is_cuda.__get__:
            return True
        if func is torch.Tensor.numpy:
            raise TypeError("can't convert cuda:0 device type tensor to "
                            'numpy. Use Tensor.cpu() to copy the tensor to '
                            'host memory first.')
        with torch._C.DisableTorchFunctionSubclass():
            if func is torch.Tensor.cpu or (func is torch.Tensor.to and any(
                    torch.device(a).type == 'cpu'
                    for a in list(args[1:]) + list(kwargs.values())
                    if isinstance(a, (str, torch.device)))):
                return args[0].clone()
            # everything else: as on a plain tensor, a plain result
            return func(*args, **kwargs)


def on_accelerator(obj):
    """``obj`` with every tensor as :class:`OnAccelerator` (what
    ``torch.load(map_location='cuda')`` gives on a GPU node)."""
    if isinstance(obj, torch.Tensor):
        return obj.as_subclass(OnAccelerator)
    if isinstance(obj, dict):
        return {k: on_accelerator(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(on_accelerator(v) for v in obj)
    return obj


def _cpu_only(setter):
    """torch's RNG setter, refusing what the real one refuses on a GPU tensor
    (with its message)."""

    def checked(state):
        if state.device.type != 'cpu' or type(state) is not torch.Tensor:
            raise TypeError('expected a torch.ByteTensor, but got '
                            'torch.cuda.ByteTensor')
        return setter(state)

    return checked


@pytest.fixture
def gpu_like_setters(monkeypatch):
    monkeypatch.setattr(torch, 'set_rng_state', _cpu_only(torch.set_rng_state))


def test_the_emulation_refuses_what_a_cuda_tensor_refuses(gpu_like_setters):
    """The emulated tensor fails the way a CUDA one does, so the tests below
    could fail."""
    t = on_accelerator(torch.get_rng_state())
    assert t.device == CUDA0
    with pytest.raises(TypeError, match='cuda'):
        t.numpy()
    with pytest.raises(TypeError, match='ByteTensor'):
        torch.set_rng_state(t)
    plain = t.cpu()
    assert type(plain) is torch.Tensor and plain.device.type == 'cpu'
    torch.set_rng_state(plain)


def test_rng_states_mapped_to_the_gpu_are_restored(gpu_like_setters):
    state = on_accelerator(get_rng_state())
    a = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[2] == b[2]


@pytest.mark.parametrize('by_epoch,ckpt,start', [(False, 'iter_4.pth', 4),
                                                 (True, 'epoch_2.pth', 6)])
def test_resume_as_on_a_gpu_node_is_bit_equal(tmp_path, monkeypatch,
                                              gpu_like_setters, by_epoch, ckpt,
                                              start):
    """``Runner.resume`` finds the device ``cuda`` and the checkpoint comes
    back as ``map_location='cuda'`` gives it: the resumed run still continues
    bit for bit (the toy runs of ``test_exact_resume_hook``)."""
    import mmengine.runner.runner as runner_module
    asked = []
    load = runner_module._load_checkpoint
    resume = runner_module.Runner.resume

    def resume_on_gpu_node(self, *args, **kwargs):
        # the device mmengine sees while resuming (the model stays on the CPU)
        with monkeypatch.context() as m:
            m.setattr(runner_module, 'get_device', lambda: 'cuda')
            return resume(self, *args, **kwargs)

    def load_on_gpu(filename, map_location=None, *args, **kwargs):
        asked.append(map_location)
        return on_accelerator(load(filename, 'cpu', *args, **kwargs))

    restored = []
    original_set = exact_resume.set_rng_state

    def recording_set(state):
        restored.append(state)
        original_set(state)

    with DefaultScope.overwrite_default_scope('mmengine'):
        full, ref = _runner(tmp_path / 'full', by_epoch)
        full.train()
        monkeypatch.setattr(runner_module.Runner, 'resume', resume_on_gpu_node)
        monkeypatch.setattr(runner_module, '_load_checkpoint', load_on_gpu)
        monkeypatch.setattr(exact_resume, 'set_rng_state', recording_set)
        resumed, got = _runner(
            tmp_path / 'resumed',
            by_epoch,
            resume=True,
            load_from=str(tmp_path / 'full' / ckpt))
        resumed.train()
    assert 'cuda' in asked  # loaded as on a GPU node
    # the states that were restored came from the GPU-mapped checkpoint
    assert restored and restored[0]['torch'].device == CUDA0
    assert sorted(got.by_iter) == list(range(start + 1, 13))
    for it, loss in got.by_iter.items():
        assert loss == ref.by_iter[it], (it, loss, ref.by_iter[it])
