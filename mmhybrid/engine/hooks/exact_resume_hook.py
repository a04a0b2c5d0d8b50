"""Resume a killed run so that it continues bit for bit.

mmengine already restores weights, optimizer, schedulers, the iteration counter
and, for an iteration-based loop, the data order: it re-reads the batches that
were already trained on, so the sampler and every dataloader worker's
augmentation RNG are where they were. What it does not restore is the random
state of the training process itself: the token sampling of Hybrid Distillation
(``torch.rand``), dropout and drop path draw from torch's global RNG, which a
restarted process has re-seeded and advanced by model initialisation. This hook
stores the torch (CPU and current CUDA device), numpy and python RNG states of
every rank in each checkpoint and puts them back at the exact point of the
resumed run where the uninterrupted run stood after saving it: after the
dataloader fast-forward, before the first new batch is drawn.

It also makes validation RNG-neutral (states saved before and restored after
each validation), so a run that validates does not draw different training
randomness than one that does not, and a resumed run matches either way.

Epoch-based loops (``EpochBasedTrainLoop``) resume exactly in the middle of an
epoch too: a plain ``DefaultSampler`` becomes a
:class:`~mmhybrid.datasets.ResumableSampler` (same order), every sample's
augmentation is seeded from (sampler seed, epoch, position) inside the
dataloader workers (:class:`~mmhybrid.datasets.sample_guard.SampleGuard`), and
a checkpoint saved inside an epoch records the epoch's next batch and the
sampler's shuffling seed. The resumed run skips the batches already trained on
at the index level (nothing is re-read), starts the epoch at that batch and
restores the RNG states just before drawing it; persistent workers need no
history, since no sample depends on what its worker drew before. Mid-epoch
checkpoints come from ``PreemptionHook`` (every ``interval`` iterations, and on
SIGTERM / SIGUSR1).

Limits (each is logged as a warning when it applies):

* mmengine's ``IterBasedTrainLoop`` fast-forward re-reads (decodes and
  augments) every batch already trained on; that is what makes the data
  exact, and it costs data-loading time proportional to the resume point.
* ``EpochBasedTrainLoop`` with a sampler other than ``DefaultSampler`` /
  ``ResumableSampler`` resumes exactly at epoch ends only; a mid-epoch
  checkpoint restarts the epoch.
* A different world size or batch size than the saved run's restarts the epoch
  (mid-epoch), and a different world size gets rank 0's RNG state everywhere.
"""
import random
from types import MethodType
from typing import List, Optional

import numpy as np
import torch
from mmengine.dataset import DefaultSampler
from mmengine.dist import all_gather_object, get_dist_info
from mmengine.hooks import CheckpointHook, Hook
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
from mmpretrain.registry import HOOKS

from ...datasets.resumable_sampler import ResumableSampler
from ...datasets.sample_guard import install_sample_guard

DATA_BATCH = Optional[dict]


def get_rng_state() -> dict:
    """This process's RNG states, as tensors and plain values (loadable with
    ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    state = dict(
        torch=torch.get_rng_state(),
        numpy=dict(
            name=str(name),
            keys=torch.from_numpy(keys.astype(np.int64)),
            pos=int(pos),
            has_gauss=int(has_gauss),
            cached_gaussian=float(cached)),
        python=dict(
            version=int(version),
            state=torch.tensor(py_state, dtype=torch.int64),
            gauss_next=gauss_next),
        cuda=None)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state()
    return state


def _on_host(value):
    """``value`` as the RNG setters need it: a tensor on the CPU."""
    return value.cpu() if isinstance(value, torch.Tensor) else value


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`get_rng_state`.

    The states may come back on an accelerator: mmengine's ``Runner.resume``
    maps the whole checkpoint to the run's device (``map_location`` =
    ``get_device()``, i.e. ``cuda`` on a GPU node). torch's and CUDA's RNG
    setters take CPU ``ByteTensor`` s only and numpy needs host memory, so
    every tensor is brought to the CPU first, whatever the map location.
    """
    torch.set_rng_state(_on_host(state['torch']))
    n = state['numpy']
    np.random.set_state(
        (n['name'], _on_host(n['keys']).numpy().astype(np.uint32), n['pos'],
         n['has_gauss'], n['cached_gaussian']))
    p = state['python']
    random.setstate(
        (p['version'], tuple(int(v) for v in _on_host(p['state']).tolist()),
         p['gauss_next']))
    if state.get('cuda') is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(_on_host(state['cuda']))


