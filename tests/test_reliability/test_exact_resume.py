"""A run killed with SIGKILL and restarted with ``--resume`` continues
exactly: its per-iteration losses equal those of an uninterrupted run (fp32,
CPU, |diff| <= 1e-6; in practice they are bit-equal).

What makes it exact: weights, optimizer, LR schedule and iteration counter
(mmengine), the masking ratio (a pure function of the iteration), the data
order and each dataloader worker's augmentation RNG (mmengine's
IterBasedTrainLoop re-draws the batches already trained on, with workers seeded
from the config seed), and the training process's torch / numpy / python RNG
(token sampling, dropout): ``ExactResumeHook`` saves them in every checkpoint
and restores them right after that fast-forward.
"""
import re
import subprocess

import pytest

pytestmark = pytest.mark.slow

KEYS = ('loss', 'loss_feat', 'loss_rel', 'mask_ratio', 'lr')


def test_sigkill_then_resume_equals_uninterrupted(repo_root, tiny, tmp_path,
                                                  rel, reference_run):
    _, ref = reference_run
    work = tmp_path / 'work'
    from mmhybrid.testing.preemption_runs import interrupt
    interrupt(
        tiny.ref_cmd(work),
        tmp_path / 'killed.log',
        repo_root,
        rel.env(),
        # killed mid-training: after the first checkpoint (iter_4) and at
        # least one more iteration, well before the end (12)
        until=lambda: (work / 'iter_4.pth').exists() and max(
            rel.scalars(work), default=0) >= 5,
        what='checkpoint iter_4 and iteration 5')
    killed_at = max(rel.scalars(work))
    assert 5 <= killed_at < 12
    for it, r in rel.scalars(work).items():  # same run so far
        assert r['loss'] == ref[it]['loss']

    proc = subprocess.run(
        tiny.ref_cmd(work, args=['--resume']),
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=600,
        env=rel.env())
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    m = re.search(
        r'Auto resumed from the latest checkpoint \S*iter_(\d+)\.pth', out)
    assert m, out[-3000:]
    start = int(m.group(1))
    assert 4 <= start <= killed_at
    assert 'ExactResumeHook: restored the RNG states saved at iteration ' \
        f'{start}' in out
    resumed = rel.scalars(work, latest_only=True)
    assert sorted(resumed) == list(range(start + 1, 13))
    for it, r in resumed.items():
        for k in KEYS:
            assert abs(r[k] - ref[it][k]) <= 1e-6, (it, k, r[k], ref[it][k])
