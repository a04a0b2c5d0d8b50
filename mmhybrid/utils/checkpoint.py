"""The one place where mmhybrid reads and writes checkpoint files.

Reading never runs code: pickles are opened with torch's weights-only unpickler
plus the allow-list of :mod:`mmhybrid.utils.allow_list` (torch >= 2.6), or with
:mod:`mmhybrid.utils.safe_unpickler`, as strict and with the same allow-list
(torch 2.1-2.5); ``.safetensors`` with safetensors. Writing is
atomic: a file is written next to its destination and renamed into place, so a
crash never leaves a half-written checkpoint under the real name. A file is
checked without unpickling it by :func:`probe_checkpoint`; weights with NaN or
inf are refused by :func:`check_finite_weights`.
"""
import json
import os
import os.path as osp
import pickle
import re
import struct
import tempfile
import zipfile
from typing import IO, Any, Callable, List, Optional, Union
from urllib.parse import urlparse

import torch

from . import allow_list
from .safe_unpickler import load_restricted


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, unsafe or has the wrong content."""


def _reason(err: BaseException, limit: int = 240) -> str:
    """torch's error without its advice to turn safe loading off."""
    skip = ('weights_only', 'documentation', 'file an issue',
            'can still be loaded', 'trust the source', 'arbitrary code')
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    kept = [ln for ln in lines if not any(s in ln.lower() for s in skip)]
    text = ' '.join(kept) or type(err).__name__
    return text if len(text) <= limit else text[:limit] + '...'


#: the URL schemes mmhybrid's own checkpoint reader downloads
URL_SCHEMES = ('http', 'https')
# ``scheme://`` at the start, optionally after a petrel cluster name
# (``cluster1:s3://bucket/key``, as mmengine's petrel backend accepts)
_SCHEME = re.compile(r'^(?:[A-Za-z][\w.+-]*:)?([A-Za-z][\w.+-]*)://')


def url_scheme(path: str) -> Optional[str]:
    """The scheme of a ``scheme://...`` location, lower case (``'s3'`` for
    ``'s3://bucket/x.pth'``), or None for a local path."""
    found = _SCHEME.match(path) if isinstance(path, str) else None
    return found.group(1).lower() if found else None


def is_url(path: str) -> bool:
    """Whether ``path`` is an ``http(s)://`` URL, the only remote location
    :func:`load_checkpoint_file` (hence teachers, converters and analysis)
    reads."""
    return url_scheme(path) in URL_SCHEMES


def unsupported_location(path: str) -> Optional[str]:
    """Why :func:`load_checkpoint_file` cannot read ``path``'s location, or
    None (a local path or an ``http(s)://`` URL).

    One rule for every reader of teacher files (``FrozenTeacher``, the
    preflight check, the converters, the analysis tools): ``s3://``,
    ``petrel://`` and other schemes are refused, in one line, before anything
    is built. (A downstream backbone's ``Pretrained`` checkpoint is read by
    mmengine's ``CheckpointLoader`` instead, whose file backends do read them.)
    """
    scheme = url_scheme(path)
    if scheme is None or scheme in URL_SCHEMES:
        return None
    return (f'{scheme}:// is not supported here: checkpoints are read from '
            'local paths and http(s):// URLs only; copy the file to local '
            'disk first')


# a global outside the allow-list, as this package's unpickler (torch < 2.6)
# and torch's own weights-only unpickler (2.4+, which drops a 'builtins.'
# prefix; 2.1-2.3 with TORCH_FORCE_WEIGHTS_ONLY_LOAD=1) say it
_UNLISTED_GLOBAL = re.compile(
    r"refuses global '([^']+)'"
    r'|GLOBAL (\S+) (?:was not an allowed|whose module)'
    r'|Unsupported class (\S+)')
# any other refusal of either unpickler (a call, a construction, a state)
_REFUSED = re.compile(
    r'(refuses|refused getattr|unsupported global|unrecognized '
    r'function|is blocked|can only (?:build|create))[^\n]*', re.IGNORECASE)


def _refusal(err: BaseException) -> Optional[str]:
    """Why a safe unpickler refused a file; None if the file is unreadable."""
    msg = str(err)
    found = _UNLISTED_GLOBAL.search(msg)
    if found:
        name = next(g for g in found.groups() if g)
        if '.' not in name:
            name = 'builtins.' + name
        return (f"global '{name}' is not on the allow-list "
                f'(mmhybrid.utils.allow_list.safe_globals)')
    found = _REFUSED.search(msg)
    if found:
        return ('it holds objects outside the safe allow-list '
                f'({found.group(0)})')
    return None


