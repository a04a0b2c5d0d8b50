"""mmhybrid's checkpoint I/O rules for mmengine: safe reads, atomic finite
writes, an auto-resume that skips unreadable files.

Nothing here changes mmengine on import. Two mechanisms deliver the rules:

* :class:`mmhybrid.engine.HybridRunner` (``runner_type``, the default of
  ``tools/train.py`` / ``tools/test.py``) uses them from its own methods:
  ``load_checkpoint`` / ``resume`` read through
  :func:`mmhybrid.utils.checkpoint.load_checkpoint_file`, ``save_checkpoint``
  refuses non-finite weights and writes through :class:`AtomicLocalBackend`
  (a registered mmengine file backend), ``load_or_resume`` picks the checkpoint
  with :func:`find_latest_checkpoint`.
* For other runners (``FlexibleRunner``) and mmengine's free functions
  (``init_cfg=dict(type='Pretrained')``, ``mmengine.runner.load_checkpoint``),
  :func:`mmhybrid.enable_stack_fixes`, called by the entry points, registers
  :data:`SAFE_SCHEMES` with ``CheckpointLoader`` and routes
  ``mmengine.runner.checkpoint.save_checkpoint`` / ``find_latest_checkpoint`` /
  ``CheckpointHook``'s ``last_checkpoint`` through the functions below.

The rules:

* **Reading.** Every scheme mmengine knows (local paths, ``http(s)://``,
  ``torchvision://``, ``open-mmlab://``, ``mmcls://``, ``s3://``/``petrel://``,
  ``pavi://``) ends in :func:`mmhybrid.utils.checkpoint.load_checkpoint_file`:
  a weights-only unpickler with the allow-list of
  :mod:`mmhybrid.utils.allow_list`, or safetensors. A file whose unpickling
  would run code is refused with a :class:`CheckpointError` that names it and
  the refused global.
  ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot switch this off.
* **Writing.** A local checkpoint is written to a temporary file in the same
  folder, fsynced and renamed into place. A checkpoint whose weights hold NaN
  or inf is refused. ``last_checkpoint`` is written the same way, so it only
  ever names a complete checkpoint.
* **Auto resume.** :func:`find_latest_checkpoint` checks the file
  ``last_checkpoint`` names and, when it is missing, truncated or corrupt,
  falls back to the newest readable ``iter_*.pth`` / ``epoch_*.pth`` and logs a
  warning that names both files.

What a file itself must be (readable, complete, finite) is checked by the pure
functions of :mod:`mmhybrid.utils.checkpoint` (:func:`probe_checkpoint`,
:func:`check_finite_weights`); this module applies them to mmengine.
"""
import builtins
import glob
import io
import logging
import os
import os.path as osp
import re
import tempfile
from typing import Any, Optional, Tuple

import torch
from mmengine.fileio import LocalBackend, register_backend

from ..utils.checkpoint import (CheckpointError, check_finite_weights,
                                load_checkpoint_file, probe_checkpoint,
                                save_checkpoint_atomic, write_atomic)

# mmengine's own save_checkpoint (for remote targets), recorded by the
# 'atomic_saves' stack fix before it replaces the module attribute
ORIGINAL_SAVE = [None]

ATOMIC_BACKEND = 'mmhybrid_atomic_local'

__all__ = [
    'SAFE_SCHEMES', 'AtomicLocalBackend', 'ATOMIC_BACKEND',
    'safe_save_checkpoint', 'find_latest_checkpoint', 'load_any'
]


def _log(msg: str, level: int = logging.INFO) -> None:
    from mmengine.logging import print_log
    print_log(msg, logger='current', level=level)


# --------------------------------------------------------------------- reading
def _map(map_location):
    # None would restore tensors onto the device they were saved from
    return 'cpu' if map_location is None else map_location


def safe_load_local(filename: str, map_location=None) -> Any:
    """``CheckpointLoader`` scheme for local paths."""
    return load_checkpoint_file(osp.expanduser(filename), _map(map_location))


def safe_load_http(filename: str, map_location=None) -> Any:
    """``CheckpointLoader`` scheme for URLs: rank 0 downloads first (into
    torch's hub cache), then the other ranks read the cached file."""
    from mmengine.dist import get_dist_info
    rank, world_size = get_dist_info()
    checkpoint = None
    if rank == 0:
        checkpoint = load_checkpoint_file(filename, _map(map_location))
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            checkpoint = load_checkpoint_file(filename, _map(map_location))
    return checkpoint


