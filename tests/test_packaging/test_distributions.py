"""Real sdist and wheel of this checkout, installed and driven through mim.

The checkout (tracked and new, not ignored, files) is copied to a scratch
folder and built there with ``python -m build --no-isolation`` (sdist, then the
wheel from the unpacked sdist, as pip builds it), so the working tree's
``mmhybrid/.mim`` links are never replaced by copies. The wheel goes into a
scratch ``--target`` that ``mim`` then sees first on ``PYTHONPATH``.
"""
import glob
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest
import yaml

from mmhybrid import __version__

pytestmark = pytest.mark.slow

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO_CONFIG = 'configs/demo/hybrid-distill_vit-tiny-p8_1xb32-300i_shapes.py'
MIM = [sys.executable, '-m', 'mim']


def _mim_files():
    """What must sit under mmhybrid/.mim: every file of configs/ and tools/
    (MANIFEST.in ships *.py, *.sh, *.yml) and the model index."""
    files = ['model-index.yml']
    for top in ('configs', 'tools'):
        for path in glob.glob(osp.join(ROOT, top, '**', '*'), recursive=True):
            if osp.isfile(path) and '__pycache__' not in path:
                files.append(osp.relpath(path, ROOT).replace(osp.sep, '/'))
    return sorted(files)


def _run(cmd, cwd, env=None, timeout=600):
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f'{cmd}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}')
    return proc


@pytest.fixture(scope='module')
def dists(tmp_path_factory):
    """(sdist, wheel) built from a copy of the checkout."""
    tmp = tmp_path_factory.mktemp('dist')
    src = tmp / 'src'
    listed = subprocess.run(
        ['git', 'ls-files', '-co', '--exclude-standard', '-z'],
        cwd=ROOT,
        capture_output=True,
        check=True).stdout.decode().split('\0')
    for rel in filter(None, listed):
        if osp.isfile(osp.join(ROOT, rel)):
            os.makedirs(osp.dirname(src / rel), exist_ok=True)
            shutil.copy2(osp.join(ROOT, rel), src / rel)
    _run([
        sys.executable, '-m', 'build', '--no-isolation', '--outdir',
        str(tmp / 'out'),
        str(src)
    ],
         cwd=tmp)
    (sdist, ) = glob.glob(str(tmp / 'out' / '*.tar.gz'))
    (wheel, ) = glob.glob(str(tmp / 'out' / '*.whl'))
    return sdist, wheel


@pytest.fixture(scope='module')
def installed_wheel(dists, tmp_path_factory):
    """The wheel installed alone into a scratch --target; an environment whose
    PYTHONPATH starts there imports (and mim finds) that copy."""
    target = tmp_path_factory.mktemp('site')
    _run([
        sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-index',
        '--target',
        str(target), dists[1]
    ],
         cwd=target)
    env = dict(os.environ, PYTHONPATH=str(target), COLUMNS='250')
    return str(target), env


def test_sdist_ships_requirements_and_the_mim_folder(dists):
    with tarfile.open(dists[0]) as tar:
        top = f'mmhybrid-{__version__}/'
        names = {n[len(top):] for n in tar.getnames() if n.startswith(top)}
    assert {
        'setup.py', 'MANIFEST.in', 'requirements/runtime.txt',
        'requirements/downstream.txt', 'requirements/tests.txt', 'README.md',
        'CHANGELOG.md'
    } <= names
    missing = [f for f in _mim_files() if f'mmhybrid/.mim/{f}' not in names]
    assert not missing, missing
    # every page the README links to (docs/*.md) travels with it
    with open(osp.join(ROOT, 'README.md')) as f:
        linked = set(re.findall(r'\]\((docs/[^)#]+\.md)', f.read()))
    assert linked and linked <= names, sorted(linked - names)


def test_wheel_ships_configs_tools_and_model_index(dists):
    with zipfile.ZipFile(dists[1]) as whl:
        names = set(whl.namelist())
    shipped = sorted(n[len('mmhybrid/.mim/'):] for n in names
                     if n.startswith('mmhybrid/.mim/'))
    assert shipped == _mim_files()
    assert not [n for n in names if '__pycache__' in n or n.endswith('.pyc')]
    # the package itself, not the repository's top-level folders
    assert not [
        n for n in names if n.split('/')[0] in ('configs', 'tools', 'tests')
    ]


def test_installed_wheel_has_the_mim_files(installed_wheel):
    target, _ = installed_wheel
    mim = osp.join(target, 'mmhybrid', '.mim')
    for rel in _mim_files():
        assert osp.isfile(osp.join(mim, rel)), rel
    assert not osp.islink(osp.join(mim, 'configs'))  # copies, not links
    with open(osp.join(ROOT, 'configs', 'hybrid_vitb.py')) as f, \
            open(osp.join(mim, 'configs', 'hybrid_vitb.py')) as g:
        assert f.read() == g.read()


def _model_names():
    names = []
    for metafile in yaml.safe_load(open(osp.join(
            ROOT, 'model-index.yml')))['Import']:
        names += [
            m['Name']
            for m in yaml.safe_load(open(osp.join(ROOT, metafile)))['Models']
        ]
    return names


