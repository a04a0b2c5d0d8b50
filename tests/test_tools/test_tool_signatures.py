"""The command lines of tools/train.py, tools/test.py and the launch scripts
are mmpretrain's: the same flags (ours may add the extras named here) and the
same positional arguments of dist_*.sh and slurm_*.sh."""
import os
import os.path as osp
import re
import runpy
import subprocess
import sys

import pytest

# What our tools add on top of mmpretrain's. A flag added to (or dropped from)
# either side must be listed here, so the difference is a decision.
EXTRA_OPTIONS = {
    'train.py': {'--max-nonfinite-skips'},
    'test.py': set(),
}


def _mmpretrain_tool(name):
    import mmpretrain
    path = osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'tools', name)
    assert osp.isfile(path), f'mmpretrain ships no {path}'
    return path


def _help(script, monkeypatch, capsys):
    """``script --help``, run in this process as ``python script`` would."""
    monkeypatch.setattr(sys, 'argv', [script, '--help'])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(script, run_name='__main__')
    assert exit_info.value.code in (0, None)
    return capsys.readouterr().out


def _signature(help_text):
    """The positional names (in order) and option strings of a help text."""
    positionals, options, section = [], set(), None
    for line in help_text.splitlines():
        if line and not line.startswith(' '):
            section = line
            continue
        if not re.match(r'  \S', line):
            continue  # a wrapped help line
        # the invocation ends where the help text starts (2+ spaces)
        invocation = re.split(r'\s{2,}', line.strip())[0]
        if section.startswith('positional'):
            positionals.append(invocation)
        else:
            options.update(
                re.findall(r'(?<![\w-])--?[A-Za-z][\w-]*', invocation))
    return positionals, options


@pytest.mark.parametrize('tool', sorted(EXTRA_OPTIONS))
def test_help_has_mmpretrains_arguments_and_only_the_listed_extras(
        tool, repo_root, monkeypatch, capsys):
    monkeypatch.chdir(repo_root)
    theirs = _signature(_help(_mmpretrain_tool(tool), monkeypatch, capsys))
    ours = _signature(
        _help(osp.join(repo_root, 'tools', tool), monkeypatch, capsys))
    assert ours[0] == theirs[0]  # positionals
    assert theirs[1] - ours[1] == set(), 'mmpretrain options we lack'
    assert ours[1] - theirs[1] == EXTRA_OPTIONS[tool]


# ------------------------------------------------------------ launch scripts
@pytest.fixture
def recorder(tmp_path):
    """An executable that records its arguments, one per line; ``.args()``
    returns them.

    Stands in for ``srun`` / the Python of torchrun, whose argument layout is
    what these tests check (real runs: test_train_e2e,
    tests/test_reliability/test_slurm.py).
    """

    class Recorder:
        bin_dir = tmp_path / 'bin'
        log = tmp_path / 'args.txt'

        def make(self, name):
            self.bin_dir.mkdir(exist_ok=True)
            exe = self.bin_dir / name
            exe.write_text('#!/usr/bin/env bash\n'
                           f'printf "%s\\n" "$@" > "{self.log}"\n')
            exe.chmod(0o755)
            return str(exe)

        def env(self, **kw):
            env = dict(os.environ, **{k: str(v) for k, v in kw.items()})
            env['PATH'] = f'{self.bin_dir}{os.pathsep}{env["PATH"]}'
            return env

        def args(self):
            return self.log.read_text().splitlines()

    return Recorder()


