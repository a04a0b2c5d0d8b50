"""Stack fixes applied once, when :mod:`mmhybrid` is imported.

mmengine 0.10.7 pickles a few non-tensor objects into its checkpoints (the message
hub's ``HistoryBuffer`` and the numpy arrays/scalars inside it). torch >= 2.6 loads
with ``weights_only=True`` by default and refuses them, so ``--resume`` fails. We
allow-list exactly those types with :func:`torch.serialization.add_safe_globals`;
safe loading stays on and any other global still raises.

A ``HistoryBuffer`` pickles its statistics methods as ``getattr(HistoryBuffer,
'mean')``. The real ``getattr`` would let a file reach any attribute of any
allowed object, so the pickle's ``builtins.getattr`` resolves to
:func:`_history_buffer_getattr`, which answers only those four lookups.

mmengine's ``pytorch``/``slurm`` launchers call ``torch.cuda.set_device`` and
wrap models in DDP with ``device_ids=[LOCAL_RANK]`` unconditionally, so a
distributed run on CPU (gloo) dies before its first step. On a machine without
CUDA only, ``set_device`` is skipped during ``init_dist`` and CPU modules are
wrapped without ``device_ids``; on GPU machines nothing changes.

A config whose ``_base_`` comes from another package (``mmpretrain::_base_/
datasets/imagenet_bs512_mae.py``, as our flagship's does) gets ``_scope_`` written
into every dict with a ``type``, ``collate_fn`` included. ``Runner.build_dataloader``
pops ``type`` but passes ``_scope_`` on to the collate function, and the first
batch dies with ``default_collate() got an unexpected keyword argument
'_scope_'``. The collate function is looked up in the scope it names instead.
"""
import contextlib
import copy
import functools
import pickle
from typing import List

import numpy as np
import torch

_APPLIED = False


def _numpy_globals() -> List[object]:
    """Numpy callables/types that appear when numpy arrays and scalars are pickled.

    Their module path differs between numpy 1 (``numpy.core``) and numpy 2
    (``numpy._core``); the pickles name whatever the writer used, so both spellings
    are registered where they exist.
    """
    found = [np.ndarray, np.dtype]
    for mod_name in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        try:
            mod = __import__(mod_name, fromlist=['_reconstruct', 'scalar'])
        except ImportError:  # pragma: no cover - depends on the numpy major
            continue
        for name in ('_reconstruct', 'scalar'):
            fn = getattr(mod, name, None)
            if fn is not None:
                # A module alias must be registered under the path the pickle uses.
                found.append((fn, f'{mod_name}.{name}'))
    # numpy >= 1.25 pickles dtypes by their concrete class, e.g. numpy.dtypes.Float64DType
    dtypes_mod = getattr(np, 'dtypes', None)
    if dtypes_mod is not None:
        for name in dir(dtypes_mod):
            obj = getattr(dtypes_mod, name)
            if isinstance(obj, type) and issubclass(obj, np.dtype):
                found.append(obj)
    return found


_HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')


def _history_buffer_getattr(obj: object, name: str) -> object:
    """``getattr`` for unpickling, limited to ``HistoryBuffer``'s statistics."""
    from mmengine.logging import HistoryBuffer
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'refused getattr({obj!r}, {name!r}) while loading a checkpoint: only '
        f'HistoryBuffer.{{{",".join(_HISTORY_BUFFER_METHODS)}}} are allowed')


def mmengine_safe_globals() -> List[object]:
    """Everything an mmengine 0.10 checkpoint needs beyond tensors and containers."""
    from mmengine.logging import HistoryBuffer
    return [HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr')
            ] + _numpy_globals()


@contextlib.contextmanager
def _no_cuda_set_device():
    original = torch.cuda.set_device
    torch.cuda.set_device = lambda device: None
    try:
        yield
    finally:
        torch.cuda.set_device = original


def _cpu_safe_init(fn):

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if torch.cuda.is_available():
            return fn(*args, **kwargs)
        with _no_cuda_set_device():
            return fn(*args, **kwargs)

    wrapper._mmhybrid_cpu_safe = True
    return wrapper


def _patch_cpu_distributed() -> None:
    import mmengine.dist.utils as dist_utils
    from mmengine.model import MMDistributedDataParallel
    for name in ('_init_dist_pytorch', '_init_dist_slurm'):
        fn = getattr(dist_utils, name, None)
        if fn is not None and not getattr(fn, '_mmhybrid_cpu_safe', False):
            setattr(dist_utils, name, _cpu_safe_init(fn))
    init = MMDistributedDataParallel.__init__
    if getattr(init, '_mmhybrid_cpu_safe', False):
        return

    @functools.wraps(init)
    def __init__(self, module, *args, **kwargs):
        params = list(module.parameters())
        if params and params[0].device.type == 'cpu':
            kwargs.pop('device_ids', None)  # DDP rejects device ids for CPU modules
            kwargs.pop('output_device', None)
        init(self, module, *args, **kwargs)

    __init__._mmhybrid_cpu_safe = True
    MMDistributedDataParallel.__init__ = __init__


def _resolve_collate(loader_cfg):
    """``loader_cfg`` with a scoped ``collate_fn`` dict resolved to its function."""
    collate = loader_cfg.get('collate_fn') if hasattr(loader_cfg, 'get') else None
    if not isinstance(collate, dict) or '_scope_' not in collate:
        return loader_cfg
    from mmengine.registry import FUNCTIONS
    collate = dict(collate)
    scope = collate.pop('_scope_')
    fn = collate.get('type')
    if isinstance(fn, str):
        with FUNCTIONS.switch_scope_and_registry(scope) as registry:
            found = registry.get(fn)
        if found is None:
            raise KeyError(f'collate_fn type {fn!r} is not registered in scope '
                           f'{scope!r} (or its parents) of the FUNCTIONS registry')
        collate['type'] = found
    loader_cfg = copy.copy(loader_cfg)
    loader_cfg['collate_fn'] = collate
    return loader_cfg


def _patch_scoped_collate() -> None:
    from mmengine.runner import Runner
    build = Runner.__dict__['build_dataloader'].__func__
    if getattr(build, '_mmhybrid_scoped_collate', False):
        return

    @functools.wraps(build)
    def build_dataloader(dataloader, *args, **kwargs):
        return build(_resolve_collate(dataloader), *args, **kwargs)

    build_dataloader._mmhybrid_scoped_collate = True
    Runner.build_dataloader = staticmethod(build_dataloader)


def apply() -> None:
    """Register the allow-list and the stack fixes (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:  # torch < 2.4 has no weights_only default to fight
        add(mmengine_safe_globals())
    _patch_cpu_distributed()
    _patch_scoped_collate()
    _APPLIED = True
