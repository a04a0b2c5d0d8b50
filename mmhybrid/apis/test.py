"""``tools/test.py``: test (and evaluate) a checkpoint with mmpretrain's flags.

Works with mmhybrid, mmpretrain, mmseg and mmdet configs. Every flag means what
it means in mmpretrain: ``--out FILE.pkl`` dumps the predictions (mmengine's
``DumpResults``), ``--out FILE --out-item metrics`` the metrics; ``--show`` /
``--show-dir`` switch the config's visualization hook on; ``--tta`` wraps the
model in the config's (or mmpretrain's flip) test-time augmentation; ``--amp``
tests under autocast; a config's ``runner_type`` (``FlexibleRunner``) is
honoured. On top of mmpretrain's tool:

* the checkpoint is read through mmhybrid's safe I/O (no code runs from it):
  :class:`mmhybrid.engine.HybridRunner` for configs without ``runner_type``,
  :func:`mmhybrid.enable_stack_fixes` for the others;
* ``--show`` / ``--show-dir`` also drive mmseg's and mmdet's visualization
  hooks;
* ``--out metrics.json`` (or ``.yaml``) without ``--out-item``, which
  mmpretrain
  refuses, still writes the metrics as this tool did before (with a warning);
* a bad flag or checkpoint ends with a one-line ``ERROR:`` and exit status 1.
"""
import argparse
from typing import List, Optional

from mmengine.config import Config

from .tool_rules import (add_cfg_options_arg, add_launcher_args, build_runner,
                         dump_metrics, enable_entry_point_fixes,
                         enable_test_amp, enable_tta, enable_visualization,
                         output_item, parse_tool_args, run_tool,
                         set_dataloader_defaults, set_work_dir)

__all__ = ['parse_args', 'merge_args', 'main', 'cli']


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """``tools/test.py``'s command line: mmpretrain's flags."""
    parser = argparse.ArgumentParser(
        description='MMPreTrain test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='the directory to save the file containing evaluation metrics')
    parser.add_argument(
        '--out',
        help='the file to output results: the predictions (a .pkl file), or '
        'with --out-item metrics the metrics (.json, .yaml or .pkl)')
    parser.add_argument(
        '--out-item',
        choices=['metrics', 'pred'],
        help='To output whether metrics or predictions. '
        'Defaults to output predictions.')
    add_cfg_options_arg(parser)
    parser.add_argument(
        '--amp',
        action='store_true',
        help='enable automatic-mixed-precision test')
    parser.add_argument(
        '--show-dir',
        help='directory where the visualization images will be saved.')
    parser.add_argument(
        '--show',
        action='store_true',
        help='whether to display the prediction results in a window.')
    parser.add_argument(
        '--interval',
        type=int,
        default=1,
        help='visualize per interval samples.')
    parser.add_argument(
        '--wait-time',
        type=float,
        default=2,
        help='display time of every window. (second)')
    parser.add_argument(
        '--no-pin-memory',
        action='store_true',
        help='whether to disable the pin_memory option in dataloaders.')
    parser.add_argument(
        '--tta',
        action='store_true',
        help='Whether to enable the Test-Time-Aug (TTA). If the config file '
        'has `tta_pipeline` and `tta_model` fields, use them to determine the '
        'TTA transforms and how to merge the TTA results. Otherwise, use flip '
        'TTA by averaging classification score.')
    add_launcher_args(parser)
    return parse_tool_args(parser, argv)


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Merge the command-line options into ``cfg``, as in mmpretrain."""
    cfg.launcher = args.launcher
    set_work_dir(cfg, args.work_dir, args.config)
    cfg.load_from = args.checkpoint

    if args.amp:
        enable_test_amp(cfg)
    if args.show or args.show_dir is not None:
        enable_visualization(cfg, args.config, args.show, args.show_dir,
                             args.interval, args.wait_time)
    if args.tta:
        enable_tta(cfg, args.config)

    set_dataloader_defaults(cfg, 'test_dataloader', args.no_pin_memory)

    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def main(argv: Optional[List[str]] = None):
    """``tools/test.py``: parse, merge, build the runner, test, write --out.

    Returns:
        The runner, after testing.
    """
    from mmengine.evaluator import DumpResults
    args = parse_args(argv)
    # before anything is built: a wrong --out fails in a second, not after
    # the whole test set
    item = output_item(args.out, args.out_item)

    cfg = Config.fromfile(args.config)
    cfg = merge_args(cfg, args)

    enable_entry_point_fixes(cfg)
    runner = build_runner(cfg)
    if item == 'pred':
        runner.test_evaluator.metrics.append(
            DumpResults(out_file_path=args.out))
    metrics = runner.test()
    if item == 'metrics':
        dump_metrics(metrics, args.out)
    return runner


def cli() -> None:
    """``python tools/test.py ...``: known failures end as one ERROR line."""
    run_tool(main)
