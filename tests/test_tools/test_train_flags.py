"""tools/train.py: ``--amp`` per optimizer wrapper and ``runner_type``, checked
on the merged config and the built runner (the runs themselves:
test_train_e2e.py)."""
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config

from mmhybrid.apis import UsageError, build_runner

DEMO = 'configs/demo/hybrid-distill_vit-tiny-p8_1xb32-300i_shapes.py'
FLEXIBLE = ('configs/demo/'
            'hybrid-distill_vit-tiny-p8_1xb32-flexible-ddp-300i_shapes.py')
SUP = 'configs/demo/vit-tiny-p8_sup_1xb32-300i_shapes.py'
FLAGSHIP = 'configs/hybrid_vitb.py'  # BF16OptimWrapper


@pytest.fixture(scope='module')
def train_tool():
    """``tools/train.py``'s command line (``parse_args``, ``merge_args``)."""
    from mmhybrid.apis import train
    return train


@pytest.fixture
def merged(repo_root, train_tool, tmp_path):
    """``merged(config, *args)``: the config as ``tools/train.py`` hands it to
    the runner."""

    def merge(config, *args):
        args = train_tool.parse_args(
            [config, '--work-dir',
             str(tmp_path / 'work'), *args])
        return train_tool.merge_args(
            Config.fromfile(osp.join(repo_root, config)), args)

    return merge


def test_amp_turns_optim_wrapper_into_amp_optim_wrapper(merged):
    cfg = merged(DEMO, '--amp')
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'


def test_amp_on_a_bf16_config_says_what_to_do(merged):
    with pytest.raises(UsageError) as info:
        merged(FLAGSHIP, '--amp')
    message = str(info.value)
    assert message.startswith(
        f'--amp: {FLAGSHIP} already trains in mixed '
        "precision (optim_wrapper.type='BF16OptimWrapper'")
    assert 'drop --amp' in message
    assert 'optim_wrapper.type=AmpOptimWrapper' in message


def test_amp_on_a_wrapper_it_cannot_convert_is_refused(train_tool, tmp_path):
    args = train_tool.parse_args(['x.py', '--amp'])
    cfg = Config(
        dict(
            optim_wrapper=dict(type='DeepSpeedOptimWrapper'),
            work_dir=str(tmp_path)))
    with pytest.raises(
            UsageError, match="optim_wrapper.type='DeepSpeedOptimWrapper'"):
        train_tool.merge_args(cfg, args)


@pytest.mark.slow  # a process start: about 20 s on a loaded 2-core machine
def test_amp_on_a_bf16_config_is_one_error_line_in_a_real_process(
        repo_root, tmp_path):
    proc = subprocess.run([
        sys.executable, 'tools/train.py', FLAGSHIP, '--amp', '--work-dir',
        str(tmp_path / 'work')
    ],
                          cwd=repo_root,
                          capture_output=True,
                          text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith('ERROR')]
    assert len(errors) == 1 and errors[0].startswith(
        f'ERROR: --amp: {FLAGSHIP} already trains in mixed precision'), \
        proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr


def test_runner_type_builds_a_flexible_runner_with_mmhybrid_hooks(merged):
    runner = build_runner(merged(FLEXIBLE))
    assert type(runner).__name__ == 'FlexibleRunner'
    assert type(runner.strategy).__name__ == 'DDPStrategy'
    hooks = {type(h).__name__ for h in runner.hooks}
    assert {'ExactResumeHook', 'NonFiniteLossHook',
            'ProgressiveMaskingHook'} <= hooks


def test_config_without_runner_type_builds_the_hybrid_runner(merged):
    # the classifier: the distiller would load its (absent) demo teachers
    from mmengine.runner import Runner

    from mmhybrid.engine import HybridRunner
    runner = build_runner(merged(SUP))
    assert type(runner) is HybridRunner and isinstance(runner, Runner)


def test_named_hybrid_runner_is_found_from_the_config(merged):
    from mmhybrid.engine import HybridRunner
    cfg = merged(SUP)
    cfg.runner_type = 'mmpretrain.HybridRunner'
    assert type(build_runner(cfg)) is HybridRunner
