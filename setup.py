"""mmhybrid: Hybrid Distillation (ICLR 2024) for the OpenMMLab ecosystem."""
import os.path as osp
import re

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def read_version() -> str:
    with open(osp.join(HERE, 'mmhybrid', 'version.py')) as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


def read_requirements(name: str) -> list:
    with open(osp.join(HERE, 'requirements', name)) as f:
        return [
            line.strip() for line in f
            if line.strip() and not line.startswith('#')
        ]


with open(osp.join(HERE, 'README.md'), encoding='utf-8') as f:
    long_description = f.read()

setup(
    name='mmhybrid',
    version=read_version(),
    description='Hybrid Distillation: connecting masked autoencoders with '
    'contrastive learners, as an OpenMMLab plugin',
    long_description=long_description,
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmhybrid', 'mmhybrid.*']),
    python_requires='>=3.8',
    install_requires=read_requirements('runtime.txt'),
    extras_require=dict(
        downstream=read_requirements('downstream.txt'),
        tests=read_requirements('tests.txt'),
    ),
    license='Apache License 2.0',
    zip_safe=False,
)
