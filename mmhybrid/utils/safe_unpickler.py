"""Weights-only checkpoint reading for torch 2.1-2.5.

torch's own weights-only unpickler takes mmhybrid's allow-list
(:func:`mmhybrid.utils.allow_list.safe_globals`) only from torch 2.6 on.
Before that, a runner checkpoint (its ``message_hub`` holds a ``HistoryBuffer``
and numpy arrays) is refused, so ``--resume`` fails. This module is a
``pickle_module`` for :func:`torch.load` that is as strict as torch's
weights-only unpickler and admits the same allow-list:

* a global resolves only if its ``'module.name'`` is in torch's own defaults
  (tensor rebuild functions, storages, dtypes, ``OrderedDict``, ...) or in
  :func:`~mmhybrid.utils.allow_list.safe_globals`; nothing is imported by name;
* ``REDUCE`` calls and ``NEWOBJ`` constructions only allow-listed objects;
* ``BUILD`` sets state only on tensors, ``OrderedDict`` and allow-listed types;
* items go only into lists, dicts and sets; opcodes that reach globals another
  way (``INST``, ``OBJ``, ``EXT*``) are refused.

It extends CPython's pure-Python unpickler, whose opcode table can be
restricted; a checkpoint's pickle holds only the structure (tensor data lives
in separate records), so its speed does not matter.
"""
import functools
import os
import pickle
import sys
from collections import OrderedDict
from typing import IO, Any, Callable, Dict, Union

import _compat_pickle
import torch

from .allow_list import safe_globals


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global that is not on the allow-list."""

    def __init__(self, path: str) -> None:
        super().__init__(f"refuses global '{path}': not on the allow-list")
        self.path = path


@functools.lru_cache(maxsize=1)
def allowed_globals() -> Dict[str, object]:
    """torch's own weights-only defaults plus mmhybrid's allow-list.

    Returns:
        dict: ``'module.name'`` -> object, for every global a pickle may name.
    """
    from torch._weights_only_unpickler import _get_allowed_globals
    found = dict(
        _get_allowed_globals())  # this torch's tensor rebuild functions
    found.update(safe_globals())
    return found


@functools.lru_cache(maxsize=1)
def _allowed_ids() -> frozenset:
    # identity, not equality: StorageType and dtypes compare loosely
    return frozenset(id(obj) for obj in allowed_globals().values())


def _check_allowed(obj: object, what: str) -> None:
    if id(obj) not in _allowed_ids():
        raise pickle.UnpicklingError(
            f'refuses to {what} {obj!r}: not on the allow-list')


_Base = pickle._Unpickler  # the pure-Python one: its opcode table is a dict


class Unpickler(_Base):
    """``pickle.Unpickler`` restricted to :func:`allowed_globals`.

    See the module docstring.

    Same arguments as :class:`pickle.Unpickler`.
    """

    dispatch = dict(_Base.dispatch)

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3 and self.fix_imports:
            # protocol 2 (torch.save's) writes Python 2 names:
            # __builtin__.getattr
            module, name = _compat_pickle.NAME_MAPPING.get(
                (module, name),
                (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
        path = f'{module}.{name}'
        found = allowed_globals().get(path)
        if found is None:
            raise RefusedGlobal(path)
        return found

    def _top_must_be(self, kinds: tuple, opcode: str) -> None:
        if not isinstance(self.stack[-1], kinds):
            raise pickle.UnpicklingError(
                f'refuses {opcode} into a {type(self.stack[-1]).__name__}')

    def load_reduce(self) -> None:
        _check_allowed(self.stack[-2], 'call')
        _Base.load_reduce(self)

    def load_newobj(self) -> None:
        _check_allowed(self.stack[-2], 'construct')
        _Base.load_newobj(self)

    def load_newobj_ex(self) -> None:
        _check_allowed(self.stack[-3], 'construct')
        _Base.load_newobj_ex(self)

    def load_build(self) -> None:
        kind = type(self.stack[-2])
        if kind not in (torch.Tensor, torch.nn.Parameter, OrderedDict):
            _check_allowed(kind, 'set the state of')
        _Base.load_build(self)

    def load_append(self) -> None:
        item = self.stack.pop()
        self._top_must_be(list, 'APPEND')
        self.stack[-1].append(item)

    def load_appends(self) -> None:
        items = self.pop_mark()
        self._top_must_be(list, 'APPENDS')
        self.stack[-1].extend(items)

    def load_setitem(self) -> None:
        value, key = self.stack.pop(), self.stack.pop()
        self._top_must_be(dict, 'SETITEM')
        self.stack[-1][key] = value

    def load_setitems(self) -> None:
        items = self.pop_mark()
        self._top_must_be(dict, 'SETITEMS')
        for i in range(0, len(items), 2):
            self.stack[-1][items[i]] = items[i + 1]

    def load_additems(self) -> None:
        items = self.pop_mark()
        self._top_must_be(set, 'ADDITEMS')
        self.stack[-1].update(items)

    def _refuse_opcode(self) -> None:
        raise pickle.UnpicklingError(
            'refuses INST/OBJ/EXT opcodes: they reach globals outside '
            'find_class or build arbitrary objects')


def _restrict(table: Dict[int, Callable]) -> None:
    ops = {
        pickle.REDUCE: Unpickler.load_reduce,
        pickle.NEWOBJ: Unpickler.load_newobj,
        pickle.NEWOBJ_EX: Unpickler.load_newobj_ex,
        pickle.BUILD: Unpickler.load_build,
        pickle.APPEND: Unpickler.load_append,
        pickle.APPENDS: Unpickler.load_appends,
        pickle.SETITEM: Unpickler.load_setitem,
        pickle.SETITEMS: Unpickler.load_setitems,
        pickle.ADDITEMS: Unpickler.load_additems,
    }
    for op in (pickle.INST, pickle.OBJ, pickle.EXT1, pickle.EXT2, pickle.EXT4):
        ops[op] = Unpickler._refuse_opcode
    for op, fn in ops.items():
        table[op[0]] = fn


_restrict(Unpickler.dispatch)


def load(file: IO[bytes], **kwargs) -> Any:
    """``pickle.load`` through :class:`Unpickler` (torch's legacy format reads
    its headers with ``pickle_module.load``)."""
    return Unpickler(file, **kwargs).load()


def _env_forces_weights_only() -> bool:
    flag = os.getenv('TORCH_FORCE_WEIGHTS_ONLY_LOAD', '0').lower()
    return flag in ('1', 'y', 'yes', 'true')


def load_restricted(f: Union[str, os.PathLike, IO[bytes]],
                    map_location: Union[str, torch.device] = 'cpu') -> Any:
    """:func:`torch.load` with this module as its unpickler.

    Args:
        f (str | PathLike | file): A checkpoint in torch's zip or legacy
            format.
        map_location (str | torch.device): Where tensors are mapped. Defaults
            to ``'cpu'``.

    Raises:
        pickle.UnpicklingError: A global, call or state outside the
            allow-list (:class:`RefusedGlobal` names the global). Nothing of
            the pickle ran.
    """
    if _env_forces_weights_only():
        # torch then refuses any pickle_module; its own unpickler is stricter
        return torch.load(f, map_location=map_location, weights_only=True)
    # weights_only=False only lets torch take a pickle_module: this module *is*
    # the weights-only unpickler
    return torch.load(
        f,
        map_location=map_location,
        pickle_module=sys.modules[__name__],
        weights_only=False)