def _read_pickled(filename: str, map_location: Union[str,
                                                     torch.device]) -> Any:
    """Unpickle ``filename`` safely, on any supported torch.

    torch's weights-only unpickler where it takes mmhybrid's allow-list (torch
    2.6 and later), an equally strict one of mmhybrid's on older torch.
    """
    if allow_list.torch_has_safe_globals():
        return torch.load(
            filename, map_location=map_location, weights_only=True)
    return load_restricted(filename, map_location)


def _download(url: str) -> str:
    """The copy of ``url`` in torch's hub cache (``<hub>/checkpoints``, named
    as ``torch.hub.load_state_dict_from_url`` names it), downloaded once."""
    folder = osp.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(folder, exist_ok=True)
    cached = osp.join(folder, osp.basename(urlparse(url).path))
    if not osp.isfile(cached):
        torch.hub.download_url_to_file(url, cached, progress=True)
    return cached


def _load_local(filename: str, map_location: Union[str, torch.device],
                shown: str) -> Any:
    """Read a local file; errors name ``shown`` (the path or URL asked for)."""
    if not osp.isfile(filename):
        raise CheckpointError(f'checkpoint file not found: {shown}')
    if filename.endswith('.safetensors'):
        try:
            from safetensors.torch import load_file
            return load_file(filename, device=str(map_location))
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(
                f'{shown} is not a readable .safetensors file: {e}') from None
    try:
        return _read_pickled(filename, map_location)
    except pickle.UnpicklingError as e:
        why = _refusal(e)
        if why:
            raise CheckpointError(f'refused to load {shown}: {why}; mmhybrid '
                                  f'never unpickles code') from None
        raise CheckpointError(
            f'{shown} is not a readable checkpoint (truncated or corrupt?): '
            f'{_reason(e)}') from None
    except Exception as e:  # torch raises many types on corrupt data
        raise CheckpointError(
            f'{shown} is not a readable checkpoint (truncated or corrupt?): '
            f'{_reason(e)}') from None


def load_checkpoint_file(
        filename: Union[str, os.PathLike],
        map_location: Union[str, torch.device] = 'cpu') -> Any:
    """Load a checkpoint safely, on every supported torch (>= 2.1).

    Args:
        filename (str | PathLike): Local path, ``http(s)://`` URL
            (downloaded into torch's hub cache) or ``.safetensors`` file.
        map_location (str | torch.device): Where tensors are mapped.
            Defaults to ``'cpu'``.

    Returns:
        Whatever the file holds (usually a dict of tensors, or a dict with a
        ``state_dict``/``model`` entry).

    Raises:
        CheckpointError: If the file is missing, truncated, not a
            checkpoint, or contains a pickled object outside the safe
            allow-list (the message names the refused global).
    """
    allow_list.register_safe_globals()
    filename = os.fspath(filename)
    refused = unsupported_location(filename)
    if refused:
        raise CheckpointError(f'{filename}: {refused}')
    if not is_url(filename):
        return _load_local(filename, map_location, filename)
    if filename.endswith('.safetensors'):
        raise CheckpointError(
            f'{filename}: download .safetensors files first and pass the path')
    return _load_local(_download(filename), map_location, filename)


def save_checkpoint_atomic(obj: Any, filename: Union[str,
                                                     os.PathLike]) -> None:
    """Save ``obj`` with :func:`torch.save`; ``filename`` is never partial.

    Args:
        obj (Any): What to save.
        filename (str | PathLike): Destination. Its folder is created if
            needed.
    """
    filename = os.fspath(filename)

    def write(f) -> None:
        if filename.endswith('.safetensors'):
            from safetensors.torch import save
            f.write(save({k: v.contiguous() for k, v in obj.items()}))
        else:
            torch.save(obj, f)

    write_atomic(filename, write)


