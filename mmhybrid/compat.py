"""Stack fixes applied once, when :mod:`mmhybrid` is imported.

mmengine 0.10.7 pickles a few non-tensor objects into its checkpoints (the message
hub's ``HistoryBuffer`` and the numpy arrays/scalars inside it). mmhybrid reads
every checkpoint with torch's weights-only unpickler, which refuses them, so
``--resume`` would fail. :func:`safe_globals` is the one allow-list of exactly
those objects. On torch >= 2.6 it is registered with
:func:`torch.serialization.add_safe_globals`; older torch (2.1-2.5) lacks that
function or its ``(object, 'module.name')`` entries, and
:mod:`mmhybrid.utils.safe_unpickler` admits the same list there. Safe loading
stays on and any other global still raises.

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
import codecs
import contextlib
import copy
import functools
import importlib
import pickle
from typing import Dict

import numpy as np
import torch

_APPLIED = False


def _qualified(obj: object) -> str:
    return f'{obj.__module__}.{obj.__qualname__}'


def _numpy_globals() -> Dict[str, object]:
    """Numpy callables/types that appear when numpy arrays and scalars are pickled.

    Their module path differs between numpy 1 (``numpy.core``) and numpy 2
    (``numpy._core``); a pickle names whatever its writer used, so both spellings
    map to the installed numpy's functions (imported from ``numpy._core`` when it
    exists: numpy 2 warns on every ``numpy.core`` access).
    """
    found = {'numpy.ndarray': np.ndarray, 'numpy.dtype': np.dtype}
    multiarray = None
    for mod_name in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        try:
            multiarray = importlib.import_module(mod_name)
            break
        except ImportError:  # pragma: no cover - depends on the numpy major
            continue
    for name in ('_reconstruct', 'scalar'):
        for spelling in ('numpy._core.multiarray', 'numpy.core.multiarray'):
            found[f'{spelling}.{name}'] = getattr(multiarray, name)
    # numpy >= 1.25 builds dtypes as their concrete class, e.g.
    # numpy.dtypes.Float64DType: the unpickler's BUILD step checks that class
    dtypes_mod = getattr(np, 'dtypes', None)
    if dtypes_mod is not None:
        for name in dir(dtypes_mod):
            obj = getattr(dtypes_mod, name)
            if isinstance(obj, type) and issubclass(obj, np.dtype):
                found[_qualified(obj)] = obj
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


def safe_globals() -> Dict[str, object]:
    """The one allow-list: every global an mmengine 0.10 checkpoint needs beyond
    what torch's weights-only unpickler admits itself (tensors, storages,
    dtypes, ``OrderedDict``, plain containers).

    Returns:
        dict: Path as written in the pickle (``'module.name'``) -> the object it
        resolves to. Registered with ``add_safe_globals`` on torch >= 2.6 and
        used by :mod:`mmhybrid.utils.safe_unpickler` on older torch.
    """
    from mmengine.logging import HistoryBuffer
    found = {
        _qualified(HistoryBuffer): HistoryBuffer,
        'builtins.getattr': _history_buffer_getattr,
        # bytes under pickle protocol 2 (torch.save's), e.g. the raw data of the
        # message hub's numpy arrays; torch >= 2.4 admits it by default
        '_codecs.encode': codecs.encode,
    }
    found.update(_numpy_globals())
    return found


def torch_has_safe_globals() -> bool:
    """Whether torch's own weights-only unpickler can take :func:`safe_globals`.

    ``add_safe_globals`` exists from torch 2.4, but its ``(object, 'module.name')``
    entries, needed for ``builtins.getattr`` and the numpy aliases, from 2.6.
    """
    return (hasattr(torch.serialization, 'add_safe_globals')
            and torch.__version__ >= (2, 6))


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
    if torch_has_safe_globals():  # else mmhybrid.utils.safe_unpickler reads
        torch.serialization.add_safe_globals(
            [(obj, path) for path, obj in safe_globals().items()])
    _patch_cpu_distributed()
    _patch_scoped_collate()
    _APPLIED = True
