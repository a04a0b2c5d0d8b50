"""What ``tools/train.py`` and ``tools/test.py`` do: their command lines
(:mod:`mmhybrid.apis.train`, :mod:`mmhybrid.apis.test`) and the rules behind
their flags (:mod:`mmhybrid.apis.tool_rules`), so that both tools (and scripts
and tests that drive them) import one copy of each."""
from .tool_rules import (UsageError, build_runner, dump_metrics,
                         enable_entry_point_fixes, enable_test_amp,
                         enable_train_amp, enable_tta, enable_visualization,
                         output_item, run_tool, set_work_dir)

__all__ = [
    'UsageError', 'build_runner', 'dump_metrics', 'enable_entry_point_fixes',
    'enable_test_amp', 'enable_train_amp', 'enable_tta',
    'enable_visualization', 'output_item', 'run_tool', 'set_work_dir'
]
