"""Unreadable training images: a data folder with a truncated JPEG and an empty
file.

* ``tools/data/scan_images.py`` names both (parallel, resumable from its state
  file);
* training stops with one line naming the file and its dataset index (the
  default), never the decoder's traceback from a worker -- also on the
  iteration-based demo config, whose workers start before any hook runs;
* with ``UnreadableImageHook(on_unreadable='skip')`` both are skipped and
  counted and the run finishes; more than ``max_skips`` is the error.
"""
import io
import os
import os.path as osp
import re
import shutil

import pytest
from mmengine.config import Config
from mmengine.runner import Runner
from PIL import Image

ITER_CONFIG = 'configs/demo/hybrid-distill_vit-tiny-p8_1xb32-300i_shapes.py'
EPOCH_CONFIG = 'configs/demo/hybrid-distill_vit-tiny-p8_1xb32-4e_shapes.py'


@pytest.fixture(scope='module')
def bad_data(shapes_imagenet, tmp_path_factory):
    """The tiny data plus ``train/circle/truncated.jpg`` (a JPEG cut in its
    header tables) and ``train/ring/empty.png`` (0 bytes)."""
    root = str(tmp_path_factory.mktemp('bad') / 'data')
    shutil.copytree(shapes_imagenet, root)
    buf = io.BytesIO()
    Image.new('RGB', (64, 64), (200, 30, 30)).save(buf, format='JPEG')
    truncated = osp.join(root, 'train', 'circle', 'truncated.jpg')
    with open(truncated, 'wb') as f:
        f.write(buf.getvalue()[:200])
    empty = osp.join(root, 'train', 'ring', 'empty.png')
    open(empty, 'wb').close()
    return root, truncated, empty


def test_scan_names_truncated_and_empty_and_resumes(bad_data, repo_root,
                                                    tmp_path, capsys):
    from mmhybrid.datasets import scan_images

    # an own copy: this test repairs a file, the training tests need it broken
    src, truncated, empty = bad_data
    root = str(tmp_path / 'data')
    shutil.copytree(src, root)
    truncated = truncated.replace(src, root)
    empty = empty.replace(src, root)
    state = str(tmp_path / 'state.tsv')
    bad = scan_images(
        root, workers=2, state_file=state, progress=False, chunksize=4)
    assert [p for p, _ in bad] == sorted([truncated, empty])
    reasons = dict(bad)
    assert reasons[empty] == 'empty file (0 bytes)'
    assert reasons[truncated].startswith('cannot decode')
    from mmhybrid.datasets.image_scan import list_images
    assert len(open(state).readlines()) == len(list_images(root))

    # resumable: files already in the state file are not checked again (a
    # repaired file keeps its recorded verdict until the state is removed),
    # and a last line cut short by a kill is checked again
    shutil.copy(
        osp.join(
            osp.dirname(truncated),
            os.listdir(osp.dirname(truncated))[0]), truncated + '.tmp')
    os.replace(truncated + '.tmp', truncated)
    lines = open(state).readlines()
    empty_line = [ln for ln in lines if empty in ln][0]
    with open(state, 'w') as f:
        f.writelines([ln for ln in lines if ln != empty_line])
        f.write(empty_line[:-5])  # killed while writing it
    bad = scan_images(root, workers=1, state_file=state, progress=False)
    assert [p for p, _ in bad] == sorted([truncated, empty])
    # the cut line was dropped and the file checked again
    assert [ln for ln in open(state) if empty in ln] == [empty_line]

    # the tool: one line per bad file, status 1
    from mmhybrid.datasets import image_scan as tool
    capsys.readouterr()
    assert tool.main([root, '--workers', '2', '--no-progress']) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [f'{empty}\tempty file (0 bytes)']
    assert '1 unreadable image(s)' in err
    assert tool.main([osp.join(root, 'missing')]) == 2


