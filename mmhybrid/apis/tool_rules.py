"""The rules behind ``tools/train.py`` and ``tools/test.py``'s flags.

Each flag means what it means in mmpretrain's own tools; where mmpretrain would
stop with an ``AssertionError`` or a deep traceback, these raise
:class:`UsageError` with one line that names the flag, the config key and value
and what would work, and :func:`run_tool` prints it as ``ERROR: ...``.
"""
import os
import os.path as osp
import sys
from argparse import ArgumentParser
from copy import deepcopy
from typing import Any, Callable, Optional

from mmengine.config import Config, ConfigDict, DictAction

from ..engine.preflight import type_name

__all__ = [
    'UsageError', 'build_runner', 'enable_entry_point_fixes', 'set_work_dir',
    'enable_train_amp', 'enable_test_amp', 'enable_visualization',
    'enable_tta', 'output_item', 'dump_metrics', 'run_tool'
]

# mmengine's DumpResults refuses anything else
_PICKLE_SUFFIXES = ('.pkl', '.pickle')
# what mmengine.dump writes (it picks the format from the suffix)
_METRICS_SUFFIXES = ('.json', '.yaml', '.yml') + _PICKLE_SUFFIXES


def add_cfg_options_arg(parser: ArgumentParser) -> None:
    """``--cfg-options``, worded as in mmpretrain's tools."""
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file. If the value to '
        'be overwritten is a list, it should be like key="[a,b]" or key=a,b '
        'It also allows nested list/tuple values, e.g. key="[(a,b),(c,d)]" '
        'Note that the quotation marks are necessary and that no white space '
        'is allowed.')


def add_launcher_args(parser: ArgumentParser) -> None:
    """``--launcher`` and ``--local_rank`` / ``--local-rank``, as in
    mmpretrain's tools."""
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # When using PyTorch version >= 2.0.0, the `torch.distributed.launch`
    # will pass the `--local-rank` parameter to the tool instead of
    # `--local_rank`.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


class UsageError(ValueError):
    """A command-line flag that cannot work with this config or value."""


def parse_tool_args(parser: ArgumentParser, argv=None):
    """Parse ``argv`` as mmpretrain's tools do: ``--local-rank`` becomes
    ``LOCAL_RANK`` unless a launcher set it."""
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def set_dataloader_defaults(cfg: Config,
                            field: str,
                            no_pin_memory: bool,
                            persistent_workers: Optional[bool] = None) -> None:
    """mmpretrain's dataloader defaults under ``cfg[field]``; the config's own
    values win, the ``--no-*`` flags win over both.

    Args:
        cfg (Config): The config, changed in place.
        field (str): ``'train_dataloader'``, ``'val_dataloader'``, ...; a
            field that is absent or None is left alone.
        no_pin_memory (bool): ``--no-pin-memory``.
        persistent_workers (bool, optional): The default for
            ``persistent_workers`` (training: True; False with
            ``--no-persistent-workers``); None sets none (testing).
    """
    if cfg.get(field, None) is None:
        return
    # a fresh dict per loader: one shared dict leaked the val dataset into
    # train_dataloader
    loader = ConfigDict(
        pin_memory=True, collate_fn=dict(type='default_collate'))
    if persistent_workers is not None:
        loader['persistent_workers'] = True
    loader.update(cfg[field])
    if no_pin_memory:
        loader['pin_memory'] = False
    if persistent_workers is False:
        loader['persistent_workers'] = False
    cfg[field] = loader


def build_runner(cfg: Config):
    """Build the runner of a tool run.

    A config with ``runner_type`` (e.g. ``'FlexibleRunner'``, whose
    ``strategy`` runs FSDP or DeepSpeed) is built through mmengine's
    ``RUNNERS`` registry, as mmpretrain's tools do; any other config by
    :class:`mmhybrid.engine.HybridRunner` (mmengine's ``Runner`` with
    mmhybrid's checkpoint I/O and CPU fixes).

    Args:
        cfg (Config): The merged config.

    Returns:
        HybridRunner, or the runner ``runner_type`` names: not yet started.
    """
    from mmengine.registry import RUNNERS

    from ..engine.runners import HybridRunner
    if cfg.get('runner_type', None) is None:
        return HybridRunner.from_cfg(cfg)
    return RUNNERS.build(cfg)


