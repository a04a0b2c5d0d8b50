"""Checkpoint saves are atomic; ``--resume auto`` skips a corrupt newest one.

Unit tests drive mmengine's own save path (``Runner.save_checkpoint`` ->
``mmengine.runner.checkpoint.save_checkpoint``, ``CheckpointHook``'s
``last_checkpoint``) with faults injected, both ways mmhybrid delivers its
rules: ``HybridRunner`` (no process-wide patch: the atomic file backend it
names, its own ``save_checkpoint`` / ``load_or_resume``) and the stack fixes
the entry points enable for other runners. The slow test truncates the newest
checkpoint of a real run and resumes it through ``tools/train.py``.
"""
import logging
import os
import os.path as osp
import shutil
import subprocess

import pytest
import torch

from mmhybrid.engine import safe_io
from mmhybrid.utils.checkpoint import CheckpointError


def _ckpt(step):
    return dict(
        meta=dict(iter=step),
        state_dict=dict(w=torch.full((64, 64), float(step))))


def _save(folder, step, pointer=True):
    path = osp.join(folder, f'iter_{step}.pth')
    safe_io.safe_save_checkpoint(_ckpt(step), path)
    if pointer:
        with safe_io._checkpoint_hook_open(
                osp.join(folder, 'last_checkpoint'), 'w') as f:
            f.write(path)
    return path


def test_stack_fixes_route_mmengines_save_path(stack_fixes):
    import mmengine.hooks.checkpoint_hook as hook_mod
    import mmengine.runner as runner_pkg
    import mmengine.runner.checkpoint as ckpt_mod
    import mmengine.runner.runner as runner_mod
    for mod in (ckpt_mod, runner_mod, runner_pkg):
        assert mod.save_checkpoint is safe_io.safe_save_checkpoint
        assert mod.find_latest_checkpoint is safe_io.find_latest_checkpoint
    assert hook_mod.open is safe_io._checkpoint_hook_open


def test_crash_during_save_leaves_no_partial_file(tmp_path, monkeypatch,
                                                  stack_fixes):
    """Fault: the process dies (an exception here) half-way through torch.save
    (mmengine's save_checkpoint with the stack fixes: FlexibleRunner's
    path)."""
    good = _save(tmp_path, 4)
    target = osp.join(tmp_path, 'iter_8.pth')
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        f.write(b'PK\x03\x04 half a checkpoint')
        raise KeyboardInterrupt('killed while writing')

    monkeypatch.setattr(torch, 'save', dying_save)
    import mmengine.runner.checkpoint as ckpt_mod
    with pytest.raises(KeyboardInterrupt):
        ckpt_mod.save_checkpoint(_ckpt(8), target)
    monkeypatch.setattr(torch, 'save', real_save)
    assert not osp.exists(target)
    assert sorted(os.listdir(tmp_path)) == ['iter_4.pth', 'last_checkpoint']
    assert safe_io.find_latest_checkpoint(str(tmp_path)) == good


def test_existing_checkpoint_is_replaced_whole(tmp_path, monkeypatch,
                                               stack_fixes):
    path = _save(tmp_path, 4)
    monkeypatch.setattr(torch, 'save', lambda *a, **k:
                        (_ for _ in ()).throw(OSError('disk')))
    import mmengine.runner.checkpoint as ckpt_mod
    with pytest.raises(OSError):
        ckpt_mod.save_checkpoint(_ckpt(5), path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)['meta']['iter'] == 4


def test_last_checkpoint_pointer_is_atomic(tmp_path):
    """Fault: dying while CheckpointHook writes last_checkpoint."""
    first = _save(tmp_path, 4)
    pointer = osp.join(tmp_path, 'last_checkpoint')
    with pytest.raises(RuntimeError):
        with safe_io._checkpoint_hook_open(pointer, 'w') as f:
            f.write(osp.join(tmp_path, 'iter_'))
            raise RuntimeError('killed mid-write')
    assert open(pointer).read() == first
    assert [f for f in os.listdir(tmp_path) if f.startswith('.')] == []


