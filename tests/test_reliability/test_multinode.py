"""Multi-node launches on one machine: ``tools/dist_train.sh`` with NNODES=2,
NODE_RANK 0 and 1 (one process each, gloo, rendezvous on 127.0.0.1).

* The two launches train exactly as one node with 2 processes: bit-equal
  per-iteration losses (the shared one-node reference run).
* A rank that dies (SIGKILL) takes both launches down within a minute, each
  with torchrun's failure summary naming the failed rank, instead of a hang.
"""
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def pr():
    from mmhybrid.testing import preemption_runs
    return preemption_runs


def _launch_two_nodes(pr, rel, repo_root, work, opts, logs):
    port = rel.free_port()
    procs = []
    for node_rank in (0, 1):
        env = rel.env(
            PYTHON=sys.executable,
            NNODES=2,
            NODE_RANK=node_rank,
            PORT=port,
            MASTER_ADDR='127.0.0.1')
        procs.append(
            subprocess.Popen(
                pr.dist_cmd(work, opts, nproc=1),
                cwd=repo_root,
                stdout=logs[node_rank],
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True))
    return procs


def test_two_single_process_nodes_equal_one_node_with_two_processes(
        repo_root, shapes_imagenet, demo_teachers, tmp_path_factory, tmp_path,
        rel, pr):
    _, ref = pr.two_rank_reference(tmp_path_factory.getbasetemp(), repo_root,
                                   shapes_imagenet, demo_teachers, rel.env,
                                   rel.scalars, rel.free_port)
    work = tmp_path / 'work'
    opts = pr.options(shapes_imagenet, demo_teachers, batch=4)
    logs = [open(tmp_path / f'node{i}.log', 'w') for i in (0, 1)]
    procs = _launch_two_nodes(pr, rel, repo_root, work, opts, logs)
    try:
        for p in procs:
            p.wait(timeout=600)
    finally:
        for p in procs:
            pr.kill_group(p)
        for f in logs:
            f.close()
    outs = [open(tmp_path / f'node{i}.log').read() for i in (0, 1)]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + \
        outs[1][-3000:]
    assert 'GPU number: 2' in outs[0], outs[0][-3000:]  # one world of two
    pr.assert_same_losses(rel.scalars(work), ref, range(1, pr.ITERS + 1))


def test_a_dying_rank_takes_both_launches_down_with_a_clear_message(
        repo_root, shapes_imagenet, demo_teachers, tmp_path, rel, pr):
    work = tmp_path / 'work'
    opts = pr.options(shapes_imagenet, demo_teachers, batch=4)
    logs = [open(tmp_path / f'node{i}.log', 'w') for i in (0, 1)]
    procs = _launch_two_nodes(pr, rel, repo_root, work, opts, logs)
    try:
        pr.wait_until(lambda: max(rel.scalars(work), default=0) >= 3, procs[0],
                      400, 'iteration 3')
        victim = pr.children(procs[1].pid)
        assert len(victim) == 1, victim
        killed = time.time()
        os.kill(victim[0], signal.SIGKILL)  # node 1's only rank
        for p in procs:
            p.wait(timeout=180)
        took = time.time() - killed
    finally:
        for p in procs:
            pr.kill_group(p)
        for f in logs:
            f.close()
    outs = [open(tmp_path / f'node{i}.log').read() for i in (0, 1)]
    assert all(p.returncode != 0 for p in procs), [p.returncode for p in procs]
    assert took < 120, took
    # node 1: torchrun names the killed rank and its signal
    assert 'ChildFailedError' in outs[1], outs[1][-3000:]
    assert 'SIGKILL' in outs[1], outs[1][-3000:]
    # node 0: its rank failed in the next collective, and torchrun says so
    assert 'ChildFailedError' in outs[0] or 'RendezvousClosedError' in \
        outs[0], outs[0][-3000:]
