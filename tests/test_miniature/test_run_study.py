"""`make study`'s script end to end in its --quick mode (CI)."""
import json
import os.path as osp
import subprocess
import sys

import pytest

from mmhybrid.utils.scalars import last_scalar

pytestmark = pytest.mark.slow

STUDENTS = ('feature_only', 'relation_only', 'hybrid', 'hybrid_no_mask',
            'hybrid_topk')
LABELS = [
    'feature-only', 'relation-only', 'hybrid', 'hybrid, no mask',
    'hybrid, top-k', 'Tc: MoCo v3', 'Tm: MAE', 'random init'
]


def test_study_quick(repo_root, tmp_path):
    work = tmp_path / 'study'
    proc = subprocess.run([
        sys.executable, 'tools/analysis/run_study.py', '--quick', '--work-dir',
        str(work)
    ],
                          cwd=repo_root,
                          capture_output=True,
                          text=True,
                          timeout=1500)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert 'ETA' in proc.stdout
    report = open(work / 'report.md').read()
    table = [ln for ln in report.splitlines() if ln.startswith('| ')]
    for label in LABELS:
        assert any(ln.startswith(f'| {label} |') for ln in table), label
    # students vary over the two seeds: mean ± std
    hybrid = next(ln for ln in table if ln.startswith('| hybrid |'))
    assert '±' in hybrid
    for png in ('attention_layers.png', 'accuracy.png'):
        assert osp.getsize(work / 'plots' / png) > 1000
        assert f'(plots/{png})' in report
    assert report.count('**holds**') + report.count(
        '**does not hold**') + report.count('**undecided**') == 3
    # the premise table (the teachers, per block) and the ablation's row
    assert '## The premise' in report
    assert any(
        ln.startswith('| Tc: MoCo v3 | head spread (px) |') for ln in table)
    assert any(ln.startswith('| hybrid, top-k - hybrid |') for ln in table)

    results = json.load(open(work / 'results.json'))
    assert results['seeds'] == [0, 1]
    runs = {(r['label'], r['seed']) for r in results['results']}
    for seed in (0, 1):
        for label in ('feature-only', 'relation-only', 'hybrid',
                      'hybrid, no mask', 'hybrid, top-k', 'random init'):
            assert (label, seed) in runs
    for r in results['results']:
        assert 0 <= r['probe'] <= 100 and 0 <= r['knn'] <= 100
        assert len(r['stats']['distance']) == 4  # layers x heads
        assert len(r['stats']['distance'][0]) == 3
        if r['run'].startswith(f"seed{r['seed']}_student"):
            assert 0 <= r['finetune'] <= 100
            assert r['rel_kl'] >= 0 and r['feat_dist'] >= 0
    assert [c[0][:3] for c in results['claims']] == ['(a)', '(b)', '(c)']
    assert set(results['premise']['checks']) and 'holds' in results['premise']
    # identical budget: every student ran the same number of iterations
    for seed in (0, 1):
        for name in STUDENTS:
            assert osp.isfile(work / f'seed{seed}' / f'student_{name}' /
                              'iter_12.pth')

    # the unmasked student never masked; the hybrid one ramps towards 0.5
    def last_ratio(name):
        return last_scalar(work / 'seed0' / f'student_{name}', 'mask_ratio')

    assert last_ratio('hybrid_no_mask') == 0.0
    assert last_ratio('hybrid') > 0.3  # logged at iter 10 of 12: 9/12 * 0.5
