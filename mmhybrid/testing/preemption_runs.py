"""Runs shared by the pre-emption tests (tests/test_reliability/
test_preemption.py, test_multinode.py, test_slurm.py): the epoch-based demo
config on the tests' tiny data, and one uninterrupted 2-rank reference run made
once per test session."""
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import time

EPOCH_CONFIG = 'configs/demo/hybrid-distill_vit-tiny-p8_1xb32-4e_shapes.py'
EPOCHS = 2
# 64 images: 8 iterations per epoch with one rank x 8 or two ranks x 4
ITERS = 16
KEYS = ('loss', 'loss_feat', 'loss_rel', 'mask_ratio', 'lr')


def options(data, teachers, batch=8, workers=1, persistent=True, extra=()):
    """``--cfg-options`` of a short run of the epoch-based demo config."""
    tc, tm = teachers
    return [
        '--cfg-options', f'train_dataloader.dataset.data_root={data}',
        f'model.teacher_feat.checkpoint={tc}',
        f'model.teacher_rel.checkpoint={tm}', f'train_cfg.max_epochs={EPOCHS}',
        f'param_scheduler.1.end={EPOCHS}',
        f'train_dataloader.batch_size={batch}',
        f'train_dataloader.num_workers={workers}',
        f'train_dataloader.persistent_workers={persistent}', *extra
    ]


def train_cmd(work_dir, opts, args=()):
    """One process (no launcher)."""
    return [
        sys.executable, 'tools/train.py', EPOCH_CONFIG, '--work-dir',
        str(work_dir), *args
    ] + list(opts)


def dist_cmd(work_dir, opts, nproc=2, args=()):
    """``tools/dist_train.sh CONFIG nproc``; NNODES / NODE_RANK / PORT come
    from the environment."""
    return [
        'bash', 'tools/dist_train.sh', EPOCH_CONFIG,
        str(nproc), '--work-dir',
        str(work_dir), *args
    ] + list(opts)


def children(pid):
    """Direct child pids of ``pid`` (torchrun's ranks)."""
    try:
        with open(f'/proc/{pid}/task/{pid}/children') as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def wait_until(pred, proc, timeout, what):
    deadline = time.time() + timeout
    while not pred():
        if proc.poll() is not None:
            raise AssertionError(f'the run ended before {what}')
        if time.time() > deadline:
            raise AssertionError(f'no {what} in {timeout} s')
        time.sleep(0.05)


def kill_group(proc):
    """The launch and everything it started (ranks, data workers)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def interrupt(cmd, log_path, cwd, env, until, what, send=None, timeout=400):
    """Run ``cmd`` in its own process group, its output in ``log_path``, until
    ``until()`` holds; then ``send(proc)`` (deliver the signals under test) and
    wait for the run to end, or, with no ``send``, SIGKILL the whole group.
    Nothing of the run is left running afterwards.

    Returns:
        tuple: The return code (``-9`` when killed) and the output.
    """
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True)
        try:
            wait_until(until, proc, timeout, what)
            if send is not None:
                send(proc)
                proc.wait(timeout=120)
        finally:
            kill_group(proc)
    with open(log_path) as f:
        return proc.returncode, f.read()


def two_rank_reference(base_dir, repo_root, data, teachers, env, scalars,
                       free_port):
    """An uninterrupted one-node 2-process run (dist_train.sh, gloo, batch 4
    per rank, one loader worker each); made once per session, in ``base_dir``.

    Returns (work dir, per-iteration records).
    """
    work = osp.join(str(base_dir), 'two_rank_reference')
    done = osp.join(work, 'DONE')
    if not osp.exists(done):
        proc = subprocess.run(
            dist_cmd(work, options(data, teachers, batch=4)),
            cwd=repo_root,
            capture_output=True,
            text=True,
            timeout=600,
            env=env(PYTHON=sys.executable, PORT=free_port()))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        open(done, 'w').close()
    recs = scalars(work)
    assert sorted(recs) == list(range(1, ITERS + 1)), sorted(recs)
    return work, recs


def assert_same_losses(got, ref, iters):
    """Bit-equal per-iteration records (CPU, fp32)."""
    assert sorted(got) == list(iters), sorted(got)
    for it in iters:
        for k in KEYS:
            assert got[it][k] == ref[it][k], (it, k, got[it][k], ref[it][k])


def stop_report(out, sig):
    """``(iteration, checkpoint path)`` of PreemptionHook's stop line for
    signal ``sig`` (e.g. ``'SIGTERM'``) in a run's output; fails without it."""
    m = re.search(
        rf'PreemptionHook: {sig} received; stopped after iteration (\d+) '
        r'with its checkpoint (\S+); exiting with status 75', out)
    assert m, out[-4000:]
    return int(m.group(1)), m.group(2)
