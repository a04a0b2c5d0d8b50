"""What runs around every training sample inside the dataloader workers.

:class:`SampleGuard` wraps a dataset's pipeline (the ``Compose`` that turns a
data-info dict into a sample) and adds three things the training hooks ask for:

* **per-sample seeds** (``ExactResumeHook``, epoch-based loops): a
  :class:`~mmhybrid.datasets.ResumableSampler` yields indices that carry a seed
  derived from (sampler seed, epoch, position in the epoch); the guard reseeds
  python / numpy / torch from it before the pipeline runs. A sample's
  augmentation then depends on nothing else -- not on which worker draws it,
  nor on what that worker drew before -- so a run resumed in the middle of an
  epoch, with fresh or persistent workers, augments exactly as the
  uninterrupted one did.
* **unreadable images** (``UnreadableImageHook``): when the pipeline raises and
  the sample's image file is unreadable or empty (:func:`image_problem`), the
  error names the file and the dataset index (``on_unreadable='raise'``),
  or the sample is skipped and replaced by another one, counted in a counter
  shared by all workers of the run and bounded by ``max_skips``
  (``'skip'``).
* **signals** (``PreemptionHook``): workers ignore SIGTERM / SIGUSR1, which
  Slurm sends to every process of a job step; the training process decides when
  to stop, and a worker killed by it would end the run before the checkpoint.

:func:`install_sample_guard` puts the guard on the train dataloader's dataset,
once, from the options every hook of the runner asks for
(``hook.sample_guard_options(runner)``).
"""
import atexit
import multiprocessing
import os
import random
import signal
from multiprocessing import Value
from typing import Callable, Optional

import numpy as np
import torch
from mmengine.logging import print_log

ON_UNREADABLE = ('raise', 'skip')


class UnreadableImageError(RuntimeError):
    """An image of the dataset cannot be read (names file and index).

    Raised inside a dataloader worker, torch re-raises it in the training
    process as ``UnreadableImageError(<worker traceback text>)``; the
    constructor keeps only this error's own line of that text, so the message
    stays the one line that names the file.
    """

    def __init__(self, msg: str) -> None:
        text = str(msg)
        marker = f'{type(self).__name__}: '
        if text.startswith('Caught ') and marker in text:
            text = text.rsplit(marker, 1)[1].strip()
        super().__init__(text)


def image_problem(path: str) -> Optional[str]:
    """Why the image file at ``path`` cannot be used, or None if it decodes.

    The one readability rule of mmhybrid (the scan tool and the training guard
    call it): the file exists, is not empty, and Pillow decodes all of it (a
    truncated JPEG fails the full decode, though its header opens).

    Args:
        path (str): The image file.

    Returns:
        Optional[str]: A short reason (``'missing file'``, ``'empty file
        (0 bytes)'``, ``'cannot decode: ...'``), or None for a good image.
    """
    from PIL import Image
    try:
        size = os.path.getsize(path)
    except OSError as e:
        return f'missing file ({e.strerror})'
    if size == 0:
        return 'empty file (0 bytes)'
    try:
        with Image.open(path) as img:
            img.load()  # decodes every byte: catches truncation
    except Exception as e:  # noqa: BLE001  (PIL raises many types)
        return f'cannot decode: {type(e).__name__}: {e}'
    return None


