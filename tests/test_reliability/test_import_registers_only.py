"""``import mmhybrid`` only registers; each stack fix is opt-in, reversible,
version-gated, and still needed.

* A fresh process imports mmengine, snapshots every attribute of every loaded
  mmengine module (and of the classes they define), imports mmhybrid (and the
  tools' modules), and finds every attribute identical; then
  ``enable_stack_fixes()`` changes only attributes listed in
  ``mmhybrid.engine.stack_fixes.PATCHED_ATTRIBUTES``, and
  ``disable_stack_fixes()`` puts every one back.
* Per fix of ``mmhybrid.engine.stack_fixes.STACK_FIXES``: a test that shows the
  upstream bug on the installed mmengine (with no fix applied). When upstream
  fixes it, that test fails: drop the fix. And a test that the fix's gate is on
  for the installed versions: when a new mmengine still has the bug, it fails:
  extend ``MMENGINE_CHECKED``.
* ``HybridRunner`` does the same jobs without any patch (the CPU ones here; the
  checkpoint ones in test_atomic_saves.py and test_safe_checkpoints.py).
"""
import builtins
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mmhybrid.engine import stack_fixes

SNAPSHOT_SCRIPT = r'''
import importlib, json, sys, types
targets = json.loads(sys.argv[1])
for t in targets:  # load every module a fix touches, before mmhybrid
    importlib.import_module(t.split(':')[0])
import mmengine.runner._flexible_runner  # noqa


def snap():
    out = {}
    for name, mod in list(sys.modules.items()):
        if mod is None or not (name == 'torch.cuda' or name == 'mmengine'
                               or name.startswith('mmengine.')):
            continue
        for key, value in list(vars(mod).items()):
            out[name + ':' + key] = value
            if isinstance(value, type) and value.__module__ == name:
                for ckey, cvalue in list(vars(value).items()):
                    out[name + ':' + key + '.' + ckey] = cvalue
    return out


def diff(a, b):
    # replaced, removed, or added to a module that existed before (a module
    # global such as `open` shadows the builtin); new submodules are imports
    missing = object()
    modules = {k.split(':')[0] for k in a}
    added = {
        k for k in b if k not in a and k.split(':')[0] in modules
        and not isinstance(b[k], types.ModuleType)
    }
    return sorted(k for k in set(a) | added
                  if a.get(k, missing) is not b.get(k, missing))


def schemes():
    from mmengine.runner.checkpoint import CheckpointLoader
    return list(CheckpointLoader._schemes.items())


before, before_schemes = snap(), schemes()
import mmhybrid  # noqa  (what custom_imports does)
import mmhybrid.apis.train, mmhybrid.apis.test  # noqa  (the tools' modules)
after_import = diff(before, snap())
schemes_kept = schemes() == before_schemes and all(
    x[1] is y[1] for x, y in zip(schemes(), before_schemes))
from mmhybrid.engine import stack_fixes
enabled = stack_fixes.enable_stack_fixes()
changed = diff(before, snap())
stack_fixes.disable_stack_fixes()
after_disable = diff(before, snap())
schemes_back = all(x[1] is y[1] for x, y in zip(schemes(), before_schemes)) \
    and len(schemes()) == len(before_schemes)
print('RESULT ' + json.dumps(dict(
    after_import=after_import, schemes_kept=schemes_kept, enabled=enabled,
    changed=changed, after_disable=after_disable, schemes_back=schemes_back)))
'''


@pytest.fixture(scope='module')
def fresh_process(rel):
    proc = subprocess.run([
        sys.executable, '-c', SNAPSHOT_SCRIPT,
        json.dumps(list(stack_fixes.PATCHED_ATTRIBUTES))
    ],
                          capture_output=True,
                          text=True,
                          timeout=300,
                          env=rel.env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith('RESULT ')]
    return json.loads(line[-1][len('RESULT '):])


def test_import_leaves_every_mmengine_attribute_identical(fresh_process):
    assert fresh_process['after_import'] == []
    assert fresh_process['schemes_kept']