def test_mim_search_lists_every_model_of_the_installed_wheel(
        installed_wheel, tmp_path):
    target, env = installed_wheel
    out = _run(
        MIM + ['search', 'mmhybrid', '--field', 'config'],
        cwd=tmp_path,
        env=env).stdout
    for name in _model_names():
        assert name in out, name
    # one model by its name, as `mim search mmhybrid --config NAME`
    name = ('hybrid-distill_vit-base-p16_clip-b16-mae-b16_'
            '8xb256-amp-coslr-300e_in1k')
    out = _run(
        MIM + ['search', 'mmhybrid', '--config', name], cwd=tmp_path,
        env=env).stdout
    assert name in out and 'vit-large' not in out


def test_mim_finds_the_editable_checkout_on_pythonpath(tmp_path):
    """`make install` installs this checkout editable: its mmhybrid/.mim
    entries are links to the checkout's own configs, tools and index.

    mim 0.3.9 looks for a package next to its metadata, which a PEP 660
    editable install keeps in site-packages; with the checkout first on
    PYTHONPATH, its mmhybrid.egg-info (written by the editable install) is
    found instead.
    """
    for name in ('configs', 'tools', 'model-index.yml'):
        link = osp.join(ROOT, 'mmhybrid', '.mim', name)
        assert osp.islink(link), f'{link}: reinstall with `make install`'
        assert osp.realpath(link) == osp.realpath(osp.join(ROOT, name))
    env = dict(os.environ, PYTHONPATH=ROOT, COLUMNS='250')
    out = _run(
        MIM + ['search', 'mmhybrid', '--field', 'config'],
        cwd=tmp_path,
        env=env).stdout
    for name in _model_names():
        assert name in out, name


def test_mim_train_runs_the_demo_config_from_the_installed_wheel(
        installed_wheel, tmp_path, demo_train_cmd):
    """`mim train mmhybrid configs/demo/....py --gpus 0` from a folder without
    that path: mim finds the config in the wheel's .mim/configs and runs the
    wheel's .mim/tools/train.py on the CPU."""
    target, env = installed_wheel
    work = tmp_path / 'work'
    # ['python', 'tools/train.py', CONFIG, '--work-dir', ...] -> the options
    options = demo_train_cmd(work, 2)[3:]
    proc = _run(
        MIM + ['train', 'mmhybrid', DEMO_CONFIG, '--gpus', '0'] + options,
        cwd=tmp_path,
        env=env)
    packaged = osp.join(osp.realpath(target), 'mmhybrid', '.mim')
    assert osp.join(packaged, DEMO_CONFIG) in proc.stdout
    assert osp.join(packaged, 'tools', 'train.py') in proc.stdout
    assert osp.isfile(work / 'iter_2.pth')


SUP_CONFIG = 'configs/demo/vit-tiny-p8_sup_1xb32-300i_shapes.py'


def _top1(output, loop):
    """accuracy/top1 of the last ``Iter(val)`` / ``Iter(test)`` log line."""
    lines = [
        ln for ln in output.splitlines()
        if f'Iter({loop})' in ln and 'accuracy/top1' in ln
    ]
    assert lines, output[-3000:]
    return float(lines[-1].split('accuracy/top1:')[1].split()[0])


def test_mim_train_with_the_pytorch_launcher_then_mim_test(
        installed_wheel, tmp_path, shapes_imagenet):
    """The shape of `mim train mmhybrid CONFIG --gpus 8 --launcher pytorch`
    (two CPU processes here, gloo), then `mim test` of its checkpoint: the test
    gives the accuracy the run's last validation gave."""
    _, env = installed_wheel
    data = shapes_imagenet
    options = [
        '--cfg-options', f'train_dataloader.dataset.data_root={data}',
        f'val_dataloader.dataset.data_root={data}',
        f'test_dataloader.dataset.data_root={data}', 'train_cfg.max_iters=2',
        'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=2',
        'train_dataloader.batch_size=8', 'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'val_dataloader.num_workers=0', 'test_dataloader.num_workers=0'
    ]
    train = _run(
        MIM + [
            'train', 'mmhybrid', SUP_CONFIG, '--gpus', '2', '--launcher',
            'pytorch', '--work-dir',
            str(tmp_path / 'train')
        ] + options,
        cwd=tmp_path,
        env=env)
    assert 'torch.distributed.launch --nproc_per_node=2' in train.stdout
    ckpt = tmp_path / 'train' / 'iter_2.pth'
    assert osp.isfile(ckpt)
    test = _run(
        MIM + [
            'test', 'mmhybrid', SUP_CONFIG, '--checkpoint',
            str(ckpt), '--gpus', '0', '--work-dir',
            str(tmp_path / 'test')
        ] + options,
        cwd=tmp_path,
        env=env)
    assert _top1(test.stdout + test.stderr,
                 'test') == _top1(train.stdout + train.stderr, 'val')
