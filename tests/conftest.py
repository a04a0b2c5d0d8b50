import os
import os.path as osp
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

# registers the components and the safe-load allow-list
import mmhybrid  # noqa: E402,F401
from mmhybrid.testing import DEMO_CONFIG  # noqa: E402
from mmhybrid.testing import DemoRun, save_demo_teacher  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))

# The subset `make test-min` runs on the minimum-version stack
# (requirements/constraints-min.txt: torch 2.1.2, numpy 1.26), marked
# ``min_stack`` here and nowhere else: the places where an old torch / numpy
# differs for us. Whole modules by path, single tests by node id (every
# parametrisation of it). Its time on 2 cores: docs/install.md#ci-timings.
MIN_STACK = (
    # the OpenMMLab stack and mmcv's compiled ops work together
    'tests/test_stack/test_stack_smoke.py',
    # safe loading of every teacher layout: old torch has no
    # torch.serialization.add_safe_globals, mmhybrid's restricted unpickler
    # stands in
    'tests/test_models/test_teachers/test_vit_formats.py',
    'tests/test_reliability/test_safe_checkpoints.py',
    # save + --resume continues exactly (RNG states, optimizer, schedule)
    'tests/test_reliability/test_exact_resume.py'
    '::test_sigkill_then_resume_equals_uninterrupted',
    # the core training step: the optimised step equals the plain reference
    'tests/test_models/test_algorithms/test_hybrid_distill.py'
    '::test_optimized_step_equals_plain_reference',
    # one downstream pipeline end to end: convert, train, evaluate
    'tests/test_downstream/test_downstream_e2e.py'
    '::test_imagenet_linear_probe',
)


def pytest_collection_modifyitems(config, items):
    """Marks the tests of ``MIN_STACK`` with ``min_stack``; an entry that names
    a missing file, or a test its collected file does not have (renamed,
    removed), is a usage error rather than a silently smaller subset."""
    matched, collected_files = set(), set()
    for item in items:
        test_id = item.nodeid.split('[')[0]  # without the parametrisation
        module = test_id.split('::')[0]
        collected_files.add(module)
        for entry in (test_id, module):
            if entry in MIN_STACK:
                item.add_marker(pytest.mark.min_stack)
                matched.add(entry)
    for entry in MIN_STACK:
        module = entry.split('::')[0]
        missing_file = not osp.isfile(osp.join(ROOT, module))
        if missing_file or (module in collected_files
                            and entry not in matched):
            raise pytest.UsageError(
                f'tests/conftest.py MIN_STACK: {entry!r} names no '
                f'{"file" if missing_file else "test"}; expected an existing '
                'test module or node id')


@pytest.fixture(scope='session')
def repo_root():
    return ROOT


@pytest.fixture(scope='session')
def shapes_imagenet(tmp_path_factory):
    """A small ImageNet-style folder of the built-in generated data."""
    from mmhybrid.datasets import make_imagenet_style
    root = tmp_path_factory.mktemp('shapes') / 'imagenet'
    return make_imagenet_style(
        str(root), num_train=64, num_val=20, size=64, seed=0)


def _tiny_demo_teacher(path, seed, pre_norm=False):
    """A tiny ViT saved the way mmpretrain saves a classifier."""
    return save_demo_teacher(str(path), seed, pre_norm=pre_norm)


@pytest.fixture(scope='session')
def demo_teachers(tmp_path_factory):
    d = tmp_path_factory.mktemp('teachers')
    tc = _tiny_demo_teacher(d / 'tc.pth', 1)
    tm = _tiny_demo_teacher(d / 'tm.pth', 2)
    return tc, tm


@pytest.fixture(scope='session')
def demo_train_cmd(shapes_imagenet, demo_teachers):
    """``cmd(work_dir, iters, extra=())``: the command line of a short
    ``tools/train.py`` run of the demo HybridDistill config on the generated
    data and the tiny teachers (batch 8, no loader workers, one warm-up
    iteration, a checkpoint at the end); ``extra`` adds ``--cfg-options``."""

    def cmd(work_dir, iters, extra=()):
        return [
            sys.executable, 'tools/train.py', DEMO_CONFIG, '--work-dir',
            str(work_dir)
        ] + DemoRun(
            shapes_imagenet,
            demo_teachers,
            iters,
            warmup=1,
            num_workers=0,
            checkpoint_interval=iters,
            log_every_iter=False,
            extra=extra).options()

    return cmd


@pytest.fixture(autouse=True)
def _mmpretrain_default_scope():
    """Each test builds in mmpretrain's scope, whatever an earlier in-process
    Runner (which registers its own default scope) left behind."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        yield
