"""The benchmark scripts the READMEs quote, run for real on tiny settings
(CPU).

Only that they run and print well-formed, plausible figures is checked here; no
timing is asserted.
"""
import math
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

DEMO = 'configs/demo/hybrid-distill_vit-tiny-p8_1xb32-300i_shapes.py'
THREE = 'configs/demo/hybrid-distill_vit-tiny-p8_3-teachers_1xb32-4e_shapes.py'


def _run(repo_root, args, timeout=600):
    proc = subprocess.run([sys.executable, *args],
                          cwd=repo_root,
                          capture_output=True,
                          text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _last_line_fields(out, prefix):
    last = out.strip().splitlines()[-1]
    assert last.startswith(prefix + ' '), last
    return dict(kv.split('=') for kv in last.split()[1:])


def test_pretrain_speed_runs_every_measurement(repo_root):
    out = _run(repo_root, [
        'tools/speed/pretrain_speed.py', DEMO, '--device', 'cpu',
        '--batch-size', '2', '--iters', '10', '--warmup', '1'
    ])
    for row in ('step keep=1', 'step keep=0.5', 'student fwd+bwd keep=0.5',
                'teacher_feat fwd', 'teacher_rel fwd', 'naive step (keep=1)',
                'mmpretrain MILAN step'):
        assert re.search(rf'^\| {re.escape(row)} \| [0-9.]+ \|', out,
                         re.M), row
    ratios = _last_line_fields(out, 'RATIOS')
    assert set(ratios) == {
        'step_over_parts', 'keep05_over_keep10', 'naive_over_step',
        'milan_over_step'
    }
    for name, value in ratios.items():
        value = float(value)
        assert math.isfinite(value) and value > 0, (name, value)


def test_pretrain_speed_rejects_too_few_iterations(repo_root):
    proc = subprocess.run([
        sys.executable, 'tools/speed/pretrain_speed.py', DEMO, '--device',
        'cpu', '--iters', '3'
    ],
                          cwd=repo_root,
                          capture_output=True,
                          text=True,
                          timeout=300)
    assert proc.returncode != 0
    assert '--iters must be >= 10' in proc.stderr


def test_pretrain_speed_refuses_a_teachers_config(repo_root):
    """The plain reference step covers the two-teacher form only: a
    ``model.teachers`` config gets one line saying so, before any build."""
    proc = subprocess.run([
        sys.executable, 'tools/speed/pretrain_speed.py', THREE, '--device',
        'cpu'
    ],
                          cwd=repo_root,
                          capture_output=True,
                          text=True,
                          timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        f'pretrain_speed: {THREE} sets model.teachers (sup, dino, mae); this '
        'tool covers the two-teacher form (model.teacher_feat + '
        'model.teacher_rel), as its plain reference step '
        '(mmhybrid/testing/reference.py) does'
    ]


def test_dataloader_speed_on_the_flagship_pipeline(repo_root, tmp_path):
    out = _run(repo_root, [
        'tools/speed/dataloader_speed.py', 'configs/hybrid_vitb.py',
        '--cache-dir',
        str(tmp_path / 'jpegs'), '--num-images', '12', '--image-size',
        '120x90', '--batch-size', '4', '--batches', '3', '--workers', '0,1',
        '--step-images-per-s', '100'
    ])
    # the flagship's own pipeline ran (mmpretrain::-based config: the scoped
    # collate_fn is resolved), over the generated JPEGs
    assert ('LoadImageFromFile -> RandomResizedCrop -> RandomFlip -> '
            'PackInputs' in out)
    assert '12 files' in out
    fields = _last_line_fields(out, 'LOADER')
    per_worker = float(fields['images_per_s_per_worker'])
    need = int(fields['workers_for_step'])
    assert per_worker > 0
    assert need == math.ceil(100 / per_worker)


def test_dataloader_speed_rejects_a_folder_without_train(repo_root, tmp_path):
    proc = subprocess.run([
        sys.executable, 'tools/speed/dataloader_speed.py',
        'configs/hybrid_vitb.py', '--data',
        str(tmp_path)
    ],
                          cwd=repo_root,
                          capture_output=True,
                          text=True,
                          timeout=300)
    assert proc.returncode != 0
    assert 'train/' in proc.stderr and str(tmp_path) in proc.stderr