def enable_entry_point_fixes(cfg: Config) -> list:
    """Apply the process-wide stack fixes this run needs (entry points only).

    A run on :class:`~mmhybrid.engine.HybridRunner` needs only its
    ``PROCESS_FIXES``; any other runner (``FlexibleRunner``) all of
    :data:`mmhybrid.engine.stack_fixes.STACK_FIXES` (each where the installed
    versions have the bug).

    Returns:
        list[str]: The names of the fixes now enabled in this process.
    """
    from mmengine.registry import RUNNERS

    from ..engine.runners import HybridRunner
    from ..engine.stack_fixes import enable_stack_fixes
    runner_type = cfg.get('runner_type', None)
    runner_cls = HybridRunner
    if isinstance(runner_type, str):
        with RUNNERS.switch_scope_and_registry(cfg.get('default_scope',
                                                       None)) as registry:
            runner_cls = registry.get(runner_type)
    elif runner_type is not None:
        runner_cls = runner_type
    if isinstance(runner_cls, type) and issubclass(runner_cls, HybridRunner):
        return enable_stack_fixes(HybridRunner.PROCESS_FIXES)
    return enable_stack_fixes()


def set_work_dir(cfg: Config, work_dir: Optional[str], config: str) -> None:
    """``cfg.work_dir``: ``--work-dir`` > the config's own > the config's name.

    Args:
        cfg (Config): The config to update.
        work_dir (str, optional): The ``--work-dir`` value.
        config (str): The config file path (its name names the default).
    """
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config))[0])


def enable_train_amp(cfg: Config, config: str) -> None:
    """``tools/train.py --amp``: ``OptimWrapper`` -> ``AmpOptimWrapper``.

    Args:
        cfg (Config): The config to update.
        config (str): The config file path (named in errors).

    Raises:
        UsageError: The config has no optimizer wrapper, already trains in bf16
            (``BF16OptimWrapper``) or uses a wrapper ``--amp`` cannot convert.
    """
    wrapper = cfg.get('optim_wrapper', None)
    if not wrapper:
        raise UsageError(f'--amp: {config} has no optim_wrapper to run in '
                         'mixed precision')
    name = type_name(wrapper) or 'OptimWrapper'
    if name == 'BF16OptimWrapper':
        raise UsageError(
            f'--amp: {config} already trains in mixed precision '
            f"(optim_wrapper.type='BF16OptimWrapper': bf16 autocast, no loss "
            'scaling); drop --amp, or for fp16 with loss scaling pass '
            '--cfg-options optim_wrapper.type=AmpOptimWrapper instead')
    if name not in ('OptimWrapper', 'AmpOptimWrapper'):
        raise UsageError(
            f'--amp: {config} has optim_wrapper.type={name!r}; --amp turns '
            "'OptimWrapper' into 'AmpOptimWrapper' and cannot convert other "
            'wrappers (set their precision in the config instead)')
    wrapper.type = 'AmpOptimWrapper'
    wrapper.setdefault('loss_scale', 'dynamic')


def enable_test_amp(cfg: Config) -> None:
    """``--amp`` of ``tools/test.py``: the test loop runs under autocast."""
    test_cfg = cfg.get('test_cfg', None) or ConfigDict()
    test_cfg['fp16'] = True
    cfg.test_cfg = test_cfg


def enable_visualization(cfg: Config, config: str, show: bool,
                         show_dir: Optional[str], interval: int,
                         wait_time: float) -> None:
    """``--show`` / ``--show-dir``: switch the config's visualization hook on.

    mmpretrain's ``VisualizationHook`` is set as mmpretrain's ``tools/test.py``
    sets it; mmseg's ``SegVisualizationHook`` and mmdet's
    ``DetVisualizationHook`` (downstream configs) as their own tools do, since
    their hooks take other arguments (``draw``; the output folder is the
    visualizer's ``save_dir`` for mmseg, ``test_out_dir`` for mmdet).

    Raises:
        UsageError: ``default_hooks.visualization`` is missing or of a type
            none of these tools know.
    """
    hook = (cfg.get('default_hooks', None) or {}).get('visualization', None)
    if hook is None:
        raise UsageError(
            f'--show/--show-dir: {config} has no default_hooks.visualization; '
            "expected e.g. visualization=dict(type='VisualizationHook')")
    name = type_name(hook)
    if name == 'VisualizationHook':
        hook.update(
            enable=True,
            show=show,
            wait_time=wait_time,
            out_dir=show_dir,
            interval=interval)
    elif name in ('SegVisualizationHook', 'DetVisualizationHook'):
        hook.update(
            draw=True, show=show, wait_time=wait_time, interval=interval)
        if show_dir is not None and name == 'DetVisualizationHook':
            hook['test_out_dir'] = show_dir
        elif show_dir is not None:
            cfg.visualizer['save_dir'] = show_dir
    else:
        raise UsageError(
            f'--show/--show-dir: {config} has default_hooks.visualization.'
            f"type={name!r}; expected 'VisualizationHook' (mmpretrain), "
            "'SegVisualizationHook' (mmseg) or 'DetVisualizationHook' (mmdet)")


