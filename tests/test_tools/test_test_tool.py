"""tools/test.py with mmpretrain's flags, on the demo classifier and the 20
generated validation images (the real mmengine Runner, CPU)."""
import json
import os.path as osp
import pickle
import subprocess
import sys

import pytest
import torch

from mmhybrid.apis import UsageError

SUP = 'configs/demo/vit-tiny-p8_sup_1xb32-300i_shapes.py'
NUM_VAL = 20  # the shapes_imagenet fixture


@pytest.fixture(scope='module')
def test_tool():
    """``tools/test.py``'s command line (its ``main(argv)``)."""
    from mmhybrid.apis import test
    return test


@pytest.fixture(scope='module')
def classifier_ckpt(repo_root, tmp_path_factory):
    """The demo classifier, freshly initialised, saved as mmengine saves it."""
    from mmengine.config import Config
    from mmpretrain.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(osp.join(repo_root, SUP)).model)
    model.init_weights()
    path = tmp_path_factory.mktemp('classifier') / 'cls.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(iter=1)), path)
    return str(path)


@pytest.fixture
def run_test(repo_root, test_tool, classifier_ckpt, shapes_imagenet, tmp_path,
             monkeypatch):
    """``run_test(*args, options=())``: ``tools/test.py``'s ``main`` in this
    process on the demo classifier; returns the runner.

    The stack fixes the tool enables are taken back afterwards.
    """
    from mmhybrid.engine import stack_fixes
    before = stack_fixes.enabled_stack_fixes()

    def run(*args, options=()):
        monkeypatch.chdir(repo_root)
        return test_tool.main([
            SUP, classifier_ckpt, '--work-dir',
            str(tmp_path / 'work'), *args, '--cfg-options',
            f'test_dataloader.dataset.data_root={shapes_imagenet}',
            'test_dataloader.num_workers=0', *options
        ])

    yield run
    stack_fixes.disable_stack_fixes()
    stack_fixes.enable_stack_fixes(before)


def test_out_alone_dumps_one_prediction_per_image(run_test, tmp_path):
    out = tmp_path / 'preds.pkl'
    run_test('--out', str(out))
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == NUM_VAL
    assert {'pred_score', 'pred_label', 'gt_label'} <= set(preds[0])
    assert preds[0]['pred_score'].shape == (5, )


def test_out_item_metrics_writes_the_metrics(run_test, tmp_path):
    out = tmp_path / 'metrics.json'
    run_test('--out', str(out), '--out-item', 'metrics')
    metrics = json.loads(out.read_text())
    assert set(metrics) == {'accuracy/top1'}
    assert 0.0 <= metrics['accuracy/top1'] <= 100.0


def test_out_json_without_out_item_still_writes_metrics_and_warns(
        run_test, tmp_path, capsys):
    out = tmp_path / 'metrics.json'
    run_test('--out', str(out))
    assert 'accuracy/top1' in json.loads(out.read_text())
    assert 'WARNING: --out' in capsys.readouterr().err


@pytest.mark.parametrize('args,message', [
    (['--out-item', 'metrics'], 'no output file'),
    (['--out', 'p.json', '--out-item', 'pred'], 'expected a .pkl'),
    (['--out', 'p.txt'], 'expected a .pkl'),
    (['--out', 'm.txt', '--out-item', 'metrics'], 'expected a .json'),
])
def test_unusable_out_is_refused_before_anything_runs(run_test, tmp_path, args,
                                                      message):
    with pytest.raises(UsageError, match=message):
        run_test(*args)
    assert not (tmp_path / 'work').exists()


def test_refusal_is_one_error_line_in_a_real_process(repo_root,
                                                     classifier_ckpt):
    proc = subprocess.run([
        sys.executable, 'tools/test.py', SUP, classifier_ckpt, '--out-item',
        'metrics'
    ],
                          cwd=repo_root,
                          capture_output=True,
                          text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith('ERROR')]
    assert errors == [
        'ERROR: --out-item metrics: no output file; name it with --out'
    ]
    assert 'Traceback' not in proc.stderr


def test_show_dir_saves_every_interval_th_image(run_test, tmp_path):
    run_test('--show-dir', str(tmp_path / 'vis'), '--interval', '5')
    images = list((tmp_path / 'vis').glob('*.png'))
    assert len(images) == NUM_VAL // 5, images


@pytest.mark.parametrize('hooks,message', [
    (dict(), 'has no default_hooks.visualization'),
    (dict(visualization=dict(type='MyVisHook')), "type='MyVisHook'"),
])
def test_show_without_a_known_visualization_hook_is_refused(hooks, message):
    from mmengine.config import Config

    from mmhybrid.apis import enable_visualization
    cfg = Config(dict(default_hooks=hooks))
    with pytest.raises(UsageError, match=message):
        enable_visualization(
            cfg, 'x.py', show=True, show_dir=None, interval=1, wait_time=2)


def test_tta_averages_flipped_predictions(run_test, tmp_path):
    out = tmp_path / 'metrics.json'
    runner = run_test('--tta', '--out', str(out), '--out-item', 'metrics')
    assert type(runner.model).__name__ == 'AverageClsScoreTTA'
    assert 'accuracy/top1' in json.loads(out.read_text())


def test_amp_runs_the_test_loop_under_autocast(run_test):
    runner = run_test('--amp')
    assert runner.test_loop.fp16 is True


def test_no_pin_memory_turns_pinning_off(run_test):
    assert run_test().cfg.test_dataloader.pin_memory is True
    runner = run_test('--no-pin-memory')
    assert runner.cfg.test_dataloader.pin_memory is False


def test_runner_type_builds_that_runner(run_test, tmp_path):
    out = tmp_path / 'preds.pkl'
    runner = run_test(
        '--out', str(out), options=['runner_type=FlexibleRunner'])
    assert type(runner).__name__ == 'FlexibleRunner'
    with open(out, 'rb') as f:
        assert len(pickle.load(f)) == NUM_VAL
