"""``python tools/train.py`` / ``tools/test.py`` run this checkout's mmhybrid,
whatever else is on the path (an editable install of another checkout, a stale
installed copy): the tools put their own repository first on ``sys.path``."""
import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize('tool', ['tools/train.py', 'tools/test.py'])
def test_tool_imports_its_own_checkout(tool, repo_root, tmp_path):
    other = tmp_path / 'other_checkout'
    (other / 'mmhybrid').mkdir(parents=True)
    (other / 'mmhybrid' / '__init__.py').write_text(
        'import sys\nsys.exit("imported the other checkout\'s mmhybrid")\n')
    # the other checkout comes first on the path, as an editable install's
    # path entry or PYTHONPATH would put it; run from outside both
    env = dict(os.environ, PYTHONPATH=str(other))
    proc = subprocess.run(
        [sys.executable,
         os.path.join(repo_root, tool), '--help'],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'usage:' in proc.stdout
    assert 'other checkout' not in proc.stderr
