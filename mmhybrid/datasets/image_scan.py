"""Find every unreadable or empty image of a dataset folder, before training.

:func:`scan_images` checks each image with
:func:`~mmhybrid.datasets.sample_guard.image_problem` (the rule the training
guard applies too) in a pool of threads, shows a progress bar, and records
each checked file in a state file, so an interrupted scan of a large folder
(ImageNet: 1.28 M files) continues where it stopped.
``tools/data/scan_images.py`` is its command line.
"""
import argparse
import os
import os.path as osp
import sys
from multiprocessing.pool import ThreadPool
from typing import Dict, List, Optional, Tuple

from .sample_guard import image_problem

#: what counts as an image file (any case): mmpretrain's image extensions
#: and a few more
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif',
                    '.tiff', '.webp', '.gif')


def list_images(root: str) -> List[str]:
    """Every image file under ``root`` (by extension, any case), sorted; the
    one rule for the scan tool and the analysis tools."""
    if not osp.isdir(root):
        raise FileNotFoundError(f'image folder not found: {root!r}')
    found = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        found += [
            osp.join(folder, f) for f in files
            if f.lower().endswith(IMAGE_EXTENSIONS)
        ]
    return sorted(found)


def _check(path: str) -> Tuple[str, Optional[str]]:
    return path, image_problem(path)


def _read_state(state_file: str) -> Tuple[Dict[str, Optional[str]], int]:
    """``path -> problem or None`` of the files a previous scan checked, and
    the length of the file's complete lines (a line cut short by a kill is
    dropped, and cut off before new lines are appended)."""
    done, complete = {}, 0
    if not state_file or not osp.exists(state_file):
        return done, complete
    with open(state_file, 'rb') as f:
        for raw in f:
            if not raw.endswith(b'\n'):
                break
            complete += len(raw)
            parts = raw.decode('utf-8').rstrip('\n').split('\t', 2)
            if len(parts) == 3 and parts[0] in ('ok', 'bad'):
                done[parts[1]] = parts[2] if parts[0] == 'bad' else None
    return done, complete


def scan_images(root: str,
                workers: Optional[int] = None,
                state_file: Optional[str] = None,
                progress: bool = True,
                chunksize: int = 64) -> List[Tuple[str, str]]:
    """List the unreadable or empty images under ``root``.

    Args:
        root (str): The dataset folder (searched recursively).
        workers (int, optional): Threads that decode images. Defaults to the
            machine's CPU count.
        state_file (str, optional): Where each checked file is recorded; a
            scan with the same file skips those already checked. Defaults to
            None (no record, nothing skipped).
        progress (bool): Show a progress bar on stderr. Defaults to True.
        chunksize (int): Files handed to a worker at a time. Defaults to 64.

    Returns:
        List[Tuple[str, str]]: ``(path, reason)`` of every bad image, sorted
        by path (those found by an earlier, interrupted scan included).
    """
    paths = list_images(root)
    done, complete = _read_state(state_file)
    todo = [p for p in paths if p not in done]
    workers = workers or os.cpu_count() or 1
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(
            total=len(paths),
            initial=len(paths) - len(todo),
            unit='img',
            desc='scan_images',
            dynamic_ncols=True)
    record = None
    if state_file:
        os.makedirs(osp.dirname(osp.abspath(state_file)), exist_ok=True)
        record = open(state_file, 'a', encoding='utf-8')
        record.truncate(complete)
    try:
        if workers > 1 and len(todo) > chunksize:
            # threads: Pillow decodes with the GIL released, and a forked
            # pool of a process with threads (torch's) can deadlock
            pool = ThreadPool(workers)
            results = pool.imap_unordered(_check, todo, chunksize=chunksize)
        else:
            pool, results = None, map(_check, todo)
        try:
            for path, problem in results:
                done[path] = problem
                if record is not None:
                    kind = 'ok' if problem is None else 'bad'
                    record.write(f'{kind}\t{path}\t{problem or ""}\n')
                if bar is not None:
                    bar.update(1)
        finally:
            if pool is not None:
                pool.terminate()
    finally:
        if record is not None:
            record.close()
        if bar is not None:
            bar.close()
    wanted = set(paths)
    return sorted(
        (p, r) for p, r in done.items() if r is not None and p in wanted)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description='List the unreadable or empty images of a folder.')
    parser.add_argument('root', help='dataset folder (searched recursively)')
    parser.add_argument(
        '--workers',
        type=int,
        default=None,
        help='decoding threads (default: all CPUs)')
    parser.add_argument(
        '--state',
        default=None,
        help='record of checked files; a rerun with the same '
        'file skips them (default: no record)')
    parser.add_argument(
        '--out',
        default=None,
        help='also write the bad files (path<TAB>reason) here')
    parser.add_argument(
        '--no-progress', action='store_true', help='no progress bar')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """``tools/data/scan_images.py``: ``1`` if any image is bad, else ``0``."""
    args = parse_args(argv)
    try:
        bad = scan_images(
            args.root,
            workers=args.workers,
            state_file=args.state,
            progress=not args.no_progress)
    except FileNotFoundError as e:
        print(f'ERROR: {e}', file=sys.stderr)
        return 2
    lines = [f'{path}\t{reason}' for path, reason in bad]
    for line in lines:
        print(line)
    if args.out:
        with open(args.out, 'w', encoding='utf-8') as f:
            f.write(''.join(line + '\n' for line in lines))
    print(f'{len(bad)} unreadable image(s) under {args.root}', file=sys.stderr)
    return 1 if bad else 0
