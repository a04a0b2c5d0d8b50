import os

import pytest
import torch

from mmhybrid.utils import (CheckpointError, extract_state_dict,
                            load_checkpoint_file, save_checkpoint_atomic)


class _Payload:
    """Unpickling this would create a file: the loader must never do it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


def test_mmengine_history_buffer_and_numpy_load_safely(tmp_path):
    import numpy as np
    from mmengine.logging import HistoryBuffer, MessageHub
    hub = MessageHub.get_instance('test_checkpoint_hub')
    hub.update_scalar('train/loss', 0.25)
    hub.update_scalar('train/loss', np.float64(0.75))
    obj = dict(
        message_hub=hub.state_dict(),
        arr=np.arange(3),
        meta=dict(seed=np.int64(3), epoch=1))
    torch.save(obj, tmp_path / 'ckpt.pth')
    loaded = load_checkpoint_file(tmp_path / 'ckpt.pth')
    buf = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(buf, HistoryBuffer)
    assert buf.mean() == pytest.approx(0.5)
    assert loaded['arr'].tolist() == [0, 1, 2]


def test_code_in_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save({
        'state_dict': {
            'w': torch.zeros(1)
        },
        'x': _Payload(marker)
    }, path)
    with pytest.raises(CheckpointError, match=f'refused to load {path}'):
        load_checkpoint_file(path)
    assert not marker.exists()


def test_restricted_getattr_refuses_other_attributes(tmp_path):
    from mmengine.logging import HistoryBuffer

    class Sneaky:

        def __reduce__(self):
            return (getattr, (HistoryBuffer, '__init__'))

    path = tmp_path / 'sneaky.pth'
    torch.save({'x': Sneaky()}, path)
    with pytest.raises(CheckpointError, match='refused getattr'):
        load_checkpoint_file(path)


def test_corrupt_truncated_missing(tmp_path):
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(os.urandom(2000))
    with pytest.raises(
            CheckpointError, match='not a readable checkpoint') as e:
        load_checkpoint_file(garbage)
    assert str(garbage) in str(e.value)
    assert 'weights_only' not in str(e.value)  # never advise turning it off
    good = tmp_path / 'good.pth'
    torch.save({'w': torch.randn(100)}, good)
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match='truncated or corrupt'):
        load_checkpoint_file(cut)
    with pytest.raises(CheckpointError, match='not found: .*nope.pth'):
        load_checkpoint_file(tmp_path / 'nope.pth')


def test_safetensors_roundtrip_and_atomic_save(tmp_path):
    sd = {'a': torch.randn(2, 3), 'b': torch.arange(4)}
    save_checkpoint_atomic(sd, tmp_path / 'w.safetensors')
    back = load_checkpoint_file(tmp_path / 'w.safetensors')
    assert torch.equal(back['a'], sd['a']) and torch.equal(back['b'], sd['b'])
    bad = tmp_path / 'bad.safetensors'
    bad.write_bytes(b'\x00' * 10)
    with pytest.raises(CheckpointError, match='not a readable .safetensors'):
        load_checkpoint_file(bad)


def test_failed_save_keeps_previous_file(tmp_path):
    path = tmp_path / 'ckpt.pth'
    save_checkpoint_atomic({'w': torch.ones(2)}, path)

    class Boom:

        def __reduce__(self):
            raise RuntimeError('disk full (simulated)')

    with pytest.raises(RuntimeError, match='disk full'):
        save_checkpoint_atomic({'w': torch.zeros(2), 'x': Boom()}, path)
    assert torch.equal(load_checkpoint_file(path)['w'], torch.ones(2))
    assert sorted(os.listdir(tmp_path)) == ['ckpt.pth']  # no temp file left


def test_extract_state_dict_wrappers():
    w = {'k': torch.zeros(1)}
    for wrapped in ({
            'state_dict': w,
            'meta': {}
    }, {
            'model': w
    }, {
            'module': w
    }, w):
        assert extract_state_dict(wrapped) == w
    with pytest.raises(CheckpointError, match='found no state dict'):
        extract_state_dict({'meta': {'x': 1}}, 'f.pth')
