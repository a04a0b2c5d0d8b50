"""``tools/check_teachers.py`` on the demo config with tiny teacher files."""
import re
import subprocess
import sys

import pytest

DEMO = 'configs/demo/hybrid-distill_vit-tiny-p8_1xb32-300i_shapes.py'


def _run(repo_root, *args):
    proc = subprocess.run(
        [sys.executable, 'tools/check_teachers.py', DEMO, *args],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_reports_files_layout_and_blocks_per_step(repo_root, demo_teachers):
    tc, tm = demo_teachers
    out = _run(repo_root, '--cfg-options',
               f'model.teacher_feat.checkpoint={tc}',
               f'model.teacher_rel.checkpoint={tm}')
    for path in (tc, tm):
        # the demo teacher files hold a classifier head besides the backbone
        assert (f'{path} (mmpretrain layout): ignored 2 tensors that are not '
                'part of the ViT encoder: head.layers.head.bias, '
                'head.layers.head.weight') in out
        assert f'from {path} (mmpretrain layout)' in out
    # demo: 4-block teachers, pairs (0, 0), (1, 1), (2, 2)
    assert re.search(
        r'teacher_feat: .*\n  input \(64, 64\) -> \(64, 64\) '
        r'\(resize: none\)\n  per step: blocks 0\.\.3 of 4 \+ '
        r'final norm; returns last tokens after the final norm, '
        r'last-block \[CLS\] attention', out)
    assert re.search(
        r'teacher_rel: .*\n.*\n  per step: blocks 0\.\.2 of 4, '
        r'no final norm; returns q/k of blocks \[0, 1, 2\]', out)


@pytest.mark.slow  # two tiny models timed in a subprocess: ~20 s on 2 cores
def test_times_teachers_as_asked_and_in_full(repo_root):
    out = _run(repo_root, '--no-load', '--time', '2', '--warmup', '0')
    last = out.strip().splitlines()[-1]
    assert last.startswith('TEACHER_TIME '), last
    fields = dict(kv.split('=') for kv in last.split()[1:])
    assert set(fields) == {
        'asked_ms', 'full_ms', 'asked_over_full', 'rel_asked_over_full'
    }
    assert all(float(v) > 0 for v in fields.values())
    assert '| teacher_rel |' in out


THREE = 'configs/demo/hybrid-distill_vit-tiny-p8_3-teachers_1xb32-4e_shapes.py'


@pytest.mark.slow  # three tiny teachers built, loaded and timed: ~25 s
def test_reports_and_times_every_teacher_of_a_teachers_config(
        repo_root, demo_teachers, tmp_path):
    from mmhybrid.testing import save_zoo_demo_teacher
    dino = save_zoo_demo_teacher(str(tmp_path / 'dino.pth'), 3)
    proc = subprocess.run([
        sys.executable, 'tools/check_teachers.py', THREE, '--time', '1',
        '--warmup', '0', '--cfg-options',
        f'model.teachers.sup.teacher.checkpoint={demo_teachers[0]}',
        f'model.teachers.dino.teacher.checkpoint={dino}',
        f'model.teachers.mae.teacher.checkpoint={demo_teachers[1]}'
    ],
                          cwd=repo_root,
                          capture_output=True,
                          text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert re.search(
        r'dino: .*dino\.pth\n  input \(64, 64\) -> \(56, 56\) \(resize: '
        r'bicubic, antialiased\)\n  per step: blocks 0\.\.3 of 4 \+ final '
        r'norm; returns last tokens after the final norm, last-block \[CLS\] '
        r"attention\n  ZooTeacher 'VisionTransformer', ViT .*; grid \(8, 8\) "
        r"tokens, the student's \(8, 8\): aligned\n  teaches: features \(all "
        r'tokens\) through DistillProjectionNeck -> loss_feat_dino; token '
        r'ranking', out), out
    assert re.search(
        r'mae: .*\n.*\n  per step: blocks 0\.\.2 of 4, no final norm; .*\n'
        r'  FrozenTeacher HybridViT, mmpretrain file layout; .*\n  teaches: '
        r'relations, student<-teacher blocks 0<-0, 1<-1, 2<-2 -> '
        r'loss_rel_mae', out), out
    assert 'teaches: features (all tokens) through DistillProjectionNeck -> '\
        'loss_feat_sup\n' in out
    for name in ('sup', 'dino', 'mae'):
        assert f'| {name} |' in out
    assert out.strip().splitlines()[-1].startswith('TEACHER_TIME ')
