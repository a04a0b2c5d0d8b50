"""`make study`'s script end to end in its --quick mode (CI)."""
import json
import os.path as osp
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_study_quick(repo_root, tmp_path):
    work = tmp_path / 'study'
    proc = subprocess.run(
        [sys.executable, 'tools/analysis/run_study.py', '--quick',
         '--work-dir', str(work)], cwd=repo_root, capture_output=True,
        text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = open(work / 'report.md').read()
    table = [ln for ln in report.splitlines() if ln.startswith('| ')]
    names = ['feature-only', 'relation-only', 'hybrid', 'hybrid, no mask',
             'Tc: supervised', 'Tm: MAE', 'random init']
    for name in names:
        assert any(ln.startswith(f'| {name} |') for ln in table), name
    for png in ('attention_per_head.png', 'attention_layers.png',
                'masking_schedule.png'):
        assert osp.getsize(work / 'plots' / png) > 1000
        assert f'(plots/{png})' in report
    results = json.load(open(work / 'results.json'))
    rows = {r['name']: r for r in results['rows']}
    assert len(rows) == 7
    for name in ('student_feature_only', 'student_relation_only',
                 'student_hybrid', 'student_hybrid_no_mask'):
        r = rows[name]
        assert 0 <= r['probe'] <= 100 and 0 <= r['finetune'] <= 100
        assert r['rel_kl'] >= 0 and r['feat_dist'] >= 0
    assert 0 <= rows['teacher_sup']['probe'] <= 100
    # identical budget: every student ran the same number of iterations
    for name in ('feature_only', 'relation_only', 'hybrid', 'hybrid_no_mask'):
        assert osp.isfile(work / f'student_{name}' / 'iter_12.pth')
    # the unmasked student never masked; the hybrid one ramps towards 0.5
    def last_ratio(name):
        files = sorted((work / f'student_{name}').glob('*/vis_data/scalars.json'))
        recs = [json.loads(line) for line in open(files[-1])]
        return [r['mask_ratio'] for r in recs if 'mask_ratio' in r][-1]
    assert last_ratio('hybrid_no_mask') == 0.0
    assert last_ratio('hybrid') > 0.3  # logged at iter 10 of 12: 9/12 * 0.5
    # one attention CSV per model, rows = layers x heads
    for name in rows:
        lines = open(work / 'attention' / name / 'attention_stats.csv').readlines()
        assert len(lines) == 1 + 4 * 3