def _toy_runner(runner_cls, work_dir, iters=4, **kw):
    from mmhybrid.testing.toy_runner import toy_runner_cfg
    kw.setdefault(
        'default_hooks',
        dict(
            checkpoint=dict(type='CheckpointHook', interval=2,
                            by_epoch=False)))
    return runner_cls(**toy_runner_cfg(work_dir, iters, **kw))


def test_checkpoint_hook_writes_pointer_after_checkpoint(tmp_path):
    """mmengine's CheckpointHook, unchanged, on a toy runner: the pointer names
    a complete file each time."""
    from mmengine.hooks import CheckpointHook
    from mmengine.runner import Runner

    seen = []

    class Spy(CheckpointHook):

        def after_train_iter(self, runner, *a, **k):
            super().after_train_iter(runner, *a, **k)
            pointer = osp.join(runner.work_dir, 'last_checkpoint')
            if osp.exists(pointer):
                named = open(pointer).read()
                seen.append((named, safe_io.probe_checkpoint(named)))

    runner = _toy_runner(
        Runner,
        tmp_path,
        default_hooks=dict(checkpoint=Spy(interval=2, by_epoch=False)))
    runner.train()
    assert [osp.basename(n)
            for n, _ in seen] == ['iter_2.pth', 'iter_2.pth', 'iter_4.pth']
    assert all(reason is None for _, reason in seen)


def test_non_finite_weights_are_never_saved(tmp_path, stack_fixes):
    import mmengine.runner.checkpoint as ckpt_mod
    bad = _ckpt(3)
    bad['state_dict']['w'][1, 2] = float('nan')
    path = osp.join(tmp_path, 'iter_3.pth')
    with pytest.raises(
            CheckpointError,
            match=r'refusing to save .*iter_3.pth'
            r".*non-finite.*\['w'\]"):
        ckpt_mod.save_checkpoint(bad, path)
    assert not osp.exists(path)