def test_enable_changes_only_the_listed_attributes(fresh_process):
    changed = set(fresh_process['changed'])

    def spellings(target):
        """A target as the snapshot spells it (a class attribute also under the
        module that defines the class)."""
        owner, attr = stack_fixes._resolve(target)
        if isinstance(owner, type):
            return {target, f'{owner.__module__}:{owner.__qualname__}.{attr}'}
        return {target}

    listed = set().union(*map(spellings, stack_fixes.PATCHED_ATTRIBUTES))
    assert changed, 'enable_stack_fixes() changed nothing'
    assert changed <= listed, changed - listed
    # every fix that applies here is enabled and changed one of its targets
    enabled = [f for f in stack_fixes.STACK_FIXES if f.applies()]
    assert fresh_process['enabled'] == [f.name for f in enabled]
    for fix in enabled:
        assert changed & set().union(*map(spellings, fix.targets)), fix.name


def test_disable_puts_every_attribute_back(fresh_process):
    assert fresh_process['after_disable'] == []
    assert fresh_process['schemes_back']


def test_enable_takes_only_known_names():
    with pytest.raises(KeyError, match="unknown stack fix.*'atomic_save'"):
        stack_fixes.enable_stack_fixes(['atomic_save'])


# ------------------------------------------ each fix: the bug is upstream's
GPU = torch.cuda.is_available()


@pytest.mark.parametrize('fix', stack_fixes.STACK_FIXES, ids=lambda f: f.name)
def test_fix_is_gated_on_for_the_installed_stack(fix):
    """The installed mmengine is in every fix's range (each bug is shown below
    on it); the CPU fixes apply only without CUDA."""
    if fix.name.startswith('cpu_') and GPU:
        assert not fix.applies()
    else:
        assert fix.applies(), (fix.name, stack_fixes.mmengine_version())


def _writes(monkeypatch):
    """Record the paths ``open`` is asked to write (``'w'``/``'wb'``)."""
    opened = []
    real_open = builtins.open

    def recording_open(file, mode='r', *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and 'w' in mode:
            opened.append(os.fspath(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, 'open', recording_open)
    return opened


def test_upstream_scoped_collate_bug(no_stack_fixes):
    """scoped_collate: mmengine passes ``_scope_`` on to the collate
    function; HybridRunner's build_dataloader resolves it."""
    from mmengine.runner import Runner

    from mmhybrid.engine import HybridRunner

    def loader_cfg():
        return dict(
            dataset=[dict(inputs=torch.ones(2))] * 4,
            batch_size=2,
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate', _scope_='mmengine'))

    with pytest.raises(
            TypeError, match='unexpected keyword argument '
            "'_scope_'"):
        next(iter(Runner.build_dataloader(loader_cfg())))
    batch = next(iter(HybridRunner.build_dataloader(loader_cfg())))
    assert batch['inputs'].shape == (2, 2)


def test_upstream_save_writes_in_place(tmp_path, monkeypatch, no_stack_fixes):
    """atomic_saves: mmengine's save_checkpoint opens the target itself for
    writing (a kill mid-write leaves a truncated file) and saves NaN."""
    from mmengine.runner.checkpoint import save_checkpoint
    target = str(tmp_path / 'iter_1.pth')
    opened = _writes(monkeypatch)
    save_checkpoint(
        dict(state_dict=dict(w=torch.tensor([float('nan')]))), target)
    monkeypatch.undo()
    assert opened == [target]
    assert osp.isfile(target)


def test_upstream_find_latest_trusts_the_pointer(tmp_path, no_stack_fixes):
    """resume_latest_readable: mmengine's find_latest_checkpoint names a
    truncated newest checkpoint."""
    from mmengine.runner.checkpoint import find_latest_checkpoint
    torch.save(dict(meta=dict(iter=2)), tmp_path / 'iter_2.pth')
    newest = tmp_path / 'iter_4.pth'
    newest.write_bytes(b'PK\x03\x04 truncated')
    (tmp_path / 'last_checkpoint').write_text(str(newest))
    assert find_latest_checkpoint(str(tmp_path)) == str(newest)


def test_upstream_pointer_written_in_place(tmp_path, monkeypatch,
                                           no_stack_fixes):
    """atomic_last_checkpoint: CheckpointHook opens last_checkpoint itself for
    writing, even under HybridRunner (hence the fix from the entry points)."""
    from mmhybrid.engine import HybridRunner
    from mmhybrid.testing.toy_runner import toy_runner_cfg
    runner = HybridRunner(**toy_runner_cfg(
        tmp_path,
        iters=1,
        samples=4,
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=1,
                            by_epoch=False))))
    opened = _writes(monkeypatch)
    runner.train()
    monkeypatch.undo()
    pointer = str(tmp_path / 'last_checkpoint')
    assert pointer in opened
    # the checkpoint itself went through the atomic backend (a temporary file)
    assert str(tmp_path / 'iter_1.pth') not in opened


def test_upstream_loaders_run_pickled_code(tmp_path, monkeypatch, rel,
                                           no_stack_fixes):
    """safe_checkpoint_loaders: mmengine's local loader leaves weights_only to
    torch's default, which an environment variable (or torch < 2.6) turns
    off: the file's code runs (here: it creates a marker file)."""
    from mmengine.runner.checkpoint import CheckpointLoader
    marker = tmp_path / 'RAN'
    path = rel.write_malicious(tmp_path / 'evil.pth', marker)
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    CheckpointLoader.load_checkpoint(path)
    assert marker.exists()


@pytest.mark.skipif(GPU, reason='the bug shows on machines without CUDA')
def test_upstream_dist_init_needs_cuda(monkeypatch, rel, no_stack_fixes):
    """cpu_dist_init: mmengine's pytorch launcher calls torch.cuda.set_device
    before it starts a gloo group."""
    import torch.distributed as torch_dist
    from mmengine.dist.utils import _init_dist_pytorch
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '1')
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', str(rel.free_port()))
    try:
        # "Found no NVIDIA driver", "Torch not compiled with CUDA enabled",
        # or no torch._C._cuda_setDevice, by the torch build
        with pytest.raises((AssertionError, AttributeError, RuntimeError),
                           match='(?i)nvidia|cuda'):
            _init_dist_pytorch('gloo')
    finally:
        if torch_dist.is_initialized():  # upstream fixed it: no leak
            torch_dist.destroy_process_group()


