"""mmhybrid: Hybrid Distillation (ICLR 2024) for the OpenMMLab ecosystem."""
import os
import os.path as osp
import platform
import re
import shutil
import sys
import warnings
from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))
# what `mim train/test/search mmhybrid ...` reads from mmhybrid/.mim
MIM_FILES = ['configs', 'tools', 'model-index.yml']


def read_version() -> str:
    with open(osp.join(HERE, 'mmhybrid', 'version.py')) as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


def read_requirements(name: str) -> list:
    with open(osp.join(HERE, 'requirements', name)) as f:
        return [
            line.strip() for line in f
            if line.strip() and not line.startswith('#')
        ]


def add_mim_extension():
    """Put configs, tools and model-index.yml under ``mmhybrid/.mim``, where
    OpenMMLab's ``mim`` looks for them (as mmpretrain's setup.py does).

    Editable installs (``pip install -e .``: ``develop`` or PEP 660's
    ``editable_wheel``) get symlinks to the originals (copies on Windows);
    built distributions (``sdist``, ``bdist_wheel``) get copies, which
    MANIFEST.in and ``include_package_data`` put into the archive. Building a
    wheel from an sdist finds the copies already in place and keeps them.
    """
    if 'develop' in sys.argv or 'editable_wheel' in sys.argv:
        mode = 'copy' if platform.system() == 'Windows' else 'symlink'
    elif 'sdist' in sys.argv or 'bdist_wheel' in sys.argv:
        mode = 'copy'
    else:
        return

    mim_path = osp.join(HERE, 'mmhybrid', '.mim')
    os.makedirs(mim_path, exist_ok=True)
    for filename in MIM_FILES:
        src_path = osp.join(HERE, filename)
        if not osp.exists(src_path):
            continue  # an unpacked sdist: only mmhybrid/.mim is there
        tar_path = osp.join(mim_path, filename)
        if osp.isfile(tar_path) or osp.islink(tar_path):
            os.remove(tar_path)
        elif osp.isdir(tar_path):
            shutil.rmtree(tar_path)

        if mode == 'symlink':
            os.symlink(osp.relpath(src_path, mim_path), tar_path)
        elif osp.isfile(src_path):
            shutil.copyfile(src_path, tar_path)
        elif osp.isdir(src_path):
            shutil.copytree(
                src_path,
                tar_path,
                ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        else:
            warnings.warn(f'Cannot copy file {src_path}.')


with open(osp.join(HERE, 'README.md'), encoding='utf-8') as f:
    long_description = f.read()

add_mim_extension()
setup(
    name='mmhybrid',
    version=read_version(),
    description='Hybrid Distillation: connecting masked autoencoders with '
    'contrastive learners, as an OpenMMLab plugin',
    long_description=long_description,
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmhybrid', 'mmhybrid.*']),
    # mmhybrid/.mim (configs, tools, model-index.yml), listed in MANIFEST.in
    include_package_data=True,
    python_requires='>=3.8',
    install_requires=read_requirements('runtime.txt'),
    extras_require=dict(
        downstream=read_requirements('downstream.txt'),
        tests=read_requirements('tests.txt'),
    ),
    license='Apache License 2.0',
    zip_safe=False,
)