def _corrupt(path, how):
    data = open(path, 'rb').read()
    if how == 'truncated':
        data = data[:len(data) // 2]
    elif how == 'empty':
        data = b''
    elif how == 'bitflip':  # one byte inside the tensor data (CRC mismatch)
        i = data.index(b'\x00\x00\x00\x41') if b'\x00\x00\x00\x41' in data \
            else len(data) // 3
        data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
    with open(path, 'wb') as f:
        f.write(data)


@pytest.mark.parametrize('how', ['truncated', 'empty', 'bitflip'])
def test_auto_resume_falls_back_to_previous(tmp_path, how, monkeypatch):
    """Fault: the newest checkpoint is damaged (disk full, bad copy, ...)."""
    logged = []
    monkeypatch.setattr(
        safe_io, '_log', lambda msg, level=0: logged.append((level, msg)))
    older = _save(tmp_path, 4)
    newest = _save(tmp_path, 8)
    _corrupt(newest, how)
    if how == 'bitflip':
        assert safe_io.probe_checkpoint(newest) is not None
    assert safe_io.find_latest_checkpoint(str(tmp_path)) == older
    [(level, msg)] = logged
    assert level == logging.WARNING
    assert newest in msg and older in msg and 'falling back' in msg


def test_auto_resume_pointer_missing_or_empty(tmp_path):
    _save(tmp_path, 4, pointer=False)
    newer = _save(tmp_path, 12, pointer=False)
    # killed after the first checkpoint was renamed into place but before
    # last_checkpoint was written: resume it rather than start over
    assert safe_io.find_latest_checkpoint(str(tmp_path)) == newer
    open(osp.join(tmp_path, 'last_checkpoint'), 'w').close()  # empty pointer
    assert safe_io.find_latest_checkpoint(str(tmp_path)) == newer
    with open(osp.join(tmp_path, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(tmp_path, 'iter_16.pth'))  # deleted by hand
    assert safe_io.find_latest_checkpoint(str(tmp_path)) == newer


def test_complete_checkpoint_newer_than_pointer_wins(tmp_path):
    """Killed between renaming iter_8.pth and updating last_checkpoint."""
    _save(tmp_path, 4)
    newer = _save(tmp_path, 8, pointer=False)
    assert safe_io.find_latest_checkpoint(str(tmp_path)) == newer


def test_no_readable_checkpoint_is_an_error(tmp_path):
    for step in (4, 8):
        _corrupt(_save(tmp_path, step), 'truncated')
    with pytest.raises(CheckpointError, match='none is readable'):
        safe_io.find_latest_checkpoint(str(tmp_path))


def test_empty_work_dir_starts_fresh(tmp_path):
    assert safe_io.find_latest_checkpoint(str(tmp_path)) is None


# ------------------------------------------ HybridRunner, no process patch
def test_hybrid_runner_saves_through_the_atomic_backend(
        tmp_path, monkeypatch, no_stack_fixes):
    """Fault: the process dies after the bytes are written, before the rename
    (at fsync): no partial file, the previous checkpoint stays in place, and
    mmengine's module functions are mmengine's own."""
    import mmengine.runner.checkpoint as ckpt_mod

    from mmhybrid.engine import HybridRunner
    assert ckpt_mod.save_checkpoint is not safe_io.safe_save_checkpoint
    runner = _toy_runner(HybridRunner, tmp_path, iters=2)
    runner.train()
    first = tmp_path / 'iter_2.pth'
    assert safe_io.probe_checkpoint(str(first)) is None
    before = first.read_bytes()

    def killed(fd):
        raise KeyboardInterrupt('killed before the rename')

    monkeypatch.setattr(os, 'fsync', killed)
    with torch.no_grad():
        runner.model.w.weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        runner.save_checkpoint(str(tmp_path), 'iter_2.pth', by_epoch=False)
    monkeypatch.undo()
    assert first.read_bytes() == before  # the old file, whole
    assert not [f for f in os.listdir(tmp_path) if f.startswith('.')]


def test_hybrid_runner_refuses_non_finite_weights(tmp_path, no_stack_fixes):
    from mmhybrid.engine import HybridRunner
    runner = _toy_runner(HybridRunner, tmp_path, iters=1)
    runner.train()
    with torch.no_grad():
        runner.model.w.weight[0, 1] = float('nan')
    with pytest.raises(
            CheckpointError,
            match=r'refusing to save .*iter_9.pth'
            r".*non-finite.*\['w.weight'\]"):
        runner.save_checkpoint(str(tmp_path), 'iter_9.pth', by_epoch=False)
    assert not (tmp_path / 'iter_9.pth').exists()


@pytest.mark.parametrize('how', ['truncated', 'empty'])
def test_hybrid_runner_resume_skips_damaged_newest(tmp_path, how,
                                                   no_stack_fixes):
    """mmengine's own ``find_latest_checkpoint`` would hand the damaged iter_4
    to ``resume``; HybridRunner's ``load_or_resume`` takes iter_2."""
    from mmhybrid.engine import HybridRunner
    _toy_runner(HybridRunner, tmp_path, iters=4).train()
    _corrupt(str(tmp_path / 'iter_4.pth'), how)
    runner = _toy_runner(HybridRunner, tmp_path, iters=4, resume=True)
    runner.load_or_resume()
    assert runner.iter == 2


@pytest.mark.slow
def test_resume_auto_skips_truncated_newest(repo_root, tiny, tmp_path, rel,
                                            reference_run):
    """A real run's newest checkpoint (iter_12) is truncated; ``--resume``
    continues from iter_8 with a warning naming both, and iterations 9..12
    equal the uninterrupted run."""
    ref_dir, ref = reference_run
    work = tmp_path / 'work'
    shutil.copytree(ref_dir, work, ignore=shutil.ignore_patterns('2*'))
    pointer = (work / 'last_checkpoint')
    pointer.write_text(str(work / 'iter_12.pth'))
    _corrupt(str(work / 'iter_12.pth'), 'truncated')
    proc = subprocess.run(
        tiny.ref_cmd(work, args=['--resume']),
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=600,
        env=rel.env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert 'falling back to ' + str(work / 'iter_8.pth') in out
    assert 'skipped unusable checkpoint(s) ' + str(work / 'iter_12.pth') in out
    got = rel.scalars(work)
    assert sorted(got) == [9, 10, 11, 12]
    for it in got:
        assert got[it]['loss'] == pytest.approx(ref[it]['loss'], abs=1e-6)
    assert safe_io.probe_checkpoint(str(work / 'iter_12.pth')) is None