def checkpoint_due(runner, by_epoch: bool) -> bool:
    """Whether a ``CheckpointHook`` of ``runner`` saves at this point (after
    this iteration, or after this epoch with ``by_epoch``)."""
    for hook in runner.hooks:
        if not isinstance(hook, CheckpointHook) or hook.by_epoch != by_epoch:
            continue
        if by_epoch:
            if hook.every_n_epochs(runner, hook.interval, hook.save_begin) \
                    or (hook.save_last and hook.is_last_train_epoch(runner)):
                return True
        elif hook.every_n_train_iters(
                runner, hook.interval,
                hook.save_begin) or (hook.save_last
                                     and hook.is_last_train_iter(runner)):
            return True
    return False


def _batch_size(loader) -> int:
    if loader.batch_size is not None:
        return loader.batch_size
    return loader.batch_sampler.batch_size


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


def _run_epoch_from(loop, start: int, restore) -> None:
    """``EpochBasedTrainLoop.run_epoch`` that begins at batch ``start``.

    mmengine's loop always enumerates an epoch from batch 0; this one is set on
    the loop instance for the one resumed epoch (then removed), so the hooks
    see the batch indices of the uninterrupted run. ``restore`` puts the RNG
    states back after the dataloader iterator is made (which draws from torch's
    RNG, as it did at the start of the uninterrupted epoch) and before the
    first new batch.
    """
    del loop.run_epoch  # later epochs: mmengine's own
    runner = loop.runner
    runner.call_hook('before_train_epoch')
    runner.model.train()
    batches = iter(loop.dataloader)
    restore()
    for idx, data_batch in enumerate(batches, start):
        loop.run_iter(idx, data_batch)
    runner.call_hook('after_train_epoch')
    loop._epoch += 1


