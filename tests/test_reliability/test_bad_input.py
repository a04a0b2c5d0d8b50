"""Bad input fails before any training step, naming key and value.

Each case runs ``tools/train.py``'s ``main`` (in this process) on the tiny demo
config with one bad ``--cfg-options`` value and checks that it raises
:class:`ConfigError` whose message holds the config key and the value, and that
no iteration ran (the work dir has no log of one, no checkpoint).
"""
import os
import os.path as osp
import subprocess

import pytest

from mmhybrid.engine.preflight import ConfigError


def _no_iteration_ran(work_dir):
    if not osp.isdir(work_dir):
        return True
    for root, _, files in os.walk(work_dir):
        for f in files:
            if f.endswith('.pth') or f == 'scalars.json':
                return False
            if f.endswith('.log') and 'Iter(train)' in open(osp.join(
                    root, f)).read():
                return False
    return True


def _fails(run_train_inprocess, tiny, tmp_path, options, args=()):
    work = tmp_path / 'work'
    with pytest.raises(ConfigError) as info:
        run_train_inprocess(tiny.argv(work, 4, args=args, extra=options))
    assert _no_iteration_ran(work)
    return str(info.value)


def test_missing_teacher_file(run_train_inprocess, tiny, tmp_path):
    msg = _fails(run_train_inprocess, tiny, tmp_path,
                 ['model.teacher_feat.checkpoint=/nonexistent/clip_b16.pth'])
    assert "model.teacher_feat.checkpoint='/nonexistent/clip_b16.pth'" in msg
    assert 'file not found' in msg


