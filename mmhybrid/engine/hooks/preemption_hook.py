"""Checkpoint and leave when the scheduler asks (SIGTERM / SIGUSR1), and save
resumable checkpoints inside long epochs.

Slurm sends SIGTERM to every process of a job it pre-empts or cancels (and the
signal a job asked for with ``--signal``, e.g. ``USR1@120``, before its time
limit); torchrun forwards SIGTERM to its workers. On any of them this hook lets
every rank finish the iteration it is in, agrees on the stop across ranks, has
rank 0 write a checkpoint at that iteration (atomic, with every rank's RNG
states and, in epoch-based loops, the position in the epoch:
``ExactResumeHook``), points ``last_checkpoint`` at it and ends the process
with :data:`REQUEUE_EXIT_CODE`. ``tools/slurm_train.sh`` turns that status into
``scontrol requeue``; the requeued job (or any start with ``--resume``)
continues from the checkpoint as if never stopped.

The stop has a deadline it cannot move: torchrun sends SIGKILL 30 s after the
SIGTERM it forwards, Slurm ``KillWait`` seconds (30 by default) after its
SIGTERM. Inside that window every rank finishes its iteration and rank 0
writes and fsyncs the checkpoint (about 1 GB for ViT-B with AdamW's state,
3.6 GB for ViT-L). The hook cannot make the file system faster; it measures
(each of its saves is timed), warns ahead (a periodic save that took over
half the window), warns while a stop is running late (a timer at the
window's end, before a SIGKILL that no process can report) and says at the
end how long the stop took. A signal that arrives while a checkpoint is
being written stops the run with that checkpoint, without another iteration
and another save. See ``docs/gpu.md`` for the launcher settings.
"""
import os
import signal
import threading
import time
from typing import Optional, Sequence

import torch
from mmengine.dist import (barrier, get_comm_device, get_dist_info,
                           is_distributed)
from mmengine.hooks import CheckpointHook, Hook
from mmpretrain.registry import HOOKS

from ...utils.checkpoint import write_atomic
from .exact_resume_hook import ExactResumeHook, checkpoint_due

DATA_BATCH = Optional[dict]

#: Exit status of a run stopped by a signal after its checkpoint was written
#: (sysexits' EX_TEMPFAIL: "try again later"); the launch scripts requeue on
#: it.
REQUEUE_EXIT_CODE = 75

#: Environment variable naming a file rank 0 writes (the checkpoint's path)
#: after a signal stop; ``tools/slurm_train.sh`` sets it.
STOP_FILE_ENV = 'MMHYBRID_STOP_FILE'


class TrainingPreempted(SystemExit):
    """Raised on every rank after the pre-emption checkpoint is written; ends
    the process with :data:`REQUEUE_EXIT_CODE` unless caught.

    From the stop on, the process ignores the stop signals (see
    :meth:`PreemptionHook._leave`); ``signal_handlers`` holds the handlers
    they had before training, for a caller that catches this and carries on.

    Args:
        code (int): The exit status.
        signal_handlers (dict, optional): Signal number -> its handler before
            training. Defaults to None (none recorded).
    """

    def __init__(self, code: int, signal_handlers: Optional[dict] = None):
        super().__init__(code)
        self.signal_handlers = dict(signal_handlers or {})