@HOOKS.register_module()
class ExactResumeHook(Hook):
    """Save and restore the training RNG states (and, in epoch-based loops, the
    position in the epoch) with every checkpoint.

    ``tools/train.py`` adds it to every run; configs may list it explicitly
    (``custom_hooks=[dict(type='ExactResumeHook')]``).

    Priority ``LOW``: its ``after_train_iter``/``after_train_epoch`` run before
    ``CheckpointHook`` (``VERY_LOW``), so in a distributed run the states of
    all ranks are gathered before rank 0 writes the checkpoint. Other hooks
    that save (``PreemptionHook``) call :meth:`collect_states` on every rank
    first.
    """
    priority = 'LOW'

    def __init__(self) -> None:
        self._gathered: Optional[List[dict]] = None
        self._gathered_at: Optional[int] = None
        self._pending: Optional[dict] = None
        self._val_state: Optional[dict] = None
        self._next_batch = 0

    # ------------------------------------------------------------------ save
    def collect_states(self, runner) -> None:
        """Gather every rank's RNG states for a checkpoint rank 0 writes at
        this iteration (a collective: every rank calls it)."""
        _, world_size = get_dist_info()
        if world_size > 1 and self._gathered_at != runner.iter:
            self._gathered = all_gather_object(get_rng_state())
            self._gathered_at = runner.iter

    def _gather(self, runner, by_epoch: bool) -> None:
        # one process saves its own RNG state: nothing to gather, and no walk
        # over the hooks on every iteration
        if get_dist_info()[1] > 1 and checkpoint_due(runner, by_epoch):
            # every rank takes part; rank 0 writes them in
            # before_save_checkpoint
            self.collect_states(runner)

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: DATA_BATCH = None,
                         outputs: Optional[dict] = None) -> None:
        self._next_batch = batch_idx + 1
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
                    'ExactResumeHook: this checkpoint was not announced to '
                    'all ranks (saved outside CheckpointHook\'s schedule); it '
                    'holds the RNG state of rank 0 only')
            states = [get_rng_state()]
        meta = checkpoint.get('meta', {})
        step = meta.get('iter', runner.iter)
        saved = dict(iter=step, states=states)
        loop = runner.train_loop
        if isinstance(loop, EpochBasedTrainLoop):
            sampler = loop.dataloader.sampler
            saved['sampler_seed'] = getattr(sampler, 'seed', None)
            if meta.get('epoch', runner.epoch + 1) == runner.epoch:
                # saved inside the epoch (by iteration): where it goes on
                saved['position'] = dict(
                    epoch=runner.epoch,
                    next_batch=self._next_batch,
                    batch_size=_batch_size(loop.dataloader),
                    world_size=world_size)
        checkpoint['rng_state'] = saved

    # --------------------------------------------------------------- restore
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        saved = checkpoint.get('rng_state')
        meta = checkpoint.get('meta', {})
        if saved is None:
            self._pending = None
            return
        self._pending = dict(
            states=saved['states'],
            iter=int(meta.get('iter', -1)),
            sampler_seed=saved.get('sampler_seed'),
            position=saved.get('position'))

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
                    'rank gets rank 0\'s state (the run continues, but not '
                    'bit for bit)')
        set_rng_state(state)
        runner.logger.info(
            f'ExactResumeHook: restored the RNG states saved at iteration '
            f'{self._pending["iter"]}')
        self._pending = None

    def sample_guard_options(self, runner) -> dict:
        """Per-sample augmentation seeds in epoch-based loops (see
        :func:`mmhybrid.datasets.sample_guard.install_sample_guard`)."""
        loop = runner.train_loop
        if isinstance(loop, EpochBasedTrainLoop) and isinstance(
                loop.dataloader.sampler, DefaultSampler):
            return dict(seeded=True)
        return {}

    def _make_resumable(self, runner) -> bool:
        """Turn the epoch loop's plain ``DefaultSampler`` into a
        ``ResumableSampler``; whether the sampler can resume mid-epoch."""
        sampler = runner.train_loop.dataloader.sampler
        if type(sampler) is DefaultSampler:
            # the DataLoader refuses a new sampler once built; the subclass
            # adds behaviour, no state, so the built object changes class
            sampler.__class__ = ResumableSampler
        if isinstance(sampler, ResumableSampler):
            install_sample_guard(runner)
            loader = runner.train_loop.dataloader
            if loader.generator is None:
                # every new dataloader iterator draws its workers' base seed;
                # from torch's global RNG that draw shifts the training
                # randomness at each epoch start for non-persistent workers
                # only, and again whenever a resumed run restarts them. From
                # a private generator it shifts nothing (the per-sample seeds
                # make the workers' own seeds irrelevant)
                loader.generator = torch.Generator()
                loader.generator.manual_seed(int(sampler.seed))
            return True
        return False

    def before_train(self, runner) -> None:
        loop = runner.train_loop
        resumable = isinstance(loop, EpochBasedTrainLoop) and \
            self._make_resumable(runner)
        if self._pending is None:
            return
        if runner.iter != self._pending['iter'] or runner.iter == 0:
            # weights were loaded (load_from), not a resume: fresh randomness
            self._pending = None
            return
        if isinstance(loop, IterBasedTrainLoop):
            # IterBasedTrainLoop.run() re-draws runner.iter batches after
            # before_train_epoch; restore right after them
            loop.dataloader_iterator = _RestoreBeforeBatch(
                loop.dataloader_iterator, runner.iter,
                lambda: self._restore(runner))
        elif isinstance(loop, EpochBasedTrainLoop):
            self._resume_epoch(runner, resumable)
        # EpochBasedTrainLoop at an epoch end: restored in before_train_epoch

    def _resume_epoch(self, runner, resumable: bool) -> None:
        loop = runner.train_loop
        sampler = loop.dataloader.sampler
        seed = self._pending['sampler_seed']
        if seed is not None and getattr(sampler, 'seed', seed) != seed:
            # an unseeded run drew its shuffling seed at start; the resumed
            # run must shuffle as the saved one did
            sampler.seed = seed
        pos = self._pending['position']
        if pos is None:
            return
        steps = len(loop.dataloader)
        _, world_size = get_dist_info()
        batch_size = _batch_size(loop.dataloader)
        expected = pos['epoch'] * steps + pos['next_batch']
        problem = None
        if not resumable:
            problem = (f'the sampler ({type(sampler).__name__}) cannot start '
                       'an epoch in its middle (use DefaultSampler or '
                       'ResumableSampler)')
        elif (pos['world_size'], pos['batch_size']) != (world_size,
                                                        batch_size):
            problem = (f'the checkpoint was saved with {pos["world_size"]} '
                       f'rank(s) x batch {pos["batch_size"]}, this run has '
                       f'{world_size} x {batch_size}')
        elif expected != runner.iter:
            problem = (f'epoch {pos["epoch"]} batch {pos["next_batch"]} of '
                       f'{steps} is iteration {expected}, not the saved '
                       f'{runner.iter}')
        if problem is not None:
            runner.logger.warning(
                f'ExactResumeHook: resuming iteration {runner.iter} in the '
                f'middle of an epoch, but {problem}; the epoch restarts from '
                'its first batch, so the run is not bit-equal to an '
                'uninterrupted one')
            return
        sampler.start_at(pos['next_batch'] * batch_size)
        pending = self._pending
        self._pending = None  # not again in before_train_epoch

        def restore():
            self._pending = pending
            self._restore(runner)

        loop.run_epoch = MethodType(
            lambda lp: _run_epoch_from(lp, pos['next_batch'], restore), loop)
        runner.logger.info(
            f'ExactResumeHook: resuming epoch {pos["epoch"] + 1} at batch '
            f'{pos["next_batch"]} of {steps} (the sampler skips the '
            f'{pos["next_batch"] * batch_size} samples per rank before it)')

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