CPU_DDP_SCRIPT = r'''
import json, sys
from mmengine.runner import Runner
import mmhybrid  # noqa  (registers only)
from mmhybrid.engine import HybridRunner
from mmhybrid.testing.toy_runner import toy_runner_cfg


def runner(cls, work_dir):
    return cls(**toy_runner_cfg(
        work_dir, iters=2, samples=4, launcher='pytorch',
        env_cfg=dict(dist_cfg=dict(backend='gloo'))))


# HybridRunner starts the gloo group and wraps the CPU model itself
hybrid = runner(HybridRunner, sys.argv[1] + '/hybrid')
hybrid.train()
result = dict(wrapper=type(hybrid.model).__name__, iters=hybrid.iter)
# mmengine's Runner in the same (now distributed) process: its wrap_model
try:
    runner(Runner, sys.argv[1] + '/plain')
    result['plain'] = 'ok'
except ValueError as e:
    result['plain'] = str(e)
print('RESULT ' + json.dumps(result))
'''


@pytest.mark.skipif(GPU, reason='the bugs show on machines without CUDA')
def test_hybrid_runner_trains_distributed_on_cpu_where_runner_cannot(
        tmp_path, rel):
    """cpu_ddp (upstream: mmengine's Runner passes device_ids for a CPU model)
    and cpu_dist_init, both handled by HybridRunner with no patch."""
    env = rel.env(
        RANK=0,
        LOCAL_RANK=0,
        WORLD_SIZE=1,
        MASTER_ADDR='127.0.0.1',
        MASTER_PORT=rel.free_port())
    proc = subprocess.run(
        [sys.executable, '-c', CPU_DDP_SCRIPT,
         str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith('RESULT ')]
    result = json.loads(line[-1][len('RESULT '):])
    assert result['wrapper'] == 'CPUDistributedDataParallel'
    assert result['iters'] == 2
    assert 'device_ids' in result['plain'], result['plain']
