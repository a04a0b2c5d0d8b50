"""Test (and evaluate) a checkpoint: mmpretrain's ``tools/test.py`` flags.

The command line and what it does live in :mod:`mmhybrid.apis.test` (see its
docstring); this file runs it with this checkout's mmhybrid.
"""
import os.path as osp
import sys

# this checkout first: with an editable install of another checkout, or a
# stale installed copy, `python tools/test.py` would otherwise run that one
# (the copy mim runs, under mmhybrid/.mim/tools/, has no package beside it)
ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if osp.isfile(osp.join(ROOT, 'mmhybrid', '__init__.py')) and \
        sys.path[:1] != [ROOT]:
    sys.path.insert(0, ROOT)

from mmhybrid.apis import test as _tool  # noqa: E402

# re-exported for scripts that load this file
main, parse_args, merge_args = _tool.main, _tool.parse_args, _tool.merge_args

if __name__ == '__main__':
    _tool.cli()
