"""The lint: .pre-commit-config.yaml (OpenMMLab's hooks, fetched from GitHub)
and tools/lint.sh (the same hooks from PyPI, for CI) run the same tools.

tools/lint.sh is run here on a small tree of its own, with the lint tools of
the test environment (``make lint`` installs requirements/lint.txt there).
"""
import os
import os.path as osp
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version

import pytest
import yaml

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _pins():
    pins = {}
    with open(osp.join(ROOT, 'requirements', 'lint.txt')) as f:
        for line in f:
            line = line.split('#')[0].strip()
            if line:
                name, pinned = line.split('==')
                pins[name] = pinned
    return pins


def _config():
    with open(osp.join(ROOT, '.pre-commit-config.yaml')) as f:
        return yaml.safe_load(f)


def _missing_tools():
    missing = []
    for name, pinned in _pins().items():
        try:
            if version(name) != pinned:
                missing.append(f'{name}=={pinned}')
        except PackageNotFoundError:
            missing.append(f'{name}=={pinned}')
    return missing


needs_lint_tools = pytest.mark.skipif(
    bool(_missing_tools()),
    reason=f'lint tools not installed here: {_missing_tools()} (make lint '
    'installs requirements/lint.txt)')


def test_each_hook_repo_is_pinned_at_its_rev():
    """A GitHub hook repository at rev ``vX`` and its PyPI package at ``X``
    (every one of these repositories is named as its package)."""
    pins = _pins()
    for repo in _config()['repos']:
        if repo['repo'] == 'local':
            continue
        package = repo['repo'].rstrip('/').rsplit('/', 1)[-1]
        assert package in pins, (
            f"requirements/lint.txt: no pin for {package} ({repo['repo']})")
        assert repo['rev'].lstrip('v') == pins[package], (
            f"{repo['repo']} is at {repo['rev']} in .pre-commit-config.yaml, "
            f'requirements/lint.txt pins {package}=={pins[package]}')
    assert 'pre-commit' in pins  # for `pre-commit install`


@needs_lint_tools
def test_pre_commit_accepts_the_config():
    proc = subprocess.run([
        sys.executable, '-m', 'pre_commit', 'validate-config',
        '.pre-commit-config.yaml'
    ],
                          cwd=ROOT,
                          capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture
def small_tree(tmp_path):
    """A tree with the lint's files and one Python file (not a git
    checkout: tools/lint.sh then lints every file under it)."""
    for rel in ('tools/lint.sh', 'setup.cfg', '.pre-commit-config.yaml',
                'requirements/lint.txt'):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(osp.join(ROOT, rel), tmp_path / rel)
    return tmp_path


def _lint(tree, *args):
    env = dict(os.environ, VENV=osp.dirname(osp.dirname(sys.executable)))
    return subprocess.run(
        ['bash', str(tree / 'tools' / 'lint.sh'), *args],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300)


BADLY_FORMATTED = 'x = {"a":1}\nprint( x )   \n'
FORMATTED = "x = {'a': 1}\nprint(x)\n"


@needs_lint_tools
def test_check_reports_what_fix_would_change_and_changes_nothing(small_tree):
    (small_tree / 'mod.py').write_text(BADLY_FORMATTED)
    (small_tree / 'notes.md').write_text('text  ')
    proc = _lint(small_tree)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    for hook in ('yapf', 'double-quote-string-fixer', 'trailing-whitespace',
                 'end-of-file-fixer'):
        assert f'[lint] {hook}: would change 1 file(s)' in out, out
    assert 'flake8: ok' in out  # nothing left once the fixers have run
    assert (small_tree / 'mod.py').read_text() == BADLY_FORMATTED
    assert (small_tree / 'notes.md').read_text() == 'text  '


@needs_lint_tools
def test_fix_applies_the_fixers_then_passes(small_tree):
    (small_tree / 'mod.py').write_text(BADLY_FORMATTED)
    (small_tree / 'notes.md').write_text('text  ')
    proc = _lint(small_tree, '--fix')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (small_tree / 'mod.py').read_text() == FORMATTED
    assert (small_tree / 'notes.md').read_text() == 'text\n'
    assert '[lint] all clean' in _lint(small_tree).stdout


@needs_lint_tools
def test_a_finding_no_fixer_fixes_fails_both_modes(small_tree):
    (small_tree / 'mod.py').write_text('import os\n')
    for args in ((), ('--fix', )):
        proc = _lint(small_tree, *args)
        assert proc.returncode == 1
        assert "mod.py:1:1: F401 'os' imported but unused" in proc.stdout
        assert '[lint] FAILED: flake8' in proc.stdout


@needs_lint_tools
def test_paths_limit_the_files(small_tree):
    (small_tree / 'a').mkdir()
    (small_tree / 'a' / 'ok.py').write_text(FORMATTED)
    (small_tree / 'b.py').write_text(BADLY_FORMATTED)
    proc = _lint(small_tree, '--fix', 'a')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (small_tree / 'b.py').read_text() == BADLY_FORMATTED
