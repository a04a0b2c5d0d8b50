"""Test (and evaluate) a checkpoint: mmpretrain's ``tools/test.py`` flags.

The command line and what it does live in :mod:`mmhybrid.apis.test` (see its
docstring); this file runs it with this checkout's mmhybrid.
"""
import os.path as osp
import sys

# this checkout first: with an editable install of another checkout, or a
# stale installed copy, `python tools/test.py` would otherwise run that one
ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if sys.path[:1] != [ROOT]:
    sys.path.insert(0, ROOT)

# main / parse_args / merge_args: re-exported for scripts that load this file
from mmhybrid.apis.test import cli, main, merge_args, parse_args  # noqa: E402,F401,E501

if __name__ == '__main__':
    cli()