def _load_bytes(data: bytes, name: str, map_location) -> Any:
    suffix = '.safetensors' if name.endswith('.safetensors') else '.pth'
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, osp.basename(name) or 'checkpoint' + suffix)
        with open(path, 'wb') as f:
            f.write(data)
        try:
            return load_checkpoint_file(path, _map(map_location))
        except CheckpointError as e:
            raise CheckpointError(str(e).replace(path, name)) from None


def safe_load_torchvision(filename: str, map_location=None) -> Any:
    from mmengine.runner.checkpoint import get_torchvision_models
    name = filename.split('://', 1)[1]
    return safe_load_http(get_torchvision_models()[name], map_location)


def safe_load_openmmlab(filename: str, map_location=None) -> Any:
    from mmengine.runner.checkpoint import (_get_mmengine_home,
                                            get_deprecated_model_names,
                                            get_external_models)
    name = filename.split('://', 1)[1]
    name = get_deprecated_model_names().get(name, name)
    url = get_external_models()[name]
    if url.startswith(('http://', 'https://')):
        return safe_load_http(url, map_location)
    return safe_load_local(osp.join(_get_mmengine_home(), url), map_location)


def safe_load_mmcls(filename: str, map_location=None) -> Any:
    from mmengine.runner.checkpoint import (_process_mmcls_checkpoint,
                                            get_mmcls_models)
    url = get_mmcls_models()[filename[len('mmcls://'):]]
    return _process_mmcls_checkpoint(safe_load_http(url, map_location))


def safe_load_ceph(filename: str, map_location=None, backend='petrel') -> Any:
    from mmengine.fileio import get_file_backend
    file_backend = get_file_backend(
        filename, backend_args={'backend': backend})
    return _load_bytes(file_backend.get(filename), filename, map_location)


def safe_load_pavi(filename: str, map_location=None) -> Any:
    from pavi import modelcloud  # noqa: only where pavi is installed
    model = modelcloud.get(filename[len('pavi://'):])
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, model.name)
        model.download(path)
        return load_checkpoint_file(path, _map(map_location))


# the CheckpointLoader schemes the 'safe_checkpoint_loaders' stack fix
# registers: (prefixes, loader), as CheckpointLoader.register_scheme takes them
SAFE_SCHEMES = [
    ('', safe_load_local),
    (('http://', 'https://'), safe_load_http),
    (('modelzoo://', 'torchvision://'), safe_load_torchvision),
    (('open-mmlab://', 'openmmlab://'), safe_load_openmmlab),
    ('mmcls://', safe_load_mmcls),
    ([r'(\S+\:)?s3://', r'(\S+\:)?petrel://'], safe_load_ceph),
    ('pavi://', safe_load_pavi),
]


def load_any(filename: str, map_location=None) -> Any:
    """Read ``filename`` (any scheme mmengine's ``CheckpointLoader`` knows)
    with the loader :data:`SAFE_SCHEMES` gives it, by mmengine's rule (the
    longest matching prefix wins), without touching ``CheckpointLoader``."""
    ranked = sorted(((p, fn) for ps, fn in SAFE_SCHEMES
                     for p in ([ps] if isinstance(ps, str) else ps)),
                    key=lambda t: t[0],
                    reverse=True)
    for prefix, loader in ranked:
        if re.match(prefix, filename) is not None:
            return loader(filename, map_location)
    return safe_load_local(filename, map_location)  # '' matches anything