def _cfg(repo_root, config, work_dir, data, teachers, options, hooks):
    cfg = Config.fromfile(osp.join(repo_root, config))
    cfg.work_dir = str(work_dir)
    tc, tm = teachers
    cfg.merge_from_dict({
        'train_dataloader.dataset.data_root':
        data,
        'model.teacher_feat.checkpoint':
        tc,
        'model.teacher_rel.checkpoint':
        tm,
        'train_dataloader.batch_size':
        8,
        'train_dataloader.num_workers':
        1,
        'train_dataloader.persistent_workers':
        False,
        'default_hooks.logger.interval':
        1,
        # pillow: the decoder whose traceback must not reach the user
        'train_dataloader.dataset.pipeline.0.imdecode_backend':
        'pillow',
        **options
    })
    cfg.custom_hooks = hooks
    return cfg


def test_unreadable_image_is_one_error_naming_file_and_index(
        bad_data, demo_teachers, repo_root, tmp_path):
    from mmhybrid.datasets import UnreadableImageError
    root, truncated, empty = bad_data
    # iteration-based: its workers start when the loop is built
    cfg = _cfg(
        repo_root, ITER_CONFIG, tmp_path / 'work', root, demo_teachers, {
            'train_cfg.max_iters': 20,
            'param_scheduler.0.end': 1,
            'param_scheduler.1.begin': 1,
            'param_scheduler.1.end': 20
        }, [dict(type='UnreadableImageHook')])
    runner = Runner.from_cfg(cfg)
    with pytest.raises(UnreadableImageError) as info:
        runner.train()
    msg = str(info.value)
    assert '\n' not in msg and 'Traceback' not in msg, msg
    m = re.match(
        r"unreadable image '(\S+)' \(index (\d+) of the "
        r'CustomDataset\): (.+?)\. Run tools/data/scan_images\.py', msg)
    assert m, msg
    assert m.group(1) in (truncated, empty)
    dataset = runner.train_dataloader.dataset
    assert dataset.get_data_info(int(m.group(2)))['img_path'] == m.group(1)


def test_skip_mode_counts_and_finishes_then_limit_is_an_error(
        bad_data, demo_teachers, repo_root, tmp_path):
    from mmhybrid.datasets import UnreadableImageError
    root, truncated, empty = bad_data
    epoch = {'train_cfg.max_epochs': 1}
    cfg = _cfg(
        repo_root, EPOCH_CONFIG, tmp_path / 'skip', root, demo_teachers, epoch,
        [dict(type='UnreadableImageHook', on_unreadable='skip', max_skips=2)])
    cfg.param_scheduler = cfg.param_scheduler[:1]  # one epoch: warm-up only
    runner = Runner.from_cfg(cfg)
    runner.train()  # one epoch reads every file: both skipped
    hook = [
        h for h in runner.hooks if type(h).__name__ == 'UnreadableImageHook'
    ][0]
    assert hook.skipped == 2
    log = open(runner.logger.log_file).read()
    for path in (truncated, empty):
        assert f"skipped unreadable image '{path}'" in log
    assert '2 unreadable image(s) skipped in this run' in log

    cfg = _cfg(
        repo_root, EPOCH_CONFIG, tmp_path / 'limit', root, demo_teachers,
        epoch,
        [dict(type='UnreadableImageHook', on_unreadable='skip', max_skips=1)])
    cfg.param_scheduler = cfg.param_scheduler[:1]
    with pytest.raises(
            UnreadableImageError,
            match=r'more than max_skips=1 unreadable images'):
        Runner.from_cfg(cfg).train()


def test_train_tool_ends_on_one_error_line_naming_the_image(
        bad_data, demo_teachers, repo_root, tmp_path):
    """``tools/train.py`` (its default UnreadableImageHook, error mode): the
    run stops with one ``ERROR:`` line naming the file, no worker traceback."""
    import subprocess
    import sys

    from mmhybrid.testing import DemoRun
    root, truncated, empty = bad_data
    opts = DemoRun(
        root, demo_teachers, 20, num_workers=1).options() + [
            'train_dataloader.dataset.pipeline.0.imdecode_backend=pillow'
        ]
    proc = subprocess.run(
        [
            sys.executable, 'tools/train.py', ITER_CONFIG, '--work-dir',
            str(tmp_path / 'work')
        ] + opts,
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('ERROR: unreadable image '), proc.stderr[-3000:]
    assert truncated in last or empty in last, last
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
