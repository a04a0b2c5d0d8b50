"""The opt-in process-wide fixes of mmengine (the "stack fixes").

``import mmhybrid`` (what a config's ``custom_imports`` does) changes no
mmengine function. mmhybrid's runner, :class:`mmhybrid.engine.HybridRunner`,
fixes what it can by overriding its own methods. What only a process-wide patch
can fix is listed in :data:`STACK_FIXES` (each with the mmengine versions that
have the bug) and applied by :func:`enable_stack_fixes`, which only mmhybrid's
entry points (``tools/train.py``, ``tools/test.py``) call, or a user
explicitly. :data:`PATCHED_ATTRIBUTES` names every attribute these fixes
replace.
"""
import functools
import importlib
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple

import torch

from .runners.helpers import (drop_cpu_device_ids, no_cuda_set_device,
                              resolve_scoped_collate)


def mmengine_version() -> Tuple[int, ...]:
    import mmengine
    return tuple(
        int(p) for p in mmengine.__version__.split('.')[:3] if p.isdigit())


# The newest mmengine release whose code these fixes were checked against.
# A newer release turns them off until tests/test_reliability/
# test_import_registers_only.py has been run on it: its per-fix tests fail
# on a release that fixed a bug (remove the fix) and on a release that still
# has it but is outside the range below (extend the range).
MMENGINE_CHECKED = (0, 10, 7)


class StackFix(NamedTuple):
    """One process-wide patch of mmengine, applied by
    :func:`enable_stack_fixes`.

    Args:
        name (str): What ``enable_stack_fixes(names)`` selects it by.
        why (str): The upstream bug, in one line (docs/reliability.md lists
            these).
        targets (tuple[str]): ``'module:attribute.path'`` of every attribute
            it replaces.
        applies (Callable[[], bool]): Whether this process needs it (the
            mmengine range with the bug, plus e.g. "no CUDA").
        patch (Callable[[], None]): Applies it (replaces the targets).
    """
    name: str
    why: str
    targets: Tuple[str, ...]
    applies: Callable[[], bool]
    patch: Callable[[], None]


def _buggy_mmengine() -> bool:
    return mmengine_version() <= MMENGINE_CHECKED


def _no_cuda() -> bool:
    return _buggy_mmengine() and not torch.cuda.is_available()


_MISSING = object()


def _resolve(target: str):
    """(owner object, attribute name) of ``'module:attr.path'``."""
    mod_name, path = target.split(':')
    owner = importlib.import_module(mod_name)
    *parents, attr = path.split('.')
    for p in parents:
        owner = getattr(owner, p)
    return owner, attr


def _get(target: str):
    owner, attr = _resolve(target)
    if isinstance(owner, type):
        return owner.__dict__.get(attr, _MISSING)
    return owner.__dict__.get(attr, _MISSING) if hasattr(
        owner, '__dict__') else getattr(owner, attr, _MISSING)


def _set(target: str, value) -> None:
    owner, attr = _resolve(target)
    if value is _MISSING:
        if attr in owner.__dict__:
            delattr(owner, attr)
    else:
        setattr(owner, attr, value)


def _patch_safe_loaders() -> None:
    from mmengine.runner.checkpoint import CheckpointLoader

    from .safe_io import SAFE_SCHEMES
    for prefixes, fn in SAFE_SCHEMES:
        CheckpointLoader.register_scheme(prefixes, fn, force=True)


_SAVE_MODULES = ('mmengine.runner.checkpoint', 'mmengine.runner.runner',
                 'mmengine.runner')


def _patch_atomic_saves() -> None:
    from . import safe_io
    safe_io.ORIGINAL_SAVE[0] = _get(
        'mmengine.runner.checkpoint:save_checkpoint')
    for mod in _SAVE_MODULES:
        _set(f'{mod}:save_checkpoint', safe_io.safe_save_checkpoint)


def _patch_find_latest() -> None:
    from . import safe_io
    for mod in _SAVE_MODULES + ('mmengine.runner._flexible_runner', ):
        _set(f'{mod}:find_latest_checkpoint', safe_io.find_latest_checkpoint)


def _patch_atomic_pointer() -> None:
    from . import safe_io
    _set('mmengine.hooks.checkpoint_hook:open', safe_io._checkpoint_hook_open)


def _cpu_safe_init(fn):

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with no_cuda_set_device():
            return fn(*args, **kwargs)

    return wrapper


def _patch_cpu_dist_init() -> None:
    for name in ('_init_dist_pytorch', '_init_dist_slurm'):
        target = f'mmengine.dist.utils:{name}'
        _set(target, _cpu_safe_init(_get(target)))


def _patch_cpu_ddp() -> None:
    target = ('mmengine.model.wrappers.distributed:'
              'MMDistributedDataParallel.__init__')
    init = _get(target)

    @functools.wraps(init)
    def __init__(self, module, *args, **kwargs):
        init(self, module, *args, **drop_cpu_device_ids(module, kwargs))

    _set(target, __init__)


def _patch_scoped_collate() -> None:
    target = 'mmengine.runner.runner:Runner.build_dataloader'
    build = _get(target).__func__

    @functools.wraps(build)
    def build_dataloader(dataloader, *args, **kwargs):
        return build(resolve_scoped_collate(dataloader), *args, **kwargs)

    _set(target, staticmethod(build_dataloader))