# --------------------------------------------------------------------- writing
def _is_local(filename: str, file_client_args, backend_args) -> bool:
    if file_client_args is not None or filename.startswith('pavi://'):
        return False
    from mmengine.fileio import get_file_backend
    return isinstance(
        get_file_backend(filename, backend_args=backend_args), LocalBackend)


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose ``put`` (what mmengine's
    ``save_checkpoint`` writes a checkpoint with) writes a temporary file
    beside the target, fsyncs it and renames it into place.

    Registered as ``'mmhybrid_atomic_local'`` with no URI prefix, so it is used
    only where ``backend_args=dict(backend='mmhybrid_atomic_local')`` names it
    (:class:`~mmhybrid.engine.HybridRunner` does for local work dirs).
    """

    def put(self, obj: bytes, filepath) -> None:
        write_atomic(os.fspath(filepath), lambda f: f.write(obj), mode='wb')


register_backend(ATOMIC_BACKEND, AtomicLocalBackend)


def safe_save_checkpoint(checkpoint: dict,
                         filename: str,
                         file_client_args: Optional[dict] = None,
                         backend_args: Optional[dict] = None) -> None:
    """Drop-in for ``mmengine.runner.checkpoint.save_checkpoint`` (installed by
    the ``atomic_saves`` stack fix).

    Raises:
        CheckpointError: If the weights hold NaN/inf (nothing is written).
    """
    check_finite_weights(
        checkpoint.get('state_dict') if isinstance(checkpoint, dict) else None,
        filename)
    if _is_local(filename, file_client_args, backend_args):
        save_checkpoint_atomic(checkpoint, filename)
    else:
        save = ORIGINAL_SAVE[0]
        if save is None:
            from mmengine.runner.checkpoint import save_checkpoint as save
        save(checkpoint, filename, file_client_args, backend_args)


class _AtomicTextFile(io.StringIO):
    """``open(path, 'w')`` replacement that renames into place on close."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path

    def close(self) -> None:
        if not self.closed:
            text = self.getvalue()
            write_atomic(self._path, lambda f: f.write(text), mode='w')
        super().close()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:  # do not publish a half-written pointer
            io.StringIO.close(self)
            return False
        self.close()
        return False


def _checkpoint_hook_open(file, mode='r', *args, **kwargs):
    """``open`` as seen by mmengine's ``checkpoint_hook`` module: writing
    ``last_checkpoint`` becomes atomic, everything else is the builtin."""
    if (isinstance(file, (str, os.PathLike))
            and osp.basename(os.fspath(file)) == 'last_checkpoint'
            and mode == 'w' and not args and not kwargs):
        return _AtomicTextFile(os.fspath(file))
    return builtins.open(file, mode, *args, **kwargs)


# ----------------------------------------------------------------- auto resume
_STEP = re.compile(r'^(iter|epoch)_(\d+)\.pth$')


def _step_of(path: str) -> Tuple[str, int]:
    m = _STEP.match(osp.basename(path))
    return (m.group(1), int(m.group(2))) if m else ('', -1)


def find_latest_checkpoint(path: str) -> Optional[str]:
    """The newest *readable* checkpoint of a work dir (``--resume`` auto).

    Order of preference: the file named by ``<path>/last_checkpoint``, then the
    ``iter_*.pth`` (or ``epoch_*.pth``, the kind ``last_checkpoint`` names)
    next to it and in ``path``, newest step first. Unusable files are skipped
    with a warning naming the skipped and the chosen file.

    Returns:
        str | None: None when the work dir has no checkpoint at all (a fresh
        start, as in mmengine).

    Raises:
        CheckpointError: Checkpoints exist but none of them is readable.
    """
    pointer = osp.join(path, 'last_checkpoint')
    named = None
    if osp.isfile(pointer):
        with builtins.open(pointer) as f:
            named = f.read().strip() or None
        if named is None:
            _log(f'{pointer} is empty; looking for checkpoints in {path}',
                 logging.WARNING)
    folders = [path] + ([osp.dirname(named)] if named else [])
    kind = _step_of(named)[0] if named else ''
    found = set()
    for folder in folders:
        for f in glob.glob(osp.join(folder, '*.pth')):
            k, step = _step_of(f)
            if step >= 0 and (not kind or k == kind):
                found.add(osp.abspath(f))
    ranked = sorted(
        found, key=lambda f: (_step_of(f)[1], osp.getmtime(f)), reverse=True)
    candidates = ([named] if named else []) + [
        f for f in ranked if not named or f != osp.abspath(named)
    ]
    if named:
        # a complete checkpoint newer than the pointer (killed between the
        # rename of the checkpoint and that of last_checkpoint) goes first
        n_step = _step_of(named)[1]
        newer = [f for f in candidates[1:] if _step_of(f)[1] > n_step]
        candidates = newer + [c for c in candidates if c not in newer]
    if not candidates:
        _log('Did not find last_checkpoint to be resumed.')
        return None
    rejected = []
    for cand in candidates:
        reason = probe_checkpoint(cand)
        if reason is None:
            if rejected:
                skipped = '; '.join(f'{f} ({r})' for f, r in rejected)
                _log(
                    f'--resume auto: skipped unusable checkpoint(s) {skipped};'
                    f' falling back to {cand}', logging.WARNING)
            return cand
        rejected.append((cand, reason))
    raise CheckpointError(
        f'--resume auto found checkpoints in {path} but none is readable: ' +
        '; '.join(f'{f} ({r})' for f, r in rejected))