@HOOKS.register_module()
class PreemptionHook(Hook):
    """Stop on SIGTERM / SIGUSR1 with a checkpoint; mid-epoch checkpoints.

    ``tools/train.py`` adds it to every run; configs may list it to set its
    options, e.g.
    ``custom_hooks=[dict(type='PreemptionHook', interval=1000)]``.

    Args:
        interval (int): Also save a checkpoint every ``interval`` iterations
            (0: only on a signal). Epoch-based configs use it for mid-epoch
            checkpoints, which ``ExactResumeHook`` resumes exactly; the epoch
            checkpoints of ``CheckpointHook`` are kept as they are.
            Defaults to 0.
        max_keep_ckpts (int): How many of this hook's own checkpoints
            (``iter_*.pth``) to keep; older ones are removed (never those of
            ``CheckpointHook``). Defaults to 1.
        signals (Sequence[str]): The signals that stop the run.
            Defaults to ``('SIGTERM', 'SIGUSR1')``.
        exit_code (int): The exit status after a signal stop.
            Defaults to :data:`REQUEUE_EXIT_CODE` (75).
        stop_window (float): Seconds between the stop signal and the
            launcher's SIGKILL (torchrun: 30; Slurm: ``KillWait``, 30 by
            default; with ``sbatch --signal=USR1@120``: 120). Only measured
            against, never waited for: a WARNING when a save took over half of
            it, while a stop is still saving at its end, and when a stop took
            longer. Defaults to 30.

    Priority ``LOWEST``: it looks at the signal after ``CheckpointHook`` has
    saved whatever it saves at this iteration (then nothing is saved twice).
    Checking costs one all-reduce of one number per iteration in distributed
    runs (every rank must stop at the same iteration), on the job's own
    process group. With NCCL that reads a GPU number back, a host-device sync
    per iteration; the training step already has one (the gradient norm that
    clipping logs, ``NonFiniteLossHook``'s loss check), so it adds no stall.
    An earlier version kept the flag on a gloo group beside NCCL; a gloo
    group across nodes needs its own network settings
    (``GLOO_SOCKET_IFNAME``) or its creation hangs in ``before_train``, a
    risk the saved sync did not earn.
    """
    priority = 'LOWEST'

    def __init__(self,
                 interval: int = 0,
                 max_keep_ckpts: int = 1,
                 signals: Sequence[str] = ('SIGTERM', 'SIGUSR1'),
                 exit_code: int = REQUEUE_EXIT_CODE,
                 stop_window: float = 30.0) -> None:
        for name in signals:
            if not isinstance(
                    getattr(signal, str(name), None), signal.Signals):
                raise ValueError(f'PreemptionHook: signals={list(signals)!r}:'
                                 f' {name!r} is not a signal name such as '
                                 "'SIGTERM'")
        if int(interval) < 0:
            raise ValueError(f'PreemptionHook: interval={interval}: expected '
                             '0 (no periodic checkpoints) or a positive '
                             'number of iterations')
        if not float(stop_window) > 0:
            raise ValueError(f'PreemptionHook: stop_window={stop_window}: '
                             'expected the positive number of seconds '
                             'between the stop signal and the SIGKILL')
        self.stop_window = float(stop_window)
        self.interval = int(interval)
        self.max_keep_ckpts = int(max_keep_ckpts)
        self.signals = tuple(str(s) for s in signals)
        self.exit_code = int(exit_code)
        self._received: Optional[str] = None
        self._received_at: Optional[float] = None
        self._previous = {}
        self._logger = None
        self._late_timer: Optional[threading.Timer] = None
        self._slow_save_warned = False

    # ------------------------------------------------------------- signals
    def _on_signal(self, signum, frame) -> None:
        # only a flag (and a timer): the iteration in progress finishes first
        if self._received is None:
            self._received = signal.Signals(signum).name
            self._received_at = time.monotonic()
            self._late_timer = threading.Timer(self.stop_window,
                                               self._warn_late)
            self._late_timer.daemon = True
            self._late_timer.start()

    def _warn_late(self) -> None:
        # runs in the timer's thread while the main thread still works on
        # the stop: the last moment anything can be said before a SIGKILL
        if self._logger is not None:
            self._logger.warning(
                f'PreemptionHook: {self._received} received '
                f'{self.stop_window:g} s ago (stop_window) and the stop '
                'checkpoint is not written yet; if the launcher kills the '
                'job now, it resumes from the previous checkpoint')

    def sample_guard_options(self, runner) -> dict:
        """Dataloader workers ignore the stop signals (see
        :func:`mmhybrid.datasets.sample_guard.install_sample_guard`)."""
        return dict(ignore_signals=self.signals)

    def before_train(self, runner) -> None:
        from ...datasets.sample_guard import install_sample_guard
        install_sample_guard(runner)
        self._logger = runner.logger
        for name in self.signals:
            sig = getattr(signal, name)
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def after_train(self, runner) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _stop_agreed(self) -> bool:
        """Whether any rank got a stop signal (all ranks agree)."""
        local = self._received is not None
        if not is_distributed():
            return local
        # on the backend's device: CUDA for NCCL, the CPU for gloo
        flag = torch.tensor([int(local)],
                            dtype=torch.int32,
                            device=get_comm_device())
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    # ---------------------------------------------------------------- saving
    def _out_dir(self, runner) -> str:
        for hook in runner.hooks:
            if isinstance(hook, CheckpointHook) and \
                    getattr(hook, 'out_dir', None):
                return hook.out_dir
        return runner.work_dir

    def _save(self, runner) -> str:
        for hook in runner.hooks:
            if isinstance(hook, ExactResumeHook):
                hook.collect_states(runner)  # every rank, before rank 0 saves
        out_dir = self._out_dir(runner)
        filename = f'iter_{runner.iter + 1}.pth'
        start = time.monotonic()
        runner.save_checkpoint(out_dir, filename, by_epoch=False)
        path = os.path.join(out_dir, filename)
        rank, _ = get_dist_info()
        if rank == 0:
            self._point_last_checkpoint(runner, path)
            self._remove_old(runner, path)
        barrier()
        seconds = time.monotonic() - start
        if seconds > self.stop_window / 2 and not self._slow_save_warned:
            self._slow_save_warned = True
            runner.logger.warning(
                f'PreemptionHook: saving {path} took {seconds:.1f} s, over '
                f'half of the {self.stop_window:g} s a stop has before the '
                'launcher\'s SIGKILL (stop_window); a stop may not finish in '
                'time: give the launcher a longer window (Slurm KillWait, '
                'sbatch --signal=USR1@120 with stop_window=120) or a faster '
                'work_dir')
        return path

    @staticmethod
    def _point_last_checkpoint(runner, path: str) -> None:
        # what `--resume auto` reads; replaced atomically, so a kill right
        # now leaves the old pointer or the new one
        write_atomic(
            os.path.join(runner.work_dir, 'last_checkpoint'),
            lambda f: f.write(path),
            mode='w')

    def _remove_old(self, runner, path: str) -> None:
        key = 'preemption_hook_ckpts'  # kept in the checkpoint's message hub
        kept = [p for p in runner.message_hub.get_info(key, []) if p != path]
        kept.append(path)
        while self.max_keep_ckpts > 0 and len(kept) > self.max_keep_ckpts:
            old = kept.pop(0)
            if os.path.exists(old):
                os.remove(old)
        runner.message_hub.update_info(key, kept)

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: DATA_BATCH = None,
                         outputs: Optional[dict] = None) -> None:
        stop = self._stop_agreed()
        due = self.interval > 0 and self.every_n_train_iters(
            runner, self.interval)
        if not (stop or due):
            return
        if checkpoint_due(runner, by_epoch=False):
            # CheckpointHook wrote iter_<n>.pth at this iteration already
            path = os.path.join(
                self._out_dir(runner), f'iter_{runner.iter + 1}.pth')
        else:
            path = self._save(runner)
        if not stop:
            # a signal that came while the checkpoint was being written: stop
            # with it now, not after another iteration and another save (every
            # rank is here: the save is on the same schedule on all of them)
            stop = self._stop_agreed()
            if not stop:
                return
        runner.logger.info(
            'PreemptionHook: '
            f'{self._received or "a stop signal on another rank"}'
            f' received; stopped after iteration {runner.iter + 1} with its '
            f'checkpoint {path}; exiting with status {self.exit_code} (the '
            'Slurm scripts requeue the job; restart with --resume to '
            'continue)')
        self._report_stop_time(runner)
        stop_file = os.environ.get(STOP_FILE_ENV)
        if stop_file and get_dist_info()[0] == 0:
            # srun (--kill-on-bad-exit) may kill rank 0 as another rank exits
            # first, and report that instead of this status: the launch
            # script reads this file too
            with open(stop_file, 'w') as f:
                f.write(path + '\n')
        self._leave()

    def _report_stop_time(self, runner) -> None:
        """Log how long the stop took on this rank (signal to checkpoint
        written); a WARNING when that exceeded ``stop_window``."""
        if self._late_timer is not None:
            self._late_timer.cancel()
        if self._received_at is None:
            return  # the signal reached another rank
        seconds = time.monotonic() - self._received_at
        msg = (f'PreemptionHook: the stop took {seconds:.1f} s from the '
               f'signal to the written checkpoint (stop_window '
               f'{self.stop_window:g} s)')
        if seconds > self.stop_window:
            runner.logger.warning(
                msg + '; a launcher that kills after stop_window seconds '
                'would have killed the job before it finished')
        else:
            runner.logger.info(msg)

    def _leave(self) -> None:
        """Ignore the stop signals, wait for every rank, end the process.

        Python resets its own signal handlers to the default while it shuts
        down, so a SIGTERM then kills the rank: torchrun sends one to the ranks
        still running as soon as the first has exited (srun likewise), and the
        rank that was slower to shut down would end by a signal instead of with
        the requeue status. The checkpoint is written; a second stop signal has
        nothing left to ask for.
        """
        previous = {}
        for name in self.signals:
            sig = getattr(signal, name)
            previous[sig] = self._previous.get(sig, signal.getsignal(sig))
            signal.signal(sig, signal.SIG_IGN)
        self._previous = {}
        if is_distributed():
            # no rank exits before every rank ignores the signals
            barrier()
            torch.distributed.destroy_process_group()
        raise TrainingPreempted(self.exit_code, previous)
