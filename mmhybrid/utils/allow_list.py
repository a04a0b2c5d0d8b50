"""The torch allow-list for mmengine's checkpoints.

mmengine 0.10.7 pickles a few non-tensor objects into its checkpoints (the
message hub's ``HistoryBuffer`` and the numpy arrays/scalars inside it).
mmhybrid reads every checkpoint with torch's weights-only unpickler, which
refuses them, so ``--resume`` would fail. :func:`safe_globals` is the one
allow-list of exactly those objects. On torch >= 2.6
:func:`register_safe_globals` adds it with
:func:`torch.serialization.add_safe_globals` (it only admits more safe types,
so it stays global; ``import mmhybrid`` calls it); older torch (2.1-2.5) lacks
that function or its ``(object, 'module.name')`` entries, and
:mod:`mmhybrid.utils.safe_unpickler` admits the same list there. A
``HistoryBuffer`` pickles its statistics methods as ``getattr(HistoryBuffer,
'mean')``; the pickle's ``builtins.getattr`` resolves to
:func:`_history_buffer_getattr`, which answers only those four lookups.

The other checkpoint rules (reading, probing, atomic writing) are in
:mod:`mmhybrid.utils.checkpoint`.
"""
import codecs
import importlib
import pickle
from typing import Dict

import numpy as np
import torch

_SAFE_GLOBALS_REGISTERED = False


def _qualified(obj: object) -> str:
    return f'{obj.__module__}.{obj.__qualname__}'


def _numpy_globals() -> Dict[str, object]:
    """Numpy callables/types that pickled numpy arrays and scalars refer to.

    Their module path differs between numpy 1 (``numpy.core``) and numpy 2
    (``numpy._core``); a pickle names whatever its writer used, so both
    spellings map to the installed numpy's functions (imported from
    ``numpy._core`` when it exists: numpy 2 warns on every ``numpy.core``
    access).
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
    """``getattr`` for unpickling, only for ``HistoryBuffer``'s statistics."""
    from mmengine.logging import HistoryBuffer
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'refused getattr({obj!r}, {name!r}) while loading a checkpoint: only '
        f'HistoryBuffer.{{{",".join(_HISTORY_BUFFER_METHODS)}}} are allowed')


def safe_globals() -> Dict[str, object]:
    """The one allow-list: every global an mmengine 0.10 checkpoint needs
    beyond what torch's weights-only unpickler admits itself (tensors,
    storages, dtypes, ``OrderedDict``, plain containers).

    Returns:
        dict: Path as written in the pickle (``'module.name'``) -> the
        object it resolves to. Registered with ``add_safe_globals`` on torch
        >= 2.6 and used by :mod:`mmhybrid.utils.safe_unpickler` on older torch.
    """
    from mmengine.logging import HistoryBuffer
    found = {
        _qualified(HistoryBuffer): HistoryBuffer,
        'builtins.getattr': _history_buffer_getattr,
        # bytes under pickle protocol 2 (torch.save's), e.g. the raw data of
        # the message hub's numpy arrays; torch >= 2.4 admits it by default
        '_codecs.encode': codecs.encode,
    }
    found.update(_numpy_globals())
    return found


def torch_has_safe_globals() -> bool:
    """Whether torch's weights-only unpickler can take :func:`safe_globals`.

    ``add_safe_globals`` exists from torch 2.4, but its ``(object,
    'module.name')`` entries, needed for ``builtins.getattr`` and the numpy
    aliases, from 2.6.
    """
    return (hasattr(torch.serialization, 'add_safe_globals')
            and torch.__version__ >= (2, 6))


def register_safe_globals() -> None:
    """Add :func:`safe_globals` to torch's weights-only unpickler.

    For torch >= 2.6; idempotent.

    This is the only thing importing mmhybrid changes outside
    mmhybrid: it admits more safe types, it never loosens a check.
    """
    global _SAFE_GLOBALS_REGISTERED
    if _SAFE_GLOBALS_REGISTERED:
        return
    if torch_has_safe_globals():  # else mmhybrid.utils.safe_unpickler reads
        torch.serialization.add_safe_globals([
            (obj, path) for path, obj in safe_globals().items()
        ])
    _SAFE_GLOBALS_REGISTERED = True
