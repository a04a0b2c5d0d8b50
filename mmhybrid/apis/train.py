"""``tools/train.py``: mmpretrain's training command line, mmhybrid's runner.

On top of mmpretrain's ``tools/train.py``:

* the config is checked first
  (:func:`mmhybrid.engine.preflight.check_train_config`):
  a bad teacher file, layer index, mask ratio, image/patch size, loss name or
  dataset path fails before anything is built, naming the config key and value;
* the hooks of :data:`DEFAULT_HOOKS` are added to every run unless the config
  lists them: ``ExactResumeHook`` (a killed run resumes bit for bit),
  ``NonFiniteLossHook`` (a NaN/inf loss stops the run, or is skipped
  ``--max-nonfinite-skips`` times), ``PreemptionHook`` (SIGTERM / SIGUSR1:
  checkpoint at that iteration, exit 75 for requeue) and
  ``UnreadableImageHook`` (an unreadable image is an error naming it);
* a config without ``runner_type`` runs on
  :class:`mmhybrid.engine.HybridRunner`
  (safe checkpoint reads, atomic saves, ``--resume`` skips a truncated newest
  checkpoint, CPU/gloo distributed runs); one with ``runner_type``
  (``FlexibleRunner`` with an FSDP / DeepSpeed / DDP ``strategy``) on that
  runner, with the same rules from :func:`mmhybrid.enable_stack_fixes`.

Known failures (bad config, bad flag such as ``--amp`` on a config that already
trains in bf16, unusable checkpoint, non-finite loss) end with a one-line
``ERROR:`` message and exit status 1 (:func:`mmhybrid.apis.run_tool`).
"""
import argparse
from typing import List, Optional

import torch.distributed as torch_dist
from mmengine.config import Config

from ..engine.preflight import check_train_config, type_name
from .tool_rules import (add_cfg_options_arg, add_launcher_args, build_runner,
                         enable_entry_point_fixes, enable_train_amp,
                         parse_tool_args, run_tool, set_dataloader_defaults,
                         set_work_dir)

__all__ = [
    'parse_args', 'merge_args', 'main', 'cli', 'DEFAULT_HOOKS',
    'add_default_hooks', 'leave_together'
]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The command line of ``tools/train.py``.

    mmpretrain's flags plus ``--max-nonfinite-skips``.
    """
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='If specify checkpoint path, resume from it, while if not '
        'specify, try to auto resume from the latest checkpoint '
        'in the work directory.')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--no-validate',
        action='store_true',
        help='whether not to evaluate the checkpoint during training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='whether to auto scale the learning rate according to the '
        'actual batch size and the original batch size.')
    parser.add_argument(
        '--no-pin-memory',
        action='store_true',
        help='whether to disable the pin_memory option in dataloaders.')
    parser.add_argument(
        '--no-persistent-workers',
        action='store_true',
        help='whether to disable the persistent_workers option in dataloaders.'
    )
    add_cfg_options_arg(parser)
    add_launcher_args(parser)
    parser.add_argument(
        '--max-nonfinite-skips',
        type=int,
        default=None,
        help='skip up to N training steps whose loss or gradients are NaN/inf '
        '(the weights are not updated) before stopping; default: the '
        "config's NonFiniteLossHook, else 0 (stop at the first)")
    return parse_tool_args(parser, argv)


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Merge the command-line arguments into ``cfg`` (as mmpretrain's tool
    does, plus mmhybrid's default hooks)."""
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None

    cfg.launcher = args.launcher

    set_work_dir(cfg, args.work_dir, args.config)
    if args.amp is True:
        enable_train_amp(cfg, args.config)

    # resume training
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    # enable auto scale learning rate
    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True

    # set dataloader args
    for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        set_dataloader_defaults(cfg, field, args.no_pin_memory,
                                not args.no_persistent_workers)

    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    # `--cfg-options train_dataloader.num_workers=0` must not leave
    # persistent_workers on (DataLoader refuses the combination)
    for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(field, None)
        if loader is not None and loader.get('num_workers', 0) == 0:
            loader['persistent_workers'] = False

    add_default_hooks(cfg, args.max_nonfinite_skips)
    return cfg


#: The hooks every ``tools/train.py`` run gets (whatever its runner), unless
#: its config lists them already. Add a reliability hook here to make it a
#: default: its type name in mmpretrain's HOOKS registry.
DEFAULT_HOOKS = [
    'ExactResumeHook', 'NonFiniteLossHook', 'PreemptionHook',
    'UnreadableImageHook'
]


def add_default_hooks(cfg: Config,
                      max_nonfinite_skips: Optional[int] = None) -> None:
    """Append :data:`DEFAULT_HOOKS` to ``cfg.custom_hooks`` unless the config
    has them (then ``--max-nonfinite-skips`` overrides its value)."""
    hooks = list(cfg.get('custom_hooks', None) or [])
    present = {type_name(h): h for h in hooks}
    for hook in DEFAULT_HOOKS:
        if hook not in present:
            # scoped name: found from any default scope (mmseg, mmdet, ...)
            present[hook] = dict(type=f'mmpretrain.{hook}')
            hooks.append(present[hook])
    if max_nonfinite_skips is not None:
        present['NonFiniteLossHook']['max_skips'] = max_nonfinite_skips
    cfg.custom_hooks = hooks


def main(argv: Optional[List[str]] = None):
    """``tools/train.py``: parse, merge, check, build the runner, train.

    Returns:
        The runner, after training.
    """
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    cfg = merge_args(cfg, args)
    check_train_config(cfg)

    # HybridRunner unless the config names a runner_type (FlexibleRunner:
    # FSDP / DeepSpeed strategies, honoured as in mmpretrain); the process-wide
    # fixes that runner needs come from here, the entry point, not from import
    enable_entry_point_fixes(cfg)
    runner = build_runner(cfg)
    runner.train()
    leave_together()
    return runner


def leave_together() -> None:
    """End a distributed run with every rank present: a barrier, then the
    process group is destroyed.

    Left to interpreter shutdown, a rank that finishes first closes its gloo
    connections while another rank still holds them open, and that rank can die
    of SIGABRT after a finished run (seen once in CI on a two-rank CPU run).
    torch asks for an explicit ``destroy_process_group`` at the end of every
    run.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()


def cli() -> None:
    """``python tools/train.py ...``: known failures end as one ERROR line."""
    run_tool(main)