def write_atomic(filename: str,
                 write: Callable[[IO], None],
                 mode: str = 'wb') -> None:
    """Write ``filename`` through ``write(f)`` into a temporary file beside it,
    fsync, then rename into place: readers see the old file or the new one,
    never a partial one; on any error the temporary file is removed.

    Args:
        filename (str): Destination. Its folder is created if needed.
        write (callable): Writes the content to the open file object.
        mode (str): ``'wb'`` or ``'w'``. Defaults to ``'wb'``.
    """
    folder = osp.dirname(osp.abspath(filename))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix='.' + osp.basename(filename) + '.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filename)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def extract_state_dict(ckpt: Any, filename: str = '<checkpoint>') -> dict:
    """Return the tensor dict inside the common checkpoint wrappers.

    Handles ``{'state_dict': ...}`` (mmengine), ``{'model': ...}`` (MAE, DeiT,
    FD), ``{'module': ...}`` (DeepSpeed), ``{'teacher': ...}`` (DINO training
    checkpoints: the EMA teacher is the model DINO evaluates) and plain state
    dicts.
    """
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'{filename}: expected a dict of tensors, '
                              f'got {type(ckpt).__name__}')
    for key in ('state_dict', 'model', 'module', 'teacher'):
        inner = ckpt.get(key)
        if isinstance(inner, dict) and inner and all(
                isinstance(v, torch.Tensor) for v in inner.values()):
            return dict(inner)
    if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return dict(ckpt)
    raise CheckpointError(
        f'{filename}: found no state dict (looked for a tensor dict at the '
        'top level or under "state_dict", "model", "module", "teacher"; '
        'top-level keys: '
        f'{sorted(ckpt)[:10]})')


def non_finite_keys(state_dict: Any, limit: int = 5) -> List[str]:
    """Names of floating-point tensors in ``state_dict`` with NaN or inf."""
    bad = []
    if not isinstance(state_dict, dict):
        return bad
    for k, v in state_dict.items():
        if (isinstance(v, torch.Tensor) and v.is_floating_point()
                and not bool(torch.isfinite(v).all())):
            bad.append(str(k))
            if len(bad) >= limit:
                break
    return bad


def _check_zip(path: str) -> Optional[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.CRC == 0 and info.file_size > 0:
                    continue  # written without CRCs: nothing to compare with
                with zf.open(info) as member:
                    while member.read(1 << 24):
                        pass
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        return f'{type(e).__name__}: {e}'
    return None


def _check_safetensors(path: str) -> Optional[str]:
    size = osp.getsize(path)
    with open(path, 'rb') as f:
        head = f.read(8)
        if len(head) < 8:
            return 'shorter than a safetensors header'
        (n, ) = struct.unpack('<Q', head)
        if n > size - 8:
            return 'truncated safetensors header'
        try:
            meta = json.loads(f.read(n))
        except ValueError as e:
            return f'corrupt safetensors header: {e}'
    end = max(
        (v['data_offsets'][1] for k, v in meta.items() if k != '__metadata__'),
        default=0)
    if 8 + n + end > size:
        return f'truncated: {size} bytes, the header needs {8 + n + end}'
    return None


def probe_checkpoint(path: str) -> Optional[str]:
    """Check that ``path`` is a complete checkpoint file, without unpickling.

    torch's zip format is checked for its central directory and every member's
    CRC-32 (a truncated or bit-flipped file fails); safetensors for a complete
    header and data; any other format is opened with the safe loader.

    Returns:
        str | None: Why the file is unusable, or None when it is fine.
    """
    if not osp.exists(path):
        return 'file not found'
    if not osp.isfile(path):
        return 'not a file'
    if not os.access(path, os.R_OK):
        return 'not readable (permission denied)'
    if osp.getsize(path) == 0:
        return 'empty file'
    if path.endswith('.safetensors'):
        return _check_safetensors(path)
    if zipfile.is_zipfile(path):
        return _check_zip(path)
    with open(path, 'rb') as f:
        magic = f.read(2)
    if magic[:1] == b'PK':
        return 'truncated or corrupt zip archive (no central directory)'
    try:  # legacy (non-zip) torch format: only a full safe load can tell
        load_checkpoint_file(path)
    except CheckpointError as e:
        return str(e)
    return None


def check_finite_weights(state_dict: Any, filename: str) -> None:
    """Refuse to save weights holding NaN or inf.

    Raises:
        CheckpointError: Naming ``filename`` and up to five bad tensors.
    """
    bad = non_finite_keys(state_dict)
    if bad:
        raise CheckpointError(
            f'refusing to save {filename}: the model weights hold non-finite '
            f'values (NaN/inf) in {bad}')
