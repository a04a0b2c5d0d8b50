"""tools/setup_env.sh refuses a first install it has no room for, before
touching anything, with one line that says where and how much."""
import os
import os.path as osp
import re
import subprocess

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(ROOT, 'tools', 'setup_env.sh')
STACKS = ('requirements/constraints.txt', 'requirements/constraints-min.txt')


def _run_setup_env(venv: str, constraints: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, VENV=venv, CONSTRAINTS=constraints)
    return subprocess.run(['bash', SCRIPT],
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=60)


@pytest.mark.parametrize('stack', STACKS)
def test_each_stack_states_the_free_space_its_install_needs(stack):
    with open(osp.join(ROOT, stack)) as f:
        figures = re.findall(r'^# disk-gb: (\d+)$', f.read(), flags=re.M)
    assert len(figures) == 1 and int(figures[0]) > 0, stack


def test_too_little_disk_stops_a_first_install_with_one_line(tmp_path):
    """The override file's figure replaces the reference one; nothing is
    created, so a later run with more room starts clean."""
    constraints = tmp_path / 'constraints-huge.txt'
    # more than any disk has, and a torch the new venv cannot already have
    constraints.write_text('# disk-gb: 1000000\ntorch==2.1.2\n')
    venv = tmp_path / 'no-room' / 'venv'
    result = _run_setup_env(str(venv), str(constraints))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith(f'[setup_env] {venv}: '), line
    assert re.search(
        r'\d+ GB free on its file system \(' + re.escape(str(tmp_path)), line)
    assert '1000000 GB needed to install torch==2.1.2' in line, line
    assert str(constraints) in line, line
    assert not (tmp_path / 'no-room').exists()
