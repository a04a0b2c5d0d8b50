"""The one place where mmhybrid reads and writes checkpoint files.

Reading never runs code: pickles are opened with ``weights_only=True`` (plus the
allow-list of :mod:`mmhybrid.compat`), ``.safetensors`` with safetensors. Writing is
atomic: a file is written next to its destination and renamed into place, so a crash
never leaves a half-written checkpoint under the real name.
"""
import os
import os.path as osp
import pickle
import re
import tempfile
from typing import IO, Any, Callable, Union

import torch

from .. import compat


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, unsafe or has the wrong content."""


def _reason(err: BaseException, limit: int = 240) -> str:
    """The informative part of torch's error, without its advice to turn safe
    loading off."""
    skip = ('weights_only', 'documentation', 'file an issue', 'can still be loaded',
            'trust the source', 'arbitrary code')
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    kept = [ln for ln in lines if not any(s in ln.lower() for s in skip)]
    text = ' '.join(kept) or type(err).__name__
    return text if len(text) <= limit else text[:limit] + '...'


def _is_url(path: str) -> bool:
    return path.startswith(('http://', 'https://'))


def load_checkpoint_file(filename: Union[str, os.PathLike],
                         map_location: Union[str, torch.device] = 'cpu') -> Any:
    """Load a checkpoint safely.

    Args:
        filename (str | PathLike): Local path, ``http(s)://`` URL (downloaded into
            torch's hub cache) or ``.safetensors`` file.
        map_location (str | torch.device): Where tensors are mapped. Defaults to
            ``'cpu'``.

    Returns:
        Whatever the file holds (usually a dict of tensors, or a dict with a
        ``state_dict``/``model`` entry).

    Raises:
        CheckpointError: If the file is missing, truncated, not a checkpoint, or
            contains a pickled object outside the safe allow-list.
    """
    compat.apply()
    filename = os.fspath(filename)
    if _is_url(filename):
        if filename.endswith('.safetensors'):
            raise CheckpointError(
                f'{filename}: download .safetensors files first and pass the path')
        try:
            return torch.hub.load_state_dict_from_url(
                filename, map_location=map_location, weights_only=True,
                check_hash=False)
        except pickle.UnpicklingError as e:
            raise CheckpointError(
                f'refused to load {filename}: it holds objects outside the safe '
                f'allow-list (mmhybrid never unpickles code): {e}') from None
    if not osp.isfile(filename):
        raise CheckpointError(f'checkpoint file not found: {filename}')
    if filename.endswith('.safetensors'):
        try:
            from safetensors.torch import load_file
            return load_file(filename, device=str(map_location))
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(
                f'{filename} is not a readable .safetensors file: {e}') from None
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        unsafe = re.search(r'(unsupported global|unrecognized function|refused '
                           r'getattr|is blocked)[^\n]*', msg, re.IGNORECASE)
        if unsafe:
            raise CheckpointError(
                f'refused to load {filename}: it holds objects outside the safe '
                f'allow-list, and mmhybrid never unpickles code ({unsafe.group(0)})'
            ) from None
        raise CheckpointError(
            f'{filename} is not a readable checkpoint (truncated or corrupt?): '
            f'{_reason(e)}') from None
    except Exception as e:  # torch raises many types on corrupt data
        raise CheckpointError(
            f'{filename} is not a readable checkpoint (truncated or corrupt?): '
            f'{_reason(e)}') from None


def save_checkpoint_atomic(obj: Any, filename: Union[str, os.PathLike]) -> None:
    """Save ``obj`` with :func:`torch.save` so that ``filename`` is never partial.

    Args:
        obj (Any): What to save.
        filename (str | PathLike): Destination. Its folder is created if needed.
    """
    filename = os.fspath(filename)

    def write(f) -> None:
        if filename.endswith('.safetensors'):
            from safetensors.torch import save
            f.write(save({k: v.contiguous() for k, v in obj.items()}))
        else:
            torch.save(obj, f)

    write_atomic(filename, write)


def write_atomic(filename: str, write: Callable[[IO], None],
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

    Handles ``{'state_dict': ...}`` (mmengine), ``{'model': ...}`` (MAE, DeiT, FD),
    ``{'module': ...}`` (DeepSpeed), ``{'teacher': ...}`` (DINO training
    checkpoints: the EMA teacher is the model DINO evaluates) and plain state
    dicts.
    """
    if not isinstance(ckpt, dict):
        raise CheckpointError(
            f'{filename}: expected a dict of tensors, got {type(ckpt).__name__}')
    for key in ('state_dict', 'model', 'module', 'teacher'):
        inner = ckpt.get(key)
        if isinstance(inner, dict) and inner and all(
                isinstance(v, torch.Tensor) for v in inner.values()):
            return dict(inner)
    if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return dict(ckpt)
    raise CheckpointError(
        f'{filename}: found no state dict (looked for a tensor dict at the top level '
        f'or under "state_dict", "model", "module", "teacher"; top-level keys: '
        f'{sorted(ckpt)[:10]})')
