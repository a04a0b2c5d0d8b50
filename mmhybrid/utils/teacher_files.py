"""Teacher files given by URL: one download per node, read by every rank.

Every rank of a training job loads the frozen teachers. Reading a URL in every
rank would make 8 processes per node download the same file at once into the
same cache. Instead local rank 0 of each node downloads into torch hub's cache
(``<hub dir>/checkpoints/``, where ``torch.hub.load_state_dict_from_url`` and
mmengine's ``load_url`` keep it too), the other ranks wait for it, then all
read the cached file. A failed download is reported on every rank, naming the
URL.

The wait does not run under the job's process-group timeout: with NCCL that is
the watchdog's (10 minutes by default in torch >= 2.2), and a ViT-L teacher
file (over 1 GB) on a slow link can take longer, which would abort every rank
that waits. The ranks wait in a collective of their own group instead, created
with :func:`download_timeout` (``MMHYBRID_DOWNLOAD_TIMEOUT`` seconds, 3 hours
by default) while every rank is present, before the download starts.
"""
import os
import os.path as osp
from datetime import timedelta
from typing import Any, List, Optional
from urllib.parse import urlparse

import torch
from mmengine.dist import all_gather_object, is_distributed

from .checkpoint import CheckpointError, is_url, unsupported_location
from .problems import Problem

__all__ = [
    'is_url', 'cached_file', 'fetch_teacher_file', 'teacher_file_problems',
    'downloads_for_node', 'download_timeout', 'DOWNLOAD_TIMEOUT_ENV'
]

#: Environment variable: how many seconds the ranks wait for the teacher
#: downloads of their nodes (default :data:`DEFAULT_DOWNLOAD_TIMEOUT`)
DOWNLOAD_TIMEOUT_ENV = 'MMHYBRID_DOWNLOAD_TIMEOUT'
DEFAULT_DOWNLOAD_TIMEOUT = 3 * 3600


def teacher_file_problems(path: Any,
                          key: str = 'checkpoint',
                          read: bool = False) -> List[Problem]:
    """What is wrong with a teacher checkpoint location (empty: nothing).

    The one check of ``FrozenTeacher``'s ``checkpoint`` and of the preflight
    check. A URL must be ``http(s)://`` (:func:`~.checkpoint.
    unsupported_location`; it is downloaded, and checked, when training
    starts); a local file must exist.

    Args:
        path (Any): The configured value; None (random weights) is fine.
        key (str): Its config key, for the problem. Defaults to
            ``'checkpoint'``.
        read (bool): Also read the file through (truncated, corrupt or unsafe
            files are problems too; :func:`mmhybrid.engine.safe_io.
            probe_checkpoint`). The preflight check does; a constructor does
            not, since ``init_weights`` reads the file anyway. Defaults to
            False.
    """
    if path is None:
        return []
    if not isinstance(path, str) or not path:
        return [Problem(key, path, 'expected a file path or URL')]
    refused = unsupported_location(path)
    if refused:
        return [Problem(key, path, refused)]
    if is_url(path):
        return []
    if read:
        from .checkpoint import probe_checkpoint
        reason = probe_checkpoint(path)
    elif not osp.exists(path):
        reason = 'file not found'
    else:
        reason = None if osp.isfile(path) else 'not a file'
    if reason is None:
        return []
    return [Problem(key, path, f'teacher checkpoint unusable: {reason}')]


def cached_file(url: str) -> str:
    """Where torch hub's cache keeps the file of ``url``.

    Args:
        url (str): An ``http(s)://`` URL.

    Returns:
        str: ``<torch hub dir>/checkpoints/<file name of the URL>``.
    """
    name = osp.basename(urlparse(url).path)
    if not name:
        raise CheckpointError(f'{url}: the URL names no file')
    return osp.join(torch.hub.get_dir(), 'checkpoints', name)


# where launchers put a process's rank on its node: torchrun (mmengine's
# ``pytorch`` launcher) and mmengine's ``slurm`` launcher set LOCAL_RANK, Open
# MPI (mmengine's ``mpi`` launcher) its own variable
_LOCAL_RANK_VARS = ('LOCAL_RANK', 'OMPI_COMM_WORLD_LOCAL_RANK')


def downloads_for_node() -> bool:
    """Whether this process fetches URLs for its node: local rank 0.

    A process that is not distributed, or whose local rank is unknown, fetches
    its own copy (slower, never wrong).
    """
    if not is_distributed():
        return True
    for var in _LOCAL_RANK_VARS:
        if var in os.environ:
            return int(os.environ[var]) == 0
    return True


def download_timeout() -> float:
    """Seconds the ranks wait for the teacher downloads.

    ``MMHYBRID_DOWNLOAD_TIMEOUT`` when set (a positive number of seconds),
    else :data:`DEFAULT_DOWNLOAD_TIMEOUT` (3 hours).

    Raises:
        ValueError: One line naming the variable and its value, when it is
            not a positive number.
    """
    raw = os.environ.get(DOWNLOAD_TIMEOUT_ENV)
    if raw is None or raw == '':
        return float(DEFAULT_DOWNLOAD_TIMEOUT)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float('inf'):
        raise ValueError(f'{DOWNLOAD_TIMEOUT_ENV}={raw!r}: expected a '
                         'positive number of seconds to wait for teacher '
                         'downloads')
    return value


def _wait_group():
    """All ranks in a group whose collectives time out after
    :func:`download_timeout` seconds (same backend as the default group).

    Made while every rank is present (before any download), so its creation
    never waits long.
    """
    return torch.distributed.new_group(
        timeout=timedelta(seconds=download_timeout()))


def _download(url: str, dst: str) -> Optional[str]:
    """Download ``url`` to ``dst`` unless it is there; the error text, if any.

    torch writes a temporary file and renames it into place, so ``dst`` never
    holds a partial file.
    """
    if osp.isfile(dst):
        return None
    try:
        os.makedirs(osp.dirname(dst), exist_ok=True)
        torch.hub.download_url_to_file(url, dst, progress=False)
    except Exception as e:  # urllib, OSError, hash errors: all reported alike
        return f'{type(e).__name__}: {e}'
    return None


def fetch_teacher_file(filename: str) -> str:
    """A local path for a teacher file, downloading a URL once per node.

    A local path is returned as it is. For a URL, local rank 0 of each node
    downloads it into torch hub's cache unless it is there; when
    ``torch.distributed`` is initialised, every rank then waits for all
    downloads (one ``all_gather_object``, which also shares their errors).
    Every rank must call this for the same files in the same order.

    Args:
        filename (str): Path or ``http(s)://`` URL.

    Returns:
        str: The local file to read.

    Raises:
        CheckpointError: On every rank when a download failed on any rank
            (naming the URL, the failing rank and the reason), or when the
            cached file is missing after the download.
    """
    if not is_url(filename):
        return filename
    dst = cached_file(filename)
    group = _wait_group() if is_distributed() else None
    error = _download(filename, dst) if downloads_for_node() else None
    if group is not None:
        errors: List[Optional[str]] = all_gather_object(error, group=group)
        torch.distributed.destroy_process_group(group)
    else:
        errors = [error]
    failed = [(rank, e) for rank, e in enumerate(errors) if e is not None]
    if failed:
        rank, reason = failed[0]
        where = f' on rank {rank}' if is_distributed() else ''
        raise CheckpointError(
            f'could not download the teacher file {filename}{where}: {reason}')
    if not osp.isfile(dst):
        raise CheckpointError(
            f'{filename}: not in the cache ({dst}) after local rank 0 '
            'downloaded it; every rank of a node must see the same torch hub '
            'dir (TORCH_HOME)')
    return dst