def _run(repo_root, argv, env):
    proc = subprocess.run(
        argv,
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _srun_tail(args, script):
    """The command srun starts: from the Python executable on."""
    i = next(i for i, a in enumerate(args) if a.endswith(f'tools/{script}'))
    return args[i - 2:]


def test_slurm_train_takes_work_dir_as_fourth_argument(repo_root, recorder):
    recorder.make('srun')
    env = recorder.env(
        GPUS=16, GPUS_PER_NODE=8, CPUS_PER_TASK=4, PYTHON='python3')
    _run(repo_root, [
        'bash', 'tools/slurm_train.sh', 'gpu', 'job', 'cfg.py', 'work dir',
        '--amp', '--cfg-options', 'a=[1, 2]'
    ], env)
    args = recorder.args()
    assert args[:8] == [
        '-p', 'gpu', '--job-name=job', '--gres=gpu:8', '--ntasks=16',
        '--ntasks-per-node=8', '--cpus-per-task=4', '--kill-on-bad-exit=1'
    ]
    assert _srun_tail(args, 'train.py') == [
        'python3', '-u',
        osp.join(repo_root, 'tools',
                 'train.py'), 'cfg.py', '--work-dir=work dir',
        '--launcher=slurm', '--amp', '--cfg-options', 'a=[1, 2]'
    ]


def test_slurm_train_without_work_dir_passes_options_on(repo_root, recorder):
    """The form before mmpretrain's signature (options right after CONFIG)
    keeps working: the work dir then comes from --work-dir or the config."""
    recorder.make('srun')
    _run(repo_root, [
        'bash', 'tools/slurm_train.sh', 'gpu', 'job', 'cfg.py', '--work-dir',
        'w'
    ], recorder.env(PYTHON='python3'))
    assert _srun_tail(recorder.args(), 'train.py')[3:] == [
        'cfg.py', '--launcher=slurm', '--work-dir', 'w'
    ]


def test_slurm_test_takes_config_and_checkpoint(repo_root, recorder):
    recorder.make('srun')
    _run(repo_root, [
        'bash', 'tools/slurm_test.sh', 'gpu', 'job', 'cfg.py', 'ckpt.pth',
        '--out', 'preds.pkl'
    ], recorder.env(PYTHON='python3'))
    args = recorder.args()
    assert '--gres=gpu:8' in args and '--ntasks=8' in args
    assert _srun_tail(args, 'test.py')[3:] == [
        'cfg.py', 'ckpt.pth', '--launcher=slurm', '--out', 'preds.pkl'
    ]


@pytest.mark.parametrize('script', ['slurm_train.sh', 'slurm_test.sh'])
def test_slurm_cpu_mode_requests_no_gpus(script, repo_root, recorder):
    recorder.make('srun')
    _run(repo_root, ['bash', f'tools/{script}', 'debug', 'job', 'cfg.py', 'x'],
         recorder.env(GPUS=2, GPUS_PER_NODE=0, CPUS_PER_TASK=1))
    args = recorder.args()
    assert not [a for a in args if a.startswith('--gres')]
    assert '--ntasks=2' in args and '--ntasks-per-node=2' in args


def test_dist_test_takes_config_checkpoint_gpus(repo_root, recorder):
    python = recorder.make('python')
    _run(repo_root, [
        'bash', 'tools/dist_test.sh', 'cfg.py', 'ckpt.pth', '2', '--out',
        'my preds.pkl'
    ], recorder.env(PYTHON=python, PORT=29555))
    args = recorder.args()
    assert args[:2] == ['-m', 'torch.distributed.run']
    assert '--nproc_per_node=2' in args and '--master_port=29555' in args
    i = args.index(osp.join(repo_root, 'tools', 'test.py'))
    assert args[i + 1:] == [
        'cfg.py', 'ckpt.pth', '--launcher', 'pytorch', '--out', 'my preds.pkl'
    ]


def test_dist_train_takes_config_gpus(repo_root, recorder):
    python = recorder.make('python')
    _run(repo_root,
         ['bash', 'tools/dist_train.sh', 'cfg.py', '3', '--work-dir', 'a b'],
         recorder.env(PYTHON=python))
    args = recorder.args()
    assert '--nproc_per_node=3' in args
    i = args.index(osp.join(repo_root, 'tools', 'train.py'))
    assert args[i + 1:] == [
        'cfg.py', '--launcher', 'pytorch', '--work-dir', 'a b'
    ]