def test_unreadable_teacher_file(run_train_inprocess, tiny, tmp_path):
    # a download cut short: the first half of a real teacher checkpoint
    data = open(tiny.teachers[1], 'rb').read()
    bad = tmp_path / 'mae_truncated.pth'
    bad.write_bytes(data[:len(data) // 2])
    msg = _fails(run_train_inprocess, tiny, tmp_path,
                 [f'model.teacher_rel.checkpoint={bad}'])
    assert f"model.teacher_rel.checkpoint='{bad}'" in msg
    assert 'truncated or corrupt' in msg


def test_teacher_file_is_a_directory(run_train_inprocess, tiny, tmp_path):
    msg = _fails(run_train_inprocess, tiny, tmp_path,
                 [f'model.teacher_rel.checkpoint={tmp_path}'])
    assert f"model.teacher_rel.checkpoint='{tmp_path}'" in msg
    assert 'not a file' in msg


def test_width_cannot_be_resplit(run_train_inprocess, tiny, tmp_path):
    # a 128-wide student (4 heads) cannot be re-split into Tm's 3 heads
    msg = _fails(run_train_inprocess, tiny, tmp_path, [
        'model.backbone.arch.embed_dims=128',
        'model.backbone.arch.num_heads=4', 'model.neck.in_channels=128'
    ])
    assert 'model.backbone.arch=' in msg and "'embed_dims': 128" in msg
    assert 'cannot be re-split into the 3 heads of model.teacher_rel' in msg


def test_layer_index_out_of_range(run_train_inprocess, tiny, tmp_path):
    msg = _fails(run_train_inprocess, tiny, tmp_path,
                 ['model.relation_pairs=[(0,0),(7,1)]'])
    assert 'model.relation_pairs[1]=(7, 1)' in msg
    assert 'student block 7 out of range [0, 4)' in msg


def test_teacher_layer_index_out_of_range(run_train_inprocess, tiny, tmp_path):
    msg = _fails(run_train_inprocess, tiny, tmp_path,
                 ['model.relation_pairs=[(0,4)]'])
    assert 'model.relation_pairs[0]=(0, 4)' in msg
    assert 'teacher block 4 out of range [0, 4)' in msg


def test_duplicate_layer_pairs(run_train_inprocess, tiny, tmp_path):
    msg = _fails(run_train_inprocess, tiny, tmp_path,
                 ['model.relation_pairs=[(0,0),(1,1),(0,0)]'])
    assert 'model.relation_pairs[2]=(0, 0): duplicate layer pair' in msg


@pytest.mark.parametrize('value', ['1.0', '-0.1'])
def test_mask_ratio_outside_range(run_train_inprocess, tiny, tmp_path, value):
    msg = _fails(run_train_inprocess, tiny, tmp_path,
                 [f'custom_hooks.0.final_ratio={value}'])
    assert f'custom_hooks[0].final_ratio={float(value)!r}' in msg
    assert 'mask ratio must be in [0, 1)' in msg


def test_model_mask_ratio_outside_range(run_train_inprocess, tiny, tmp_path):
    msg = _fails(run_train_inprocess, tiny, tmp_path, ['model.mask_ratio=1.5'])
    assert 'model.mask_ratio=1.5: mask ratio must be in [0, 1)' in msg


def test_keep_count_zero(run_train_inprocess, tiny, tmp_path):
    # 8 x 8 = 64 patch tokens: round(64 * 0.005) = 0 kept
    msg = _fails(run_train_inprocess, tiny, tmp_path,
                 ['custom_hooks.0.final_ratio=0.995'])
    assert 'custom_hooks[0].final_ratio=0.995' in msg
    assert "keeps zero of the student's 64 patch tokens" in msg


def test_image_size_not_divisible_by_patch(run_train_inprocess, tiny,
                                           tmp_path):
    msg = _fails(run_train_inprocess, tiny, tmp_path,
                 ['model.backbone.img_size=60'])
    assert 'model.backbone.img_size=60: not divisible by ' \
           'model.backbone.patch_size=8' in msg


def test_unknown_loss_name(run_train_inprocess, tiny, tmp_path):
    msg = _fails(run_train_inprocess, tiny, tmp_path,
                 ['model.loss_feat.loss_type=l3'])
    assert "model.loss_feat.loss_type='l3'" in msg
    assert "expected one of ('smooth_l1', 'mse', 'cosine')" in msg


def test_unknown_loss_type(run_train_inprocess, tiny, tmp_path):
    msg = _fails(run_train_inprocess, tiny, tmp_path,
                 ['model.loss_rel.type=AttentionKLLoss'])
    assert "model.loss_rel.type='AttentionKLLoss': not a registered loss" \
        in msg


def test_dataset_path_missing(run_train_inprocess, tiny, tmp_path):
    msg = _fails(run_train_inprocess, tiny, tmp_path,
                 ['train_dataloader.dataset.data_root=/nonexistent/imagenet'])
    assert "train_dataloader.dataset.data_root='/nonexistent/imagenet': " \
           'dataset folder not found' in msg


def test_dataset_prefix_missing(run_train_inprocess, tiny, tmp_path):
    msg = _fails(run_train_inprocess, tiny, tmp_path,
                 ['train_dataloader.dataset.data_prefix=training'])
    assert "train_dataloader.dataset.data_prefix='training': not found" in msg


def test_all_problems_reported_at_once(run_train_inprocess, tiny, tmp_path):
    msg = _fails(run_train_inprocess, tiny, tmp_path, [
        'model.relation_pairs=[(9,0)]', 'model.loss_rel.loss_type=js',
        'train_dataloader.dataset.data_root=/nonexistent'
    ])
    assert 'relation_pairs[0]' in msg and 'loss_rel.loss_type' in msg
    assert 'data_root' in msg


@pytest.mark.slow
def test_cli_exit_status_and_one_line_error(repo_root, tiny, tmp_path):
    """Through the real command line: exit 1, one ERROR line, no traceback."""
    cmd = tiny.cmd(
        tmp_path / 'w',
        4,
        extra=['train_dataloader.dataset.data_root=/nonexistent'])
    proc = subprocess.run(
        cmd, cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert 'ERROR: invalid config, nothing was run' in proc.stderr
    assert "train_dataloader.dataset.data_root='/nonexistent'" in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert not osp.exists(tmp_path / 'w')
