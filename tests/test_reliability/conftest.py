"""Shared helpers of the reliability tests.

``tiny`` builds the command line of a tiny CPU run of the demo config through
``tools/train.py``; ``run_train_inprocess`` runs its ``main``
(:mod:`mmhybrid.apis.train`) in this process (for runs that fail before or at
their first step), and afterwards puts back the stack fixes it enabled;
``stack_fixes`` / ``no_stack_fixes`` run a test with all of
:func:`mmhybrid.enable_stack_fixes` or none; ``scalars`` reads the
per-iteration log of a work dir.
"""
import os
import os.path as osp
import pickle
import sys

import pytest
import torch

from mmhybrid.testing import DEMO_ARCH
from mmhybrid.testing import DEMO_CONFIG as CONFIG
from mmhybrid.testing import DemoRun


class Tiny:
    """Command-line pieces of a tiny demo run."""

    def __init__(self, repo_root, data, teachers):
        self.repo_root = repo_root
        self.data = data
        self.teachers = teachers

    def options(self, iters, batch=8, workers=1, ckpt_interval=None, extra=()):
        return DemoRun(
            self.data,
            self.teachers,
            iters,
            batch_size=batch,
            num_workers=workers,
            checkpoint_interval=ckpt_interval or iters,
            extra=extra).options()

    def argv(self, work_dir, iters, args=(), **kw):
        return [CONFIG, '--work-dir',
                str(work_dir), *args] + self.options(iters, **kw)

    def cmd(self, work_dir, iters, args=(), **kw):
        return [sys.executable, 'tools/train.py'] + self.argv(
            work_dir, iters, args, **kw)

    # the reference run of the resume tests: 12 iterations, checkpoints every
    # 4 (the demo keeps the last 2), two dataloader workers as in the demo
    REF = dict(iters=12, ckpt_interval=4, workers=2)

    def ref_cmd(self, work_dir, args=()):
        ref = dict(self.REF)
        return self.cmd(work_dir, ref.pop('iters'), args=args, **ref)


@pytest.fixture(scope='session')
def tiny(repo_root, shapes_imagenet, demo_teachers):
    return Tiny(repo_root, shapes_imagenet, demo_teachers)


def _restore_fixes(enabled):
    from mmhybrid.engine import stack_fixes
    stack_fixes.disable_stack_fixes()
    if enabled:
        stack_fixes.enable_stack_fixes(enabled)


@pytest.fixture
def stack_fixes():
    """Every stack fix enabled for this test (what tools/train.py does for a
    FlexibleRunner config), the previous state put back afterwards."""
    from mmhybrid.engine import stack_fixes
    before = stack_fixes.enabled_stack_fixes()
    stack_fixes.enable_stack_fixes()
    yield
    _restore_fixes(before)


@pytest.fixture
def no_stack_fixes():
    """No stack fix in this process for this test (what ``import mmhybrid``
    alone gives), the previous state put back afterwards."""
    from mmhybrid.engine import stack_fixes
    before = stack_fixes.enabled_stack_fixes()
    stack_fixes.disable_stack_fixes()
    yield
    _restore_fixes(before)


@pytest.fixture(scope='session')
def train_tool():
    """``tools/train.py``'s command line as a module (its ``main(argv)``)."""
    from mmhybrid.apis import train
    return train


@pytest.fixture
def run_train_inprocess(repo_root, train_tool, monkeypatch):
    """Run ``tools/train.py`` in this process, from the repository root; the
    stack fixes it enables are taken back afterwards."""
    from mmhybrid.engine import stack_fixes
    before = stack_fixes.enabled_stack_fixes()

    def run(argv):
        monkeypatch.chdir(repo_root)
        return train_tool.main(list(argv))

    yield run
    _restore_fixes(before)


