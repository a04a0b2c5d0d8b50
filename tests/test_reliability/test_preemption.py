"""Pre-emption-safe training, tested with real processes on the epoch-based
demo config (``PreemptionHook`` saves a mid-epoch checkpoint every 3
iterations; 8 iterations per epoch, 2 epochs).

* SIGKILL inside an epoch, resume from the mid-epoch checkpoint: the loss
  curve is bit-equal to an uninterrupted run's, with persistent dataloader
  workers (and the uninterrupted reference uses non-persistent ones: per-sample
  augmentation seeds make the worker lifecycle irrelevant).
* SIGTERM to both ranks of a 2-process gloo run (as Slurm sends it): each rank
  finishes its iteration, rank 0 writes the checkpoint of that iteration, both
  exit with the requeue status 75, and ``--resume`` continues bit for bit.
* After the stop, further stop signals (torchrun's SIGTERM to the ranks still
  shutting down) leave the requeue status as it is.
"""
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def pr():
    from mmhybrid.testing import preemption_runs
    return preemption_runs


def _resumed_from(out):
    m = re.search(
        r'Auto resumed from the latest checkpoint \S*iter_(\d+)\.pth', out)
    assert m, out[-3000:]
    return int(m.group(1))


@pytest.mark.parametrize(
    'persistent', [False, True], ids=['workers', 'persistent-workers'])
