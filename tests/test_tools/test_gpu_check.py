"""The prepared GPU check, where no GPU is: its commands parse and pass the
preflight (``--dry-run``), and its own logic (signals, stop, resume, the
figures and verdicts it reads from the runs) works on the CPU with the tiny
epoch-based demo config (``--smoke``)."""
import importlib.util
import json
import os.path as osp
import subprocess
import sys

import pytest

SCRIPT = 'tools/speed/gpu_check.py'


def _run(repo_root, tmp_path, *args, timeout=900):
    out, work = tmp_path / 'out', tmp_path / 'work'
    proc = subprocess.run([
        sys.executable, SCRIPT, '--out',
        str(out), '--work',
        str(work), *args
    ],
                          cwd=repo_root,
                          capture_output=True,
                          text=True,
                          timeout=timeout)
    results = out / 'results.json'
    return proc, (json.loads(results.read_text())
                  if results.exists() else None), out


@pytest.mark.slow
def test_dry_run_checks_every_command(repo_root, tmp_path):
    proc, results, out = _run(repo_root, tmp_path, '--dry-run')
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    commands = [
        line for line in proc.stdout.splitlines()
        if line.startswith('[dry-run] ') and 'tools/train.py' in line
    ]
    # a: reference, stopped, resumed; b: two batches; c; d; f
    assert len(commands) == 8, log[-4000:]
    assert sum('--resume' in c for c in commands) == 1
    checked = [
        line for line in proc.stdout.splitlines() if line.startswith('  ok: ')
    ]
    assert len(checked) == 8
    assert any('hybrid_vitl.py, batch 128' in c for c in checked)
    assert any('fp16' in c and 'batch 64' in c for c in checked)
    # (e) ran on the CPU, all four modes finite
    modes = results['e']['results']
    assert set(modes) == {'bf16', 'bf16-stream', 'fp16', 'fp16-stream'}
    assert all(m['finite'] for m in modes.values())
    assert all(not r.get('problems') for r in results.values())
    assert len(list(out.iterdir())) <= 8  # what the device tool brings back


@pytest.mark.slow
def test_smoke_stops_resumes_and_reads_its_figures(repo_root, tmp_path):
    proc, results, _ = _run(repo_root, tmp_path, '--smoke', '--only', 'a,f')
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    a = results['a']
    assert a['problems'] == [], a
    assert a['reference']['iterations'] == 24  # 2 epochs of 12, last short
    assert a['stop']['exit_75'] and a['stop']['checkpoint']
    assert 10 <= a['stop']['stopped_after'] < 24
    assert a['stop']['stop_seconds'] is not None
    assert a['resume']['max_rel_loss_diff'] == 0.0  # bit-equal on the CPU
    f = results['f']
    assert f['problems'] == [] and f['both_exit_75'], f


def test_verdicts_name_what_failed(repo_root):
    spec = importlib.util.spec_from_file_location('gpu_check',
                                                  osp.join(repo_root, SCRIPT))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    verdict = module.verdict
    ok = dict(
        reference=dict(rc=0),
        stop=dict(exit_75=True, checkpoint=True),
        resume=dict(rc=0, resumed=True, max_rel_loss_diff=0.0))
    assert verdict('a', ok) == []
    bad = json.loads(json.dumps(ok))
    bad['stop']['exit_75'] = False
    bad['resume']['max_rel_loss_diff'] = 0.5
    assert verdict('a', bad) == [
        'the stopped rank did not exit 75',
        'resumed losses differ by 0.5 (> 0.001)'
    ]
    assert verdict('c', dict(
        rc=0, recompile_limit_hit=True)) == ['dynamo hit its recompile limit']
    assert verdict('b', dict(error='OSError: x')) == ['OSError: x']
    assert verdict('d', dict(skipped='10 s left')) == []


def test_unknown_section_is_one_error_line(repo_root, tmp_path):
    proc, _, _ = _run(repo_root, tmp_path, '--dry-run', '--only', 'a,z')
    assert proc.returncode == 2
    assert proc.stdout.strip().splitlines() == [
        "ERROR: --only a,z: unknown section(s) ['z']; expected some of "
        'a,b,c,d,e,f'
    ]
