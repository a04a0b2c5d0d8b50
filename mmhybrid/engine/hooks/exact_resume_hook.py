"""Resume a killed run so that it continues bit for bit.

mmengine already restores weights, optimizer, schedulers, the iteration counter
and (for ``IterBasedTrainLoop``) the data order: it re-reads the batches that were
already trained on, so the sampler and every dataloader worker's augmentation
RNG are where they were. What it does not restore is the random state of the
training process itself: the token sampling of Hybrid Distillation
(``torch.rand``), dropout and drop path draw from torch's global RNG, which a
restarted process has re-seeded and advanced by model initialisation. This hook
stores the torch (CPU and current CUDA device), numpy and python RNG states of
every rank in each checkpoint and puts them back at the exact point of the
resumed run where the uninterrupted run stood after saving it: after the
dataloader fast-forward, before the first new batch is drawn.

It also makes validation RNG-neutral (states saved before and restored after
each validation), so a run that validates does not draw different training
randomness than one that does not, and a resumed run matches either way.

Limits (each is logged as a warning when it applies):

* mmengine's ``IterBasedTrainLoop`` fast-forward re-reads (decodes and augments)
  every batch already trained on; that is what makes the data exact, and it
  costs data-loading time proportional to the resume point.
* ``EpochBasedTrainLoop`` resumes exactly at epoch ends (where it checkpoints by
  default) with non-persistent workers; a mid-epoch checkpoint restarts the
  epoch, and persistent workers restart their augmentation RNG.
* A different world size than the saved run's gets rank 0's state everywhere.
"""
import random
from typing import List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_dist_info
from mmengine.hooks import CheckpointHook, Hook
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
from mmpretrain.registry import HOOKS

DATA_BATCH = Optional[dict]


def get_rng_state() -> dict:
    """This process's RNG states, as tensors and plain values (loadable with
    ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    state = dict(
        torch=torch.get_rng_state(),
        numpy=dict(name=str(name), keys=torch.from_numpy(
            keys.astype(np.int64)), pos=int(pos), has_gauss=int(has_gauss),
                   cached_gaussian=float(cached)),
        python=dict(version=int(version),
                    state=torch.tensor(py_state, dtype=torch.int64),
                    gauss_next=gauss_next),
        cuda=None)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`get_rng_state`."""
    torch.set_rng_state(state['torch'])
    n = state['numpy']
    np.random.set_state((n['name'], n['keys'].numpy().astype(np.uint32),
                         n['pos'], n['has_gauss'], n['cached_gaussian']))
    p = state['python']
    random.setstate((p['version'], tuple(int(v) for v in p['state'].tolist()),
                     p['gauss_next']))
    if state.get('cuda') is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state['cuda'])


class _RestoreBeforeBatch:
    """Wraps the train loop's dataloader iterator; restores the RNG states just
    before batch number ``skip`` is drawn (after mmengine's fast-forward)."""

    def __init__(self, iterator, skip: int, restore) -> None:
        self._iterator = iterator
        self._skip = skip
        self._restore = restore
        self._count = 0

    def __iter__(self):
        return self

    def __next__(self):
        if self._count == self._skip and self._restore is not None:
            self._restore()
            self._restore = None
        self._count += 1
        return next(self._iterator)

    def __getattr__(self, name):
        return getattr(self._iterator, name)


