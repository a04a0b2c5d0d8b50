"""What ``tools/train.py`` and ``tools/test.py`` do beyond parsing their flags.

The tools keep mmpretrain's command lines; the rules behind the flags live here
so that both tools (and scripts that drive them) share one copy of each.
"""
from .tool_rules import (UsageError, build_runner, dump_metrics,
                         enable_test_amp, enable_train_amp, enable_tta,
                         enable_visualization, output_item, run_tool,
                         set_work_dir)

__all__ = [
    'UsageError', 'build_runner', 'dump_metrics', 'enable_test_amp',
    'enable_train_amp', 'enable_tta', 'enable_visualization', 'output_item',
    'run_tool', 'set_work_dir'
]
