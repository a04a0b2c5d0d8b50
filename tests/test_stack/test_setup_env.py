"""tools/setup_env.sh refuses a first install it has no room for, before
touching anything, with one line that says where and how much."""
import os
import os.path as osp
import re
import shutil
import subprocess

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(ROOT, 'tools', 'setup_env.sh')
STACKS = ('requirements/constraints.txt', 'requirements/constraints-min.txt')


def _run_setup_env(venv: str,
                   constraints: str,
                   script: str = SCRIPT) -> subprocess.CompletedProcess:
    env = dict(os.environ, VENV=venv, CONSTRAINTS=constraints)
    return subprocess.run(['bash', script],
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


def test_without_a_figure_of_its_own_the_override_uses_the_reference_one(
        tmp_path):
    """The refusal names the file its figure came from: here the reference pins
    of a copy of the checkout whose figure is more than any disk has."""
    (tmp_path / 'tools').mkdir()
    (tmp_path / 'requirements').mkdir()
    script = tmp_path / 'tools' / 'setup_env.sh'
    shutil.copy(SCRIPT, script)
    with open(osp.join(ROOT, STACKS[0])) as f:
        reference = re.sub(
            r'^# disk-gb: \d+$', '# disk-gb: 1000000', f.read(), flags=re.M)
    (tmp_path / STACKS[0]).write_text(reference)
    override = tmp_path / 'no-figure.txt'
    override.write_text('torch==2.1.2\n')
    venv = tmp_path / 'venv'
    result = _run_setup_env(str(venv), str(override), str(script))
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.count('\n') == 1, result.stderr
    assert (f'1000000 GB needed to install torch==2.1.2 and the stack '
            f"('# disk-gb: 1000000' in {tmp_path / STACKS[0]})"
            in result.stderr), result.stderr
    assert not venv.exists()