@HOOKS.register_module()
class ExactResumeHook(Hook):
    """Save and restore the training RNG states with every checkpoint.

    ``tools/train.py`` adds it to every run; configs may list it explicitly
    (``custom_hooks=[dict(type='ExactResumeHook')]``).

    Priority ``LOW``: its ``after_train_iter``/``after_train_epoch`` run before
    ``CheckpointHook`` (``VERY_LOW``), so in a distributed run the states of all
    ranks are gathered before rank 0 writes the checkpoint.
    """
    priority = 'LOW'

    def __init__(self) -> None:
        self._gathered: Optional[List[dict]] = None
        self._gathered_at: Optional[int] = None
        self._pending: Optional[dict] = None
        self._val_state: Optional[dict] = None

    # ------------------------------------------------------------------ save
    @staticmethod
    def _saves_now(runner, by_epoch: bool) -> bool:
        for hook in runner.hooks:
            if not isinstance(hook, CheckpointHook) or hook.by_epoch != by_epoch:
                continue
            if by_epoch:
                if hook.every_n_epochs(runner, hook.interval, hook.save_begin) \
                        or (hook.save_last and hook.is_last_train_epoch(runner)):
                    return True
            elif hook.every_n_train_iters(runner, hook.interval,
                                          hook.save_begin) or (
                                              hook.save_last and
                                              hook.is_last_train_iter(runner)):
                return True
        return False

    def _gather(self, runner, by_epoch: bool) -> None:
        _, world_size = get_dist_info()
        if world_size > 1 and self._saves_now(runner, by_epoch):
            # every rank takes part; rank 0 writes them in before_save_checkpoint
            self._gathered = all_gather_object(get_rng_state())
            self._gathered_at = runner.iter

    def after_train_iter(self, runner, batch_idx: int,
                         data_batch: DATA_BATCH = None,
                         outputs: Optional[dict] = None) -> None:
        self._gather(runner, by_epoch=False)

    def after_train_epoch(self, runner) -> None:
        self._gather(runner, by_epoch=True)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        _, world_size = get_dist_info()
        if world_size > 1 and self._gathered is not None \
                and self._gathered_at == runner.iter:
            states = self._gathered
        else:
            if world_size > 1:
                runner.logger.warning(
                    'ExactResumeHook: this checkpoint was not announced to all '
                    'ranks (saved outside CheckpointHook\'s schedule); it holds '
                    'the RNG state of rank 0 only')
            states = [get_rng_state()]
        step = checkpoint.get('meta', {}).get('iter', runner.iter)
        checkpoint['rng_state'] = dict(iter=step, states=states)

    # --------------------------------------------------------------- restore
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        saved = checkpoint.get('rng_state')
        meta = checkpoint.get('meta', {})
        if saved is None:
            self._pending = None
            return
        self._pending = dict(states=saved['states'],
                             iter=int(meta.get('iter', -1)))

    def _restore(self, runner) -> None:
        states = self._pending['states']
        rank, world_size = get_dist_info()
        if len(states) == world_size:
            state = states[rank]
        else:
            state = states[0]
            if world_size > 1 or len(states) > 1:
                runner.logger.warning(
                    f'ExactResumeHook: the checkpoint holds RNG states of '
                    f'{len(states)} rank(s), this run has {world_size}; every '
                    'rank gets rank 0\'s state (the run continues, but not bit '
                    'for bit)')
        set_rng_state(state)
        runner.logger.info(
            f'ExactResumeHook: restored the RNG states saved at iteration '
            f'{self._pending["iter"]}')
        self._pending = None

    def before_train(self, runner) -> None:
        if self._pending is None:
            return
        if runner.iter != self._pending['iter'] or runner.iter == 0:
            # weights were loaded (load_from), not a resume: fresh randomness
            self._pending = None
            return
        loop = runner.train_loop
        if isinstance(loop, IterBasedTrainLoop):
            # IterBasedTrainLoop.run() re-draws runner.iter batches after
            # before_train_epoch; restore right after them
            loop.dataloader_iterator = _RestoreBeforeBatch(
                loop.dataloader_iterator, runner.iter,
                lambda: self._restore(runner))
        elif isinstance(loop, EpochBasedTrainLoop):
            if getattr(loop.dataloader, 'persistent_workers', False):
                runner.logger.warning(
                    'ExactResumeHook: persistent dataloader workers carry their '
                    'augmentation RNG from epoch to epoch, and restarted '
                    'workers begin from their seed; the resumed run draws '
                    'other augmentations than an uninterrupted one (set '
                    'train_dataloader.persistent_workers=False for a '
                    'bit-exact resume)')
            steps = len(loop.dataloader)
            if steps and runner.iter % steps:
                runner.logger.warning(
                    f'ExactResumeHook: resuming iteration {runner.iter} in the '
                    f'middle of an epoch of {steps} iterations; mmengine\'s '
                    'EpochBasedTrainLoop restarts the epoch from its first '
                    'batch, so the run is not bit-equal to an uninterrupted one '
                    '(save checkpoints at epoch ends, or use '
                    'IterBasedTrainLoop)')
        # EpochBasedTrainLoop: restored in before_train_epoch

    def before_train_epoch(self, runner) -> None:
        if self._pending is not None and isinstance(runner.train_loop,
                                                    EpochBasedTrainLoop):
            self._restore(runner)

    # ------------------------------------------------------------ validation
    def before_val(self, runner) -> None:
        self._val_state = get_rng_state()

    def after_val(self, runner) -> None:
        if self._val_state is not None:
            set_rng_state(self._val_state)
            self._val_state = None
