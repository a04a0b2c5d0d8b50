"""Our configs on mmpretrain's own tools: the road of a user who keeps using
``mmpretrain/tools/train.py`` (or ``mim train mmpretrain``) with
``custom_imports``."""
import glob
import os.path as osp
import subprocess
import sys

import mmpretrain
import pytest
from mmengine.config import Config
from mmengine.registry import RUNNERS

from mmhybrid.engine.runners import HybridRunner

pytestmark = pytest.mark.slow

MMPRETRAIN_TRAIN = osp.join(
    osp.dirname(mmpretrain.__file__), '.mim', 'tools', 'train.py')
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PRETRAIN_CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'hybrid*.py')))
assert PRETRAIN_CONFIGS, f'no configs/hybrid*.py under {ROOT}'


@pytest.mark.parametrize('path', PRETRAIN_CONFIGS)
def test_pretraining_config_names_the_hybrid_runner(path):
    """mmpretrain's tools build ``RUNNERS.build(cfg)`` when a config has a
    ``runner_type``; ours resolves to HybridRunner in the config's scope."""
    cfg = Config.fromfile(path)
    with RUNNERS.switch_scope_and_registry(cfg.default_scope) as registry:
        assert registry.get(cfg.runner_type) is HybridRunner


def test_mmpretrain_train_tool_runs_the_demo_config(repo_root, tmp_path,
                                                    demo_train_cmd):
    """mmpretrain's tools/train.py trains our demo HybridDistill config on
    HybridRunner (a plain Runner dies at the first batch on the ``_scope_`` of
    the collate function the ``mmpretrain::`` dataset base leaves, shown by
    ``test_import_registers_only.py::test_upstream_scoped_collate_bug``), so a
    run that ends with its last checkpoint ran on HybridRunner."""
    ours = demo_train_cmd(tmp_path / 'run', 3)
    assert ours[1] == 'tools/train.py'
    cmd = [sys.executable, MMPRETRAIN_TRAIN] + ours[2:]
    proc = subprocess.run(
        cmd, cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert osp.isfile(tmp_path / 'run' / 'iter_3.pth')
