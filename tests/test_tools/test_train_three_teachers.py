"""Three teachers through ``tools/train.py``: two feature teachers (one of them
an mmpretrain ViT read by ZooTeacher) and a relation teacher; every loss term
logged on its own; a run resumed from its first epoch's checkpoint continues
exactly as the uninterrupted one."""
import subprocess
import sys

import pytest

from mmhybrid.testing import save_zoo_demo_teacher
from mmhybrid.utils.scalars import read_scalars, scalars_by_iter

CONFIG = ('configs/demo/'
          'hybrid-distill_vit-tiny-p8_3-teachers_1xb32-4e_shapes.py')
TERMS = ('loss_feat_sup', 'loss_feat_dino', 'loss_rel_mae')


def _train(repo_root, work_dir, data, teachers, epochs, resume=None):
    sup, dino, mae = teachers
    cmd = [
        sys.executable, 'tools/train.py', CONFIG, '--work-dir',
        str(work_dir)
    ] + (['--resume', resume] if resume else []) + [
        '--cfg-options', f'train_dataloader.dataset.data_root={data}',
        f'model.teachers.sup.teacher.checkpoint={sup}',
        f'model.teachers.dino.teacher.checkpoint={dino}',
        f'model.teachers.mae.teacher.checkpoint={mae}',
        f'train_cfg.max_epochs={epochs}', 'param_scheduler.1.end=2',
        'train_dataloader.batch_size=8', 'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'custom_hooks.1.interval=100'
    ]
    out = subprocess.run(
        cmd, cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


@pytest.mark.slow
def test_three_teachers_train_log_each_term_and_resume_exactly(
        repo_root, shapes_imagenet, demo_teachers, tmp_path):
    dino = save_zoo_demo_teacher(str(tmp_path / 'dino.pth'), 3)
    teachers = (demo_teachers[0], dino, demo_teachers[1])
    whole = tmp_path / 'whole'
    log = _train(repo_root, whole, shapes_imagenet, teachers, 2)
    # the ZooTeacher read every tensor of its mmpretrain file
    assert 'dino.pth' in log
    ref = scalars_by_iter(str(whole), 'loss')
    assert sorted(ref) == list(range(1, 17))  # 2 epochs of 64 / 8 images
    for it, rec in ref.items():
        for term in TERMS:
            assert term in rec and rec[term] > 0, (it, term)
        assert rec['loss'] == pytest.approx(
            sum(rec[t] for t in TERMS), rel=1e-4)
    # every teacher's attention, through its own forward, once; the
    # student's against the relation teacher at each epoch end
    logged = {}
    for rec in read_scalars(str(whole)):
        logged.update(rec)
    for name in ('sup', 'dino', 'mae', 'student'):
        for metric in ('distance', 'spread', 'nmi'):
            assert f'attn_{metric}/{name}_layer00' in logged, (name, metric)
    assert 'attn_collapse/nmi_ratio' in logged
    assert "x mae's NMI" in log
    # resumed from the first epoch's checkpoint (student, its two necks,
    # optimizer, RNG), in a new folder: the second epoch is the same
    part = tmp_path / 'part'
    log = _train(
        repo_root,
        part,
        shapes_imagenet,
        teachers,
        2,
        resume=str(whole / 'epoch_1.pth'))
    assert 'resumed' in log.lower()
    got = scalars_by_iter(str(part), 'loss')
    assert sorted(got) == list(range(9, 17))
    for it in range(9, 17):
        for term in TERMS + ('loss', 'mask_ratio'):
            assert got[it][term] == ref[it][term], (it, term)