def enable_tta(cfg: Config, config: str) -> None:
    """``--tta``: wrap the model in the config's ``tta_model``.

    Without ``tta_model`` / ``tta_pipeline`` in the config, mmpretrain's
    default is used: flip test-time augmentation, class scores averaged by
    ``AverageClsScoreTTA``.

    Raises:
        UsageError: The config lacks ``tta_model`` and is not an mmpretrain
            config (the default averages classification scores only), or has
            no ``test_dataloader``.
    """
    scope = cfg.get('default_scope', None) or 'mmpretrain'
    if 'tta_model' not in cfg and scope != 'mmpretrain':
        raise UsageError(
            f'--tta: {config} has no tta_model; the flip default averages '
            f"classification scores (mmpretrain), this config's default_scope "
            f'is {scope!r}: add tta_model and tta_pipeline to it')
    if cfg.get('test_dataloader', None) is None:
        raise UsageError(f'--tta: {config} has no test_dataloader')
    if 'tta_model' not in cfg:
        cfg.tta_model = dict(type='mmpretrain.AverageClsScoreTTA')
    if 'tta_pipeline' not in cfg:
        test_pipeline = cfg.test_dataloader.dataset.pipeline
        cfg.tta_pipeline = deepcopy(test_pipeline)
        cfg.tta_pipeline[-1] = dict(
            type='TestTimeAug',
            transforms=[
                [
                    dict(type='RandomFlip', prob=1.),
                    dict(type='RandomFlip', prob=0.)
                ],
                [test_pipeline[-1]],
            ])
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def output_item(out: Optional[str], out_item: Optional[str]) -> Optional[str]:
    """What ``--out`` writes: ``'pred'``, ``'metrics'`` or nothing (``None``).

    As in mmpretrain, ``--out`` alone dumps the predictions (a pickle, through
    mmengine's ``DumpResults``) and ``--out-item metrics`` the metrics
    (``mmengine.dump``: json, yaml or pickle by the suffix). One addition: a
    ``.json`` / ``.yaml`` ``--out`` without ``--out-item``, which mmpretrain
    refuses (predictions are pickled), writes the metrics with a warning, as
    mmhybrid's ``tools/test.py`` did before it followed mmpretrain.

    Raises:
        UsageError: ``--out-item`` without ``--out``, or a suffix the chosen
            item cannot be written as.
    """
    if out is None:
        if out_item is not None:
            raise UsageError(f'--out-item {out_item}: no output file; name '
                             'it with --out')
        return None
    suffix = osp.splitext(out)[1].lower()
    if out_item is None and suffix in _PICKLE_SUFFIXES:
        return 'pred'
    if out_item is None and suffix in _METRICS_SUFFIXES:
        print(
            f'WARNING: --out {out} without --out-item writes the metrics; '
            'add --out-item metrics (--out alone means the pickled '
            'predictions, a .pkl file, as in mmpretrain)',
            file=sys.stderr)
        return 'metrics'
    item = out_item or 'pred'
    if item == 'pred' and suffix not in _PICKLE_SUFFIXES:
        raise UsageError(f'--out {out}: predictions are written as a pickle; '
                         'expected a .pkl or .pickle file (or --out-item '
                         'metrics for a .json/.yaml/.pkl of the metrics)')
    if item == 'metrics' and suffix not in _METRICS_SUFFIXES:
        raise UsageError(f'--out {out} --out-item metrics: expected a .json, '
                         '.yaml, .yml, .pkl or .pickle file')
    return item


def dump_metrics(metrics: dict, out: str) -> None:
    """Write the test metrics to ``out`` (format from the suffix), once."""
    import mmengine
    from mmengine.dist import is_main_process
    if is_main_process():
        mmengine.dump(metrics, out)


def run_tool(main: Callable[[], Any]) -> Any:
    """Run a tool's ``main``; known failures end as one ``ERROR:`` line.

    A bad flag (:class:`UsageError`), config
    (:class:`~mmhybrid.engine.preflight.ConfigError`) or checkpoint
    (:class:`~mmhybrid.utils.checkpoint.CheckpointError`), a non-finite loss
    or an unreadable image is printed as ``ERROR: <message>`` (prefixed with
    the rank in a distributed run) and the process exits with status 1;
    anything else is a bug and keeps its traceback.
    """
    from ..datasets import UnreadableImageError
    from ..engine.hooks import NonFiniteLossError
    from ..engine.preflight import ConfigError
    from ..utils.checkpoint import CheckpointError
    try:
        return main()
    except (UsageError, ConfigError, CheckpointError, NonFiniteLossError,
            UnreadableImageError) as e:
        where = ''
        if int(os.environ.get('WORLD_SIZE', '1')) > 1:
            where = f'[rank {os.environ.get("RANK", "?")}] '
        print(f'ERROR: {where}{e}', file=sys.stderr, flush=True)
        sys.exit(1)
