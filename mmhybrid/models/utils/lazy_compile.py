"""Modules that ``torch.compile`` one of their own methods on first use."""
import functools
from typing import Callable

import torch


class LazyCompileMixin:
    """Compile a method of this module once, on first use.

    The compiled function is the class's *unbound* method, called with the
    instance: a compiled bound method would keep running the original instance
    in a deep copy (an EMA model, say). A compiled function does not pickle, so
    it is dropped from the pickled state and rebuilt on the next call.
    """
    _compiled = None

    def compiled_method(self, name: str, **kwargs) -> Callable:
        """``self.<name>`` through :func:`torch.compile` with ``kwargs``."""
        if self._compiled is None:
            self._compiled = torch.compile(getattr(type(self), name), **kwargs)
        return functools.partial(self._compiled, self)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state['_compiled'] = None
        return state
