"""Stack fixes applied once, when :mod:`mmhybrid` is imported.

mmengine 0.10.7 pickles a few non-tensor objects into its checkpoints (the message
hub's ``HistoryBuffer`` and the numpy arrays/scalars inside it). torch >= 2.6 loads
with ``weights_only=True`` by default and refuses them, so ``--resume`` fails. We
allow-list exactly those types with :func:`torch.serialization.add_safe_globals`;
safe loading stays on and any other global still raises.
"""
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


def mmengine_safe_globals() -> List[object]:
    """Everything an mmengine 0.10 checkpoint needs beyond tensors and containers."""
    from mmengine.logging import HistoryBuffer
    return [HistoryBuffer] + _numpy_globals()


def apply() -> None:
    """Register the allow-list (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:  # torch < 2.4 has no weights_only default to fight
        _APPLIED = True
        return
    add(mmengine_safe_globals())
    _APPLIED = True