def test_sigkill_mid_epoch_resume_equals_uninterrupted(persistent, repo_root,
                                                       shapes_imagenet,
                                                       demo_teachers, tmp_path,
                                                       rel, pr):
    opts = dict(data=shapes_imagenet, teachers=demo_teachers, workers=2)
    ref_work = tmp_path / 'reference'
    proc = subprocess.run(
        pr.train_cmd(ref_work, pr.options(persistent=False, **opts)),
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=600,
        env=rel.env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ref = rel.scalars(ref_work)
    assert sorted(ref) == list(range(1, pr.ITERS + 1))

    work = tmp_path / 'work'
    pr.interrupt(
        pr.train_cmd(work, pr.options(persistent=persistent, **opts)),
        tmp_path / 'killed.log',
        repo_root,
        rel.env(),
        # inside epoch 2, after its mid-epoch checkpoint at iteration 12
        until=lambda: (work / 'iter_12.pth').exists() and max(
            rel.scalars(work), default=0) >= 13,
        what='mid-epoch checkpoint of epoch 2')
    killed_at = max(rel.scalars(work))
    assert 13 <= killed_at < pr.ITERS
    # (persistent) workers drew the same samples and augmentations as the
    # reference's
    pr.assert_same_losses(rel.scalars(work), ref, range(1, killed_at + 1))

    proc = subprocess.run(
        pr.train_cmd(
            work, pr.options(persistent=persistent, **opts),
            args=['--resume']),
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=600,
        env=rel.env())
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    start = _resumed_from(out)
    assert start in (12, 15), start  # a mid-epoch checkpoint, not epoch_1
    assert f'ExactResumeHook: resuming epoch 2 at batch {start - 8} of 8' \
        in out, out[-3000:]
    resumed = rel.scalars(work, latest_only=True)
    pr.assert_same_losses(resumed, ref, range(start + 1, pr.ITERS + 1))
    # epoch checkpoints are kept next to the mid-epoch ones
    assert (work / 'epoch_2.pth').exists()


def test_sigterm_to_both_ranks_checkpoints_exits_75_and_resumes_exactly(
        repo_root, shapes_imagenet, demo_teachers, tmp_path_factory, tmp_path,
        rel, pr):
    _, ref = pr.two_rank_reference(tmp_path_factory.getbasetemp(), repo_root,
                                   shapes_imagenet, demo_teachers, rel.env,
                                   rel.scalars, rel.free_port)
    work = tmp_path / 'work'
    opts = pr.options(shapes_imagenet, demo_teachers, batch=4)

    def sigterm_to_each_rank(proc):  # as Slurm does
        ranks = pr.children(proc.pid)
        assert len(ranks) == 2, ranks
        for pid in ranks:
            os.kill(pid, signal.SIGTERM)

    _, out = pr.interrupt(
        pr.dist_cmd(work, opts),
        tmp_path / 'stopped.log',
        repo_root,
        rel.env(PYTHON=sys.executable, PORT=rel.free_port()),
        until=lambda: max(rel.scalars(work), default=0) >= 10,
        what='iteration 10',
        send=sigterm_to_each_rank)
    stopped, path = pr.stop_report(out, 'SIGTERM')
    assert 10 <= stopped < pr.ITERS and stopped % 8  # inside epoch 2
    # both ranks left with the requeue status (torchrun's failure summary)
    assert set(
        re.findall(r'rank\s*: (\d) \(local_rank: \d\)\s*exitcode\s*: 75',
                   out)) == {'0', '1'}, out[-3000:]
    # the run stopped right after that iteration, with its checkpoint
    assert max(rel.scalars(work)) == stopped
    ckpt = work / f'iter_{stopped}.pth'
    assert path == str(ckpt)
    meta = torch.load(ckpt, weights_only=True, map_location='cpu')
    assert meta['meta']['iter'] == stopped
    assert len(meta['rng_state']['states']) == 2  # both ranks' RNG states
    assert (work / 'last_checkpoint').read_text().endswith(ckpt.name)

    proc = subprocess.run(
        pr.dist_cmd(work, opts, args=['--resume']),
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=600,
        env=rel.env(PYTHON=sys.executable, PORT=rel.free_port()))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert _resumed_from(out) == stopped
    pr.assert_same_losses(
        rel.scalars(work, latest_only=True), ref,
        range(stopped + 1, pr.ITERS + 1))


def test_sigusr1_before_the_time_limit_checkpoints_and_exits_75(
        repo_root, shapes_imagenet, demo_teachers, tmp_path, rel, pr):
    """What ``sbatch --signal=USR1@120`` sends two minutes before the time
    limit: a one-process run stops after its iteration with that iteration's
    checkpoint and the status ``slurm_train.sh`` requeues on."""
    work = tmp_path / 'work'
    opts = pr.options(shapes_imagenet, demo_teachers, workers=2)
    returncode, out = pr.interrupt(
        pr.train_cmd(work, opts),
        tmp_path / 'stopped.log',
        repo_root,
        rel.env(),
        until=lambda: max(rel.scalars(work), default=0) >= 3,
        what='iteration 3',
        send=lambda proc: os.kill(proc.pid, signal.SIGUSR1))  # main process
    assert returncode == 75, out[-4000:]
    stopped, path = pr.stop_report(out, 'SIGUSR1')
    assert 3 <= stopped < pr.ITERS
    assert max(rel.scalars(work)) == stopped
    assert path == str(work / f'iter_{stopped}.pth')
    assert (work /
            'last_checkpoint').read_text().endswith(f'iter_{stopped}.pth')


def test_preemption_hook_rejects_bad_options():
    from mmhybrid.engine.hooks import PreemptionHook
    with pytest.raises(ValueError, match="'SIGFOO' is not a signal name"):
        PreemptionHook(signals=('SIGTERM', 'SIGFOO'))
    with pytest.raises(ValueError, match='interval=-1'):
        PreemptionHook(interval=-1)
    with pytest.raises(
            ValueError,
            match='stop_window=0: expected the '
            'positive number of seconds'):
        PreemptionHook(stop_window=0)


# A toy run that sends itself SIGTERM at its second iteration; what
# PreemptionHook does next needs no ViT.
_SELF_STOPPING_RUN = '''
import os, signal, sys
from mmengine.hooks import Hook
from mmengine.runner import Runner
from mmhybrid.engine.hooks import PreemptionHook
from mmhybrid.testing.toy_runner import toy_runner_cfg

class SigtermAtIteration2(Hook):
    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter + 1 == 2:
            os.kill(os.getpid(), signal.SIGTERM)

Runner(**toy_runner_cfg(sys.argv[1], iters=10**6, custom_hooks=[
    SigtermAtIteration2(), PreemptionHook()])).train()
'''


def test_stop_signals_while_shutting_down_keep_the_requeue_status(
        tmp_path, rel, pr):
    """torchrun (and srun) send SIGTERM to the ranks still running once the
    first has exited; Python resets its handlers to the default as it shuts
    down, so a rank caught there died of the signal instead of exiting 75.

    Here a run stopped by SIGTERM gets one every 2 ms from the moment it says
    it stopped until it is gone, and still exits 75.
    """
    proc = subprocess.Popen(
        [sys.executable, '-c', _SELF_STOPPING_RUN,
         str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=rel.env())
    out = []
    try:
        for line in proc.stdout:
            out.append(line)
            if 'PreemptionHook: SIGTERM received' in line:
                break
        sent = 0
        while proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            sent += 1
            time.sleep(0.002)
        out.append(proc.stdout.read())
    finally:
        proc.kill()
        proc.wait()
    log = ''.join(out)
    assert pr.stop_report(log, 'SIGTERM') == (2, str(tmp_path / 'iter_2.pth'))
    assert sent > 0
    assert proc.returncode == 75, f'{proc.returncode}: {log[-3000:]}'


def test_a_stopped_run_ignores_stop_signals_and_hands_back_the_old_handlers(
        tmp_path):
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    from mmhybrid.engine.hooks import PreemptionHook, TrainingPreempted
    from mmhybrid.testing.toy_runner import toy_runner_cfg

    class SigusrAtIteration2(Hook):

        def after_train_iter(self,
                             runner,
                             batch_idx,
                             data_batch=None,
                             outputs=None):
            if runner.iter + 1 == 2:
                os.kill(os.getpid(), signal.SIGUSR1)

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    runner = Runner(**toy_runner_cfg(
        tmp_path,
        iters=10,
        custom_hooks=[SigusrAtIteration2(),
                      PreemptionHook()]))
    try:
        with pytest.raises(TrainingPreempted) as stop:
            runner.train()
        assert stop.value.code == 75
        assert (tmp_path / 'iter_2.pth').is_file()
        for sig in before:
            assert signal.getsignal(sig) == signal.SIG_IGN, sig
        assert stop.value.signal_handlers == before
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _signal_at(at: int, sig: int = signal.SIGTERM):
    """A hook that sends ``sig`` to this process after iteration ``at``."""
    from mmengine.hooks import Hook

    class SignalAt(Hook):

        def after_train_iter(self,
                             runner,
                             batch_idx,
                             data_batch=None,
                             outputs=None):
            if runner.iter + 1 == at:
                os.kill(os.getpid(), sig)

    return SignalAt()


def _train_until_stopped(runner):
    """``runner.train()`` until its PreemptionHook stops it; the process's
    stop-signal handlers are put back afterwards."""
    from mmhybrid.engine.hooks import TrainingPreempted
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        with pytest.raises(TrainingPreempted):
            runner.train()
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _toy_runner(tmp_path, hooks, name):
    from mmengine.runner import Runner

    from mmhybrid.testing.toy_runner import toy_runner_cfg

    # an experiment_name of its own: runners made in the same second would
    # share one logger, and so one log file
    return Runner(**toy_runner_cfg(
        tmp_path,
        iters=10,
        custom_hooks=hooks,
        experiment_name=f'{name}_{id(tmp_path)}'))


def _log_of(runner) -> str:
    import glob
    files = glob.glob(osp.join(runner.log_dir, '*.log'))
    assert len(files) == 1, files
    with open(files[0]) as f:
        return f.read()


def _slow_saves(runner, seconds, signal_during=None):
    """Make ``runner``'s saves take ``seconds``; send ``signal_during`` to this
    process in the middle of the first one (as Slurm's SIGTERM may arrive while
    a 1 GB checkpoint is being written)."""
    save = runner.save_checkpoint
    sent = []

    def slow(*args, **kwargs):
        time.sleep(seconds / 2)
        if signal_during is not None and not sent:
            sent.append(runner.iter + 1)
            os.kill(os.getpid(), signal_during)
        time.sleep(seconds / 2)
        return save(*args, **kwargs)

    runner.save_checkpoint = slow
    return sent


def test_a_signal_during_a_save_stops_with_that_checkpoint(tmp_path):
    """SIGTERM arriving while the periodic checkpoint is written: the run stops
    with that checkpoint at once, not after one more iteration and a second
    save (which the launcher's SIGKILL may not wait for)."""
    from mmhybrid.engine.hooks import PreemptionHook
    runner = _toy_runner(tmp_path, [PreemptionHook(interval=3)], 'during')
    sent = _slow_saves(runner, 0.2, signal.SIGTERM)
    _train_until_stopped(runner)
    assert sent == [3]
    assert runner.iter + 1 == 3  # stopped in iteration 3's hooks
    assert sorted(p.name for p in tmp_path.glob('iter_*.pth')) == \
        ['iter_3.pth']
    assert (tmp_path / 'last_checkpoint').read_text().endswith('iter_3.pth')


def test_a_stop_that_outlasts_its_window_says_so(tmp_path):
    """A save longer than ``stop_window``: a WARNING ahead (a periodic save
    took over half the window), one while the stop is still saving at the
    window's end (before any SIGKILL) and one with the time it took."""
    from mmhybrid.engine.hooks import PreemptionHook
    runner = _toy_runner(
        tmp_path, [_signal_at(4),
                   PreemptionHook(interval=2, stop_window=0.5)], 'slow')
    _slow_saves(runner, 0.8)
    _train_until_stopped(runner)
    log = _log_of(runner)
    assert 'over half of the 0.5 s a stop has' in log
    assert 'SIGTERM received 0.5 s ago (stop_window) and the stop ' \
        'checkpoint is not written yet' in log
    took = re.search(r'the stop took ([0-9.]+) s from the signal', log)
    assert took and float(took.group(1)) >= 0.8
    assert 'would have killed the job before it finished' in log


def test_a_quick_stop_reports_its_time_without_a_warning(tmp_path):
    from mmhybrid.engine.hooks import PreemptionHook
    runner = _toy_runner(tmp_path, [_signal_at(2), PreemptionHook()], 'quick')
    _train_until_stopped(runner)
    log = _log_of(runner)
    assert re.search(
        r'the stop took [0-9.]+ s from the signal to the '
        r'written checkpoint \(stop_window 30 s\)', log)
    assert 'WARNING' not in log.split('the stop took')[1].split('\n')[0]
    assert 'not written yet' not in log