_SCHEMES = 'mmengine.runner.checkpoint:CheckpointLoader._schemes'

STACK_FIXES: List[StackFix] = [
    StackFix(
        'safe_checkpoint_loaders',
        "mmengine's CheckpointLoader schemes call torch.load without "
        'weights_only (torch < 2.6 and TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 run '
        "a checkpoint's pickled code); they are re-registered to read through "
        'mmhybrid.utils.checkpoint.load_checkpoint_file', (_SCHEMES, ),
        _buggy_mmengine, _patch_safe_loaders),
    StackFix(
        'atomic_saves',
        'mmengine.runner.checkpoint.save_checkpoint writes the file in place '
        '(a kill leaves a truncated checkpoint) and saves NaN weights; '
        'FlexibleRunner strategies call it directly',
        tuple(f'{m}:save_checkpoint' for m in _SAVE_MODULES), _buggy_mmengine,
        _patch_atomic_saves),
    StackFix(
        'resume_latest_readable',
        'find_latest_checkpoint trusts last_checkpoint: a truncated newest '
        'checkpoint fails --resume instead of falling back to the previous',
        tuple(f'{m}:find_latest_checkpoint'
              for m in _SAVE_MODULES + ('mmengine.runner._flexible_runner', )),
        _buggy_mmengine, _patch_find_latest),
    StackFix(
        'atomic_last_checkpoint',
        "CheckpointHook writes last_checkpoint with open(..., 'w') in place "
        '(a kill leaves it empty)', ('mmengine.hooks.checkpoint_hook:open', ),
        _buggy_mmengine, _patch_atomic_pointer),
    StackFix(
        'cpu_dist_init',
        "init_dist's pytorch/slurm launchers call torch.cuda.set_device "
        'unconditionally (a gloo run on CPUs dies); skipped without CUDA',
        ('mmengine.dist.utils:_init_dist_pytorch',
         'mmengine.dist.utils:_init_dist_slurm'), _no_cuda,
        _patch_cpu_dist_init),
    StackFix(
        'cpu_ddp',
        'Runner.wrap_model and DDPStrategy pass device_ids=[LOCAL_RANK] to '
        'MMDistributedDataParallel, which DDP refuses for CPU modules',
        ('mmengine.model.wrappers.distributed:'
         'MMDistributedDataParallel.__init__', ), _no_cuda, _patch_cpu_ddp),
    StackFix(
        'scoped_collate',
        "Runner.build_dataloader passes a config's _scope_ on to the collate "
        'function (default_collate() got an unexpected keyword argument '
        "'_scope_')", ('mmengine.runner.runner:Runner.build_dataloader', ),
        _buggy_mmengine, _patch_scoped_collate),
]

# Every attribute mmhybrid ever replaces, in one place: the stack fixes',
# plus the two it only swaps for the duration of one call or per instance
# (HybridRunner.setup_env's torch.cuda.set_device; NonFiniteLossHook wraps
# the methods of the run's own optimizer wrapper instance, never the class).
PATCHED_ATTRIBUTES: Tuple[str, ...] = tuple(
    t for fix in STACK_FIXES for t in fix.targets
) + (
    'torch.cuda:set_device',
    'mmengine.optim.optimizer.optimizer_wrapper:OptimWrapper.update_params',
    'mmengine.optim.optimizer.optimizer_wrapper:OptimWrapper.backward',
    'mmengine.optim.optimizer.optimizer_wrapper:OptimWrapper.step',
)

_ORIGINALS: Dict[str, object] = {}
_SCHEME_ITEMS: list = []
_ENABLED: List[str] = []


def enable_stack_fixes(names: Optional[Iterable[str]] = None) -> List[str]:
    """Apply the process-wide fixes of :data:`STACK_FIXES` (idempotent).

    Called by mmhybrid's entry points only, never on import. Each fix is
    applied only where :attr:`StackFix.applies` (the mmengine versions with
    the bug; the CPU ones without CUDA). :func:`disable_stack_fixes` undoes
    them.

    Args:
        names (Iterable[str], optional): The fixes to apply; all when None.

    Returns:
        list[str]: The names of the fixes now enabled.
    """
    by_name = {fix.name: fix for fix in STACK_FIXES}
    wanted = list(by_name) if names is None else list(names)
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise KeyError(f'unknown stack fix(es) {unknown}; expected names from '
                       f'{list(by_name)}')
    for name in wanted:
        fix = by_name[name]
        if name in _ENABLED or not fix.applies():
            continue
        for target in fix.targets:
            if target not in _ORIGINALS:
                value = _get(target)
                _ORIGINALS[target] = value
                if target == _SCHEMES:  # register_scheme edits it in place too
                    _SCHEME_ITEMS[:] = list(value.items())
        fix.patch()
        _ENABLED.append(name)
    return list(_ENABLED)


def disable_stack_fixes() -> None:
    """Put back every attribute :func:`enable_stack_fixes` replaced."""
    for target, value in _ORIGINALS.items():
        if target == _SCHEMES:
            value.clear()
            value.update(_SCHEME_ITEMS)
        _set(target, value)
    _ORIGINALS.clear()
    _ENABLED.clear()


def enabled_stack_fixes() -> List[str]:
    """The names of the fixes applied in this process."""
    return list(_ENABLED)