class SeededIndex(int):
    """A dataset index that carries the seed of its sample's augmentation."""

    def __new__(cls, index: int, seed: int) -> 'SeededIndex':
        obj = super().__new__(cls, index)
        obj.seed = seed
        return obj

    def __reduce__(self):
        return (SeededIndex, (int(self), self.seed))


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The augmentation seed of the sample at ``position`` of ``epoch``.

    A fixed mix (splitmix64-style) of the three numbers, so neighbouring
    positions or epochs do not get neighbouring seeds.
    """
    mask = (1 << 64) - 1
    x = (int(seed) * 0x9E3779B97F4A7C15 + int(epoch) * 0xBF58476D1CE4E5B9 +
         int(position) * 0x94D049BB133111EB) & mask
    x ^= x >> 31
    x = (x * 0xBF58476D1CE4E5B9) & mask
    x ^= x >> 27
    return x & 0x7FFFFFFF


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class SampleGuard:
    """A dataset pipeline wrapper; see the module docstring.

    Args:
        pipeline (Callable): The dataset's pipeline (``dataset.pipeline``).
        seeded (bool): Reseed from a :class:`SeededIndex` before the pipeline.
            Defaults to False.
        on_unreadable (str): ``'raise'`` (default) or ``'skip'``.
        max_skips (int): With ``'skip'``, the most unreadable images one run
            may skip; one more is an error. Defaults to 100.
        ignore_signals (tuple): Signal names the workers ignore. Defaults to
            ().
        dataset_name (str): Named in messages. Defaults to ``'dataset'``.
    """

    def __init__(self,
                 pipeline: Callable,
                 seeded: bool = False,
                 on_unreadable: str = 'raise',
                 max_skips: int = 100,
                 ignore_signals: tuple = (),
                 dataset_name: str = 'dataset') -> None:
        if on_unreadable not in ON_UNREADABLE:
            raise ValueError(f'on_unreadable={on_unreadable!r}: expected one '
                             f'of {ON_UNREADABLE}')
        self.pipeline = pipeline
        self.seeded = seeded
        self.on_unreadable = on_unreadable
        self.max_skips = int(max_skips)
        self.ignore_signals = tuple(ignore_signals)
        self.dataset_name = dataset_name
        # shared by the workers (inherited by fork, passed at spawn) and read
        # by the training process: one count per run
        self.skipped = Value('i', 0)
        self._signals_done = False

    # the transforms of the wrapped pipeline stay reachable (code that looks
    # at dataset.pipeline.transforms keeps working)
    def __getattr__(self, name):
        if name == 'pipeline':
            raise AttributeError(name)
        return getattr(self.pipeline, name)

    def __repr__(self) -> str:
        return (f'SampleGuard(seeded={self.seeded}, on_unreadable='
                f'{self.on_unreadable!r}, max_skips={self.max_skips}, '
                f'{self.pipeline!r})')

    def _enter_worker(self) -> None:
        self._signals_done = True
        if torch.utils.data.get_worker_info() is None:
            return  # the training process keeps its own handlers
        for name in self.ignore_signals:
            signal.signal(getattr(signal, name), signal.SIG_IGN)

    def __call__(self, results: dict) -> Optional[dict]:
        if not self._signals_done:
            self._enter_worker()
        index = results.get('sample_idx')
        seed = getattr(index, 'seed', None) if self.seeded else None
        if index is not None:
            results['sample_idx'] = int(index)
        if seed is None:
            return self._run(results)
        if torch.utils.data.get_worker_info() is not None:
            _seed_all(seed)
            return self._run(results)
        # no workers: the pipeline runs in the training process, whose own
        # random stream (token sampling, dropout) must not be reseeded
        saved = (random.getstate(), np.random.get_state(),
                 torch.get_rng_state())
        try:
            _seed_all(seed)
            return self._run(results)
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])

    def _run(self, results: dict) -> Optional[dict]:
        try:
            return self.pipeline(results)
        except Exception:
            path = results.get('img_path')
            problem = image_problem(path) if isinstance(path, str) else None
            if problem is None:
                raise  # not an unreadable image: a real error, kept as is
        index = results.get('sample_idx')
        where = (f"image '{path}' (index {index} of the "
                 f'{self.dataset_name}): {problem}')
        if self.on_unreadable == 'raise':
            raise UnreadableImageError(
                f'unreadable {where}. Run tools/data/scan_images.py on the '
                'data to list every such file, or skip them with '
                "custom_hooks=[dict(type='UnreadableImageHook', "
                "on_unreadable='skip')]") from None
        with self.skipped.get_lock():
            self.skipped.value += 1
            count = self.skipped.value
        if count > self.max_skips:
            raise UnreadableImageError(
                f'more than max_skips={self.max_skips} unreadable images '
                f'in this run; the last: {where}') from None
        print_log(
            f'UnreadableImageHook: skipped unreadable {where} '
            f'({count} of at most {self.max_skips} this run); another '
            'sample takes its place',
            logger='current',
            level=30)
        return None  # mmengine's BaseDataset draws another sample


def _datasets(dataset):
    """The datasets under ``dataset`` (itself, or a wrapper's children) that
    run a pipeline."""
    if hasattr(dataset, 'pipeline'):
        return [dataset]
    found = []
    for child in getattr(dataset, 'datasets',
                         None) or [getattr(dataset, 'dataset', None)]:
        if child is not None:
            found += _datasets(child)
    return found


def _restart_started_workers(runner) -> None:
    """An ``IterBasedTrainLoop`` starts its dataloader workers when it is
    built, before any hook runs; restart them so they fork with the guard."""
    from mmengine.runner import IterBasedTrainLoop
    from mmengine.runner.loops import _InfiniteDataloaderIterator
    loop = runner.train_loop
    if not isinstance(loop, IterBasedTrainLoop) or \
            loop.dataloader.num_workers == 0:
        return
    old = getattr(loop.dataloader_iterator, '_iterator', None)
    if hasattr(old, '_shutdown_workers'):
        old._shutdown_workers()
    if getattr(loop.dataloader, '_iterator', None) is not None:
        loop.dataloader._iterator = None  # persistent workers' cached iterator
    sampler = loop.dataloader.sampler
    if hasattr(sampler, '_indices_of_rank'):
        # InfiniteSampler iterates one generator made at its construction;
        # the old iterator, now gone, closed it. A new one starts the same
        # seeded order from its beginning, as the run would have seen it
        sampler.indices = sampler._indices_of_rank()
    # a new iterator draws its workers' base seed from torch's global RNG;
    # keep the training randomness as it was without the restart
    state = torch.get_rng_state()
    loop.dataloader_iterator = _InfiniteDataloaderIterator(loop.dataloader)
    torch.set_rng_state(state)


def _kill_workers_at_exit() -> None:
    """Workers that ignore SIGTERM outlive multiprocessing's own exit handler
    (it sends SIGTERM, then waits for them); stop them first, with SIGKILL.

    Registered after multiprocessing's handler, so it runs before it.
    """
    # torch's SIGCHLD handler would raise in here on the first killed worker
    # and leave the others to hang the exit
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    workers = [p for p in multiprocessing.active_children() if p.daemon]
    for proc in workers:
        try:
            proc.kill()
        except Exception:  # noqa: BLE001  (already gone)
            pass
    for proc in workers:
        try:
            proc.join(timeout=5)
        except Exception:  # noqa: BLE001
            pass


_KILL_AT_EXIT = []


def install_sample_guard(runner) -> Optional[SampleGuard]:
    """Wrap the train dataset's pipeline in a :class:`SampleGuard` (once).

    The options are collected from every hook of ``runner`` that has a
    ``sample_guard_options(runner)`` method (later hooks win on a clash);
    every such hook calls this in its ``before_train`` and the first call does
    the work, before the workers that matter start.

    Returns:
        Optional[SampleGuard]: The guard of the first dataset, or None if the
        train dataset has no pipeline to wrap.
    """
    loader = runner.train_loop.dataloader
    datasets = _datasets(loader.dataset)
    done = [
        d.pipeline for d in datasets if isinstance(d.pipeline, SampleGuard)
    ]
    if done:
        return done[0]
    options = {}
    for hook in runner.hooks:
        get = getattr(hook, 'sample_guard_options', None)
        if get is not None:
            options.update(get(runner))
    if not datasets:
        runner.logger.warning(
            f'{type(loader.dataset).__name__} has no pipeline to guard: '
            'unreadable images, per-sample seeds and worker signals are '
            'left as the dataset handles them')
        return None
    guards = []
    for d in datasets:
        d.pipeline = SampleGuard(
            d.pipeline, dataset_name=type(d).__name__, **options)
        guards.append(d.pipeline)
    if options.get('ignore_signals') and not _KILL_AT_EXIT:
        atexit.register(_kill_workers_at_exit)
        _KILL_AT_EXIT.append(True)
    # one run-wide count, even over the parts of a concatenated dataset
    for g in guards[1:]:
        g.skipped = guards[0].skipped
    _restart_started_workers(runner)
    return guards[0]
