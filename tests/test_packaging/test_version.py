"""mmhybrid.version_info and the import-time check of OpenMMLab versions."""
import re

import pytest

import mmhybrid
from mmhybrid.version import (CHECKED_PACKAGES, incompatible_versions,
                              parse_version_info, supported_ranges)

RANGES = {
    'mmcv': '>=2.0.0,<2.2.0',
    'mmengine': '>=0.10.4,<1.0',
    'mmpretrain': '>=1.2.0,<1.3'
}
INSIDE = {'mmcv': '2.1.0', 'mmengine': '0.10.7', 'mmpretrain': '1.2.0'}


def test_version_info_is_the_version_as_a_tuple():
    assert mmhybrid.version_info == tuple(
        int(x) for x in mmhybrid.__version__.split('.'))
    assert parse_version_info('1.2.0rc1') == (1, 2, 0, 'rc1')
    assert parse_version_info('2.0.0') > parse_version_info('1.10.3')


@pytest.mark.parametrize('name,version', [('mmcv', '2.2.0'), ('mmcv', '1.7.2'),
                                          ('mmengine', '1.0.0'),
                                          ('mmengine', '0.10.3'),
                                          ('mmpretrain', '1.3.0'),
                                          ('mmpretrain', '1.3.0rc1'),
                                          ('mmpretrain', '1.0.0rc8')])
def test_version_outside_the_range_names_the_range_to_install(name, version):
    messages = incompatible_versions(dict(INSIDE, **{name: version}), RANGES)
    assert messages == [
        f'{name}=={version} is installed but incompatible with mmhybrid '
        f'{mmhybrid.__version__}. Please install {name}{RANGES[name]}.'
    ]


def test_versions_inside_the_range_pass_and_missing_packages_are_left_to_pip():
    assert incompatible_versions(INSIDE, RANGES) == []
    assert incompatible_versions(
        {
            'mmcv': '2.1.2',
            'mmengine': '0.10.4',
            'mmpretrain': '1.2.99'
        }, RANGES) == []
    assert incompatible_versions(dict(INSIDE, mmcv=None), RANGES) == []


def test_ranges_are_the_package_requirements():
    """The check reads requirements/runtime.txt (through the installed
    metadata), the one place the ranges are written."""
    with open(
            mmhybrid.__file__.replace('mmhybrid/__init__.py',
                                      'requirements/runtime.txt')) as f:
        runtime = f.read()
    ranges = supported_ranges()
    assert set(ranges) == set(CHECKED_PACKAGES)
    for name, spec in ranges.items():
        line = re.search(rf'^{name}(\S*)$', runtime, re.M).group(1)
        assert sorted(spec.split(',')) == sorted(line.split(','))