def scalars(work_dir, latest_only=False):
    """Per-iteration records (``loss``, ``loss_feat``, ...) by iteration: every
    run of a resumed work folder merged, later ones winning, unless
    ``latest_only`` (:func:`mmhybrid.utils.scalars.scalars_by_iter`)."""
    from mmhybrid.utils.scalars import scalars_by_iter
    return scalars_by_iter(work_dir, 'loss', all_runs=not latest_only)


# ------------------------------------------------------ malicious checkpoints
class CodeOnLoad:
    """Unpickling this object runs code: it creates ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f'open({self.path!r}, "w").write("pwned")', ))


class GetattrEscape:
    """Tries to reach beyond the allow-list through the restricted getattr that
    mmhybrid registers for mmengine's HistoryBuffer."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        from mmengine.logging import HistoryBuffer
        return (getattr, (HistoryBuffer, '__init__'))


def write_malicious(path, marker, kind='zip'):
    """A checkpoint that looks like mmpretrain's but runs code when unpickled.

    kind: ``zip`` (torch.save), ``legacy`` (torch's pre-1.6 format), ``pickle``
    (a bare pickle file), ``getattr`` (escape through the allow-listed
    ``builtins.getattr``).
    """
    from mmpretrain.models import VisionTransformer
    sd = {
        f'backbone.{k}': v
        for k, v in VisionTransformer(
            arch=dict(DEMO_ARCH), img_size=64,
            patch_size=8).state_dict().items()
    }
    payload = GetattrEscape(marker) if kind == 'getattr' else CodeOnLoad(
        marker)
    obj = dict(state_dict=sd, meta=dict(iter=1, payload=payload))
    if kind == 'zip' or kind == 'getattr':
        torch.save(obj, path)
    elif kind == 'legacy':
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    elif kind == 'pickle':
        with open(path, 'wb') as f:
            pickle.dump(obj, f)
    else:
        raise ValueError(kind)
    return str(path)


@pytest.fixture(scope='session')
def evil_ckpt(tmp_path_factory):
    """(checkpoint path, marker path): the marker appears iff the payload ran.

    An absent marker proves that loading ran none of the pickle's code.
    """
    d = tmp_path_factory.mktemp('evil')
    marker = d / 'PAYLOAD_RAN'
    path = write_malicious(d / 'evil_teacher.pth', marker)
    return path, str(marker)


@pytest.fixture(autouse=True)
def _payload_never_ran(request):
    """Every test of this folder: no malicious payload ran, whatever it did."""
    yield
    if 'evil_ckpt' in request.fixturenames:
        marker = request.getfixturevalue('evil_ckpt')[1]
        assert not osp.exists(marker), 'a checkpoint payload ran!'


def free_port():
    import socket
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def env_for_subprocess(**extra):
    """The environment of a test's child process: one OpenMP thread, this
    checkout's mmhybrid first on the path (whatever is installed)."""
    path = [REPO_ROOT] + [
        p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p
    ]
    env = dict(
        os.environ,
        OMP_NUM_THREADS='1',
        PYTHONUNBUFFERED='1',
        PYTHONPATH=os.pathsep.join(path))
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture(scope='session')
def reference_run(tiny, tmp_path_factory):
    """An uninterrupted reference run: (work dir, per-iteration records)."""
    import subprocess
    work = tmp_path_factory.mktemp('reference') / 'work'
    proc = subprocess.run(
        tiny.ref_cmd(work),
        cwd=tiny.repo_root,
        capture_output=True,
        text=True,
        timeout=600,
        env=env_for_subprocess())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    recs = scalars(work)
    assert sorted(recs) == list(range(1, Tiny.REF['iters'] + 1))
    return work, recs


@pytest.fixture(scope='session')
def rel():
    """The helpers above, for the test modules (importlib mode cannot import
    conftest by name)."""
    import types
    return types.SimpleNamespace(
        scalars=scalars,
        write_malicious=write_malicious,
        free_port=free_port,
        env=env_for_subprocess,
        CONFIG=CONFIG)
