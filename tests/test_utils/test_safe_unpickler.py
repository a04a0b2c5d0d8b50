"""The restricted unpickler that reads checkpoints on torch 2.1-2.5.

It runs here on the installed torch, forced (``load_restricted`` called
directly, or ``allow_list.torch_has_safe_globals`` switched off for
``load_checkpoint_file``), and is compared with torch's own weights-only path
on the same files. No torch 2.1 stack runs in this suite.
"""
import datetime
import io
import os
import os.path as osp
import pickle

import numpy as np
import pytest
import torch

from mmhybrid.utils import (CheckpointError, allow_list, load_checkpoint_file,
                            safe_unpickler)
from mmhybrid.utils.safe_unpickler import RefusedGlobal, load_restricted


class RunsCommand:
    """Unpickling this would run ``touch <marker>``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


@pytest.fixture
def restricted_loader(monkeypatch):
    """``load_checkpoint_file`` as it runs on torch 2.1-2.5."""
    monkeypatch.setattr(allow_list, 'torch_has_safe_globals', lambda: False)
    return load_checkpoint_file


def _toy_runner(work_dir, max_iters, resume=False):
    from mmengine.model import BaseModel
    from mmengine.runner import Runner
    from torch.utils.data import Dataset

    class ToyModel(BaseModel):

        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 1)

        def forward(self, inputs, labels, mode='tensor'):
            out = self.linear(torch.stack(inputs)).squeeze(-1)
            if mode == 'loss':
                return dict(loss=((out - torch.stack(labels))**2).mean())
            return out

    class ToyData(Dataset):

        def __len__(self):
            return 16

        def __getitem__(self, i):
            x = torch.tensor([i / 16.0, 1.0])
            return dict(inputs=x, labels=2 * x[0] + 1)

    return Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=ToyData(),
            sampler=dict(type='DefaultSampler', shuffle=True),
            batch_size=4,
            num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
        param_scheduler=dict(
            type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=4),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
            logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=0),
        resume=resume,
        experiment_name=f'toy_{max_iters}_{resume}_{osp.basename(work_dir)}')


@pytest.fixture(scope='module')
def runner_ckpt(tmp_path_factory):
    """A real mmengine Runner checkpoint: model, AdamW state, scheduler,
    message_hub (HistoryBuffers of numpy arrays) and a numpy scalar."""
    work = tmp_path_factory.mktemp('runner')
    runner = _toy_runner(work, 2)
    runner.train()
    runner.message_hub.update_info('np_scalar', np.float32(0.25))
    runner.save_checkpoint(str(work), 'with_numpy.pth')
    return str(work / 'with_numpy.pth')


def _assert_same(a, b, where='ckpt'):
    assert type(a) is type(b), f'{where}: {type(a)} != {type(b)}'
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _assert_same(a[k], b[k], f'{where}[{k!r}]')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f'{where}[{i}]')
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), where
    elif hasattr(a, '__dict__') and not callable(a):
        _assert_same(vars(a), vars(b), f'{where}.__dict__')
    else:
        assert a == b, f'{where}: {a!r} != {b!r}'


def test_restricted_path_reads_a_runner_checkpoint_as_torch_does(runner_ckpt):
    from mmengine.logging import HistoryBuffer
    restricted = load_restricted(runner_ckpt)
    native = torch.load(runner_ckpt, map_location='cpu', weights_only=True)
    _assert_same(restricted, native)
    hub = restricted['message_hub']
    assert isinstance(hub['log_scalars']['train/loss'], HistoryBuffer)
    assert hub['runtime_info']['np_scalar'] == np.float32(0.25)
    assert isinstance(hub['runtime_info']['np_scalar'], np.float32)
    assert restricted['optimizer']['state'][0]['exp_avg'].shape == (1, 2)
    assert restricted['meta']['iter'] == 2


def test_resume_through_the_restricted_path(tmp_path, restricted_loader):
    """``--resume`` on torch 2.1-2.5: mmengine reads the checkpoint through
    ``load_checkpoint_file``, i.e. the restricted unpickler."""
    _toy_runner(tmp_path, 2).train()
    runner = _toy_runner(tmp_path, 4, resume=True)
    runner.train()
    assert runner.iter == 4
    state = runner.optim_wrapper.optimizer.state_dict()['state']
    assert int(next(iter(state.values()))['step']) == 4


@pytest.mark.parametrize('path', ['torch', 'restricted'])
def test_refusal_names_the_global_and_runs_nothing(tmp_path, monkeypatch,
                                                   path):
    if path == 'restricted':
        monkeypatch.setattr(allow_list, 'torch_has_safe_globals',
                            lambda: False)
    marker = tmp_path / 'PAYLOAD_RAN'
    cases = {
        'posix.system' if os.name == 'posix' else 'nt.system':
        RunsCommand(marker),
        # harmless, but nobody put it on the allow-list
        'datetime.date': datetime.date(2024, 1, 1),
    }
    for name, payload in cases.items():
        f = tmp_path / 'x.pth'
        torch.save({'state_dict': {'w': torch.ones(2)}, 'extra': payload}, f)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint_file(f)
        msg = str(info.value)
        assert f"refused to load {f}: global '{name}' is not on the " \
               'allow-list' in msg, msg
        assert 'truncated' not in msg and 'weights_only' not in msg
    assert not marker.exists()


def test_restricted_unpickler_raises_refused_global(tmp_path):
    marker = tmp_path / 'PAYLOAD_RAN'
    f = tmp_path / 'evil.pth'
    torch.save([RunsCommand(marker)], f, _use_new_zipfile_serialization=False)
    with pytest.raises(RefusedGlobal) as info:
        load_restricted(f)
    assert info.value.path.endswith('.system')
    assert not marker.exists()


def test_build_cannot_patch_an_allowed_class():
    """``BUILD`` with slot state on a class object would ``setattr`` on it (the
    C unpickler allows that); only instances of allowed types get state."""
    from mmengine.logging import HistoryBuffer
    mean = HistoryBuffer.mean
    mod = HistoryBuffer.__module__.encode()
    # GLOBAL HistoryBuffer; state (None, {'mean': 1}); BUILD
    raw = (b'\x80\x02c' + mod + b'\nHistoryBuffer\nN}X\x04\x00\x00\x00mean'
           b'K\x01s\x86b.')
    with pytest.raises(pickle.UnpicklingError, match='set the state of'):
        safe_unpickler.load(io.BytesIO(raw))
    assert HistoryBuffer.mean is mean


def test_calls_only_allow_listed_functions():
    """``REDUCE`` on a function that is no allowed global (here the bound
    method an allowed ``getattr`` returned) is refused."""
    from mmengine.logging import HistoryBuffer
    mod = HistoryBuffer.__module__.encode()
    # getattr(HistoryBuffer, 'mean')(None)
    raw = (b'\x80\x02cbuiltins\ngetattr\nc' + mod + b'\nHistoryBuffer\n'
           b'X\x04\x00\x00\x00mean\x86RN\x85R.')
    with pytest.raises(pickle.UnpicklingError, match='refuses to call'):
        safe_unpickler.load(io.BytesIO(raw))


def _numpy1_style(tmp_path):
    """A checkpoint as numpy 1 writes it: globals under ``numpy.core``."""
    obj = {
        'arr': np.arange(4, dtype=np.float64),
        'x': np.float32(1.5),
        'w': torch.arange(3)
    }
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    raw = buf.getvalue()
    if b'numpy._core.multiarray' in raw:  # written by numpy 2
        raw = raw.replace(b'numpy._core.multiarray', b'numpy.core.multiarray')
    assert b'numpy.core.multiarray\n_reconstruct' in raw
    assert b'numpy.core.multiarray\nscalar' in raw
    f = tmp_path / 'numpy1.pth'
    f.write_bytes(raw)
    return f, obj


@pytest.mark.parametrize('path', ['torch', 'restricted'])
def test_numpy1_module_paths_are_read(tmp_path, monkeypatch, path):
    if path == 'restricted':
        monkeypatch.setattr(allow_list, 'torch_has_safe_globals',
                            lambda: False)
    f, obj = _numpy1_style(tmp_path)
    _assert_same(load_checkpoint_file(f), obj)


@pytest.mark.parametrize('cut', [0.3, 0.6])
def test_truncated_legacy_file_is_reported_as_truncated(
        tmp_path, restricted_loader, cut):
    """A pickle cut short is corrupt, not refused (legacy format: the pickle
    stream itself is cut)."""
    good = tmp_path / 'good.pth'
    torch.save({
        'w': torch.randn(64),
        'meta': {
            'iter': 3,
            'name': 'x' * 200
        }
    },
               good,
               _use_new_zipfile_serialization=False)
    raw = good.read_bytes()
    bad = tmp_path / 'cut.pth'
    bad.write_bytes(raw[:int(len(raw) * cut)])
    with pytest.raises(CheckpointError) as info:
        restricted_loader(bad)
    assert 'not a readable checkpoint (truncated or corrupt?)' in str(
        info.value)
    assert 'refused' not in str(info.value)


def test_truncated_zip_is_reported_as_truncated(tmp_path, restricted_loader,
                                                runner_ckpt):
    with open(runner_ckpt, 'rb') as f:
        raw = f.read()
    bad = tmp_path / 'cut.pth'
    bad.write_bytes(raw[:len(raw) // 2])
    with pytest.raises(CheckpointError, match='truncated or corrupt'):
        restricted_loader(bad)


def test_one_allow_list_for_both_paths():
    listed = allow_list.safe_globals()
    admitted = safe_unpickler.allowed_globals()
    for name, obj in listed.items():
        assert admitted[name] is obj, name
    assert 'numpy.core.multiarray._reconstruct' in listed  # numpy 1 spelling
    assert 'numpy._core.multiarray.scalar' in listed  # numpy 2 spelling
    if allow_list.torch_has_safe_globals():
        registered = {
            entry[1]: entry[0]
            for entry in torch.serialization.get_safe_globals()
            if isinstance(entry, tuple)
        }
        for name, obj in listed.items():
            assert registered.get(name) is obj, name


@pytest.mark.slow
def test_restricted_path_reads_a_hybrid_distill_training_checkpoint(
        tmp_path, demo_train_cmd, repo_root):
    """The checkpoint ``tools/train.py`` writes for the demo HybridDistill run
    (message hub, optimizer, schedulers, RNG states) reads the same through
    both unpicklers."""
    import subprocess
    proc = subprocess.run(
        demo_train_cmd(tmp_path / 'w', 2),
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = tmp_path / 'w' / 'iter_2.pth'
    _assert_same(
        load_restricted(path),
        torch.load(path, map_location='cpu', weights_only=True))


def test_forced_weights_only_env_still_loads_safely(tmp_path, monkeypatch,
                                                    restricted_loader):
    """With TORCH_FORCE_WEIGHTS_ONLY_LOAD=1 torch refuses any pickle_module;
    the restricted path then uses torch's own (stricter) unpickler."""
    monkeypatch.setenv('TORCH_FORCE_WEIGHTS_ONLY_LOAD', '1')
    good = tmp_path / 'good.pth'
    torch.save({'w': torch.arange(3)}, good)
    assert torch.equal(restricted_loader(good)['w'], torch.arange(3))
    marker = tmp_path / 'PAYLOAD_RAN'
    evil = tmp_path / 'evil.pth'
    torch.save({'x': RunsCommand(marker)}, evil)
    with pytest.raises(CheckpointError, match="global '.*system'"):
        restricted_loader(evil)
    assert not marker.exists()
