"""mmhybrid's release (setup.py reads the ``__version__`` line; changes are
listed in CHANGELOG.md) and the import-time check of the OpenMMLab versions."""
__version__ = '0.1.0'

import os.path as osp
from typing import Dict, Iterable, List, Optional, Tuple

# The OpenMMLab libraries whose supported ranges are checked when mmhybrid is
# imported. The ranges themselves are written once, in requirements/runtime.txt
# (setup.py turns them into the package's install_requires).
CHECKED_PACKAGES = ('mmcv', 'mmengine', 'mmpretrain')


def parse_version_info(version_str: str) -> Tuple:
    """``'1.2.0'`` -> ``(1, 2, 0)``, ``'1.2.0rc1'`` -> ``(1, 2, 0, 'rc1')``
    (mmpretrain's ``version_info`` form)."""
    version_info = []
    for x in version_str.split('.'):
        if x.isdigit():
            version_info.append(int(x))
        elif x.find('rc') != -1:
            patch_version = x.split('rc')
            version_info.append(int(patch_version[0]))
            version_info.append(f'rc{patch_version[1]}')
    return tuple(version_info)


version_info = parse_version_info(__version__)


def supported_ranges() -> Dict[str, str]:
    """``{'mmcv': '>=2.0.0,<2.2.0', ...}`` for :data:`CHECKED_PACKAGES`: the
    installed mmhybrid's requirements (its metadata), or, for a source tree on
    ``sys.path`` that was never installed, ``requirements/runtime.txt``."""
    from importlib import metadata
    try:
        lines = metadata.requires('mmhybrid') or []
    except metadata.PackageNotFoundError:
        path = osp.join(
            osp.dirname(osp.dirname(osp.abspath(__file__))), 'requirements',
            'runtime.txt')
        if not osp.exists(path):
            return {}
        with open(path) as f:
            lines = [
                ln.strip() for ln in f if ln.strip() and not ln.startswith('#')
            ]
    return _ranges(lines)


def _ranges(lines: Iterable[str]) -> Dict[str, str]:
    from packaging.requirements import Requirement
    out = {}
    for line in lines:
        req = Requirement(line)
        if req.marker is not None:  # extras (downstream, tests)
            continue
        if req.name.lower() in CHECKED_PACKAGES and str(req.specifier):
            # lower bound first: '>=2.0.0,<2.2.0'
            out[req.name.lower()] = ','.join(
                str(s) for s in sorted(
                    req.specifier,
                    key=lambda s: (s.operator[0] != '>', str(s))))
    return out


def incompatible_versions(installed: Dict[str, Optional[str]],
                          ranges: Dict[str, str]) -> List[str]:
    """One message per installed package outside its supported range.

    Args:
        installed: package name -> installed version (``None``: not
            installed, left to pip and to the import that needs it).
        ranges: package name -> specifier, e.g. ``'>=2.0.0,<2.2.0'``.
    """
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version
    messages = []
    for name, spec in sorted(ranges.items()):
        version = installed.get(name)
        if version is None:
            continue
        try:
            ok = SpecifierSet(spec).contains(
                Version(version), prereleases=True)
        except InvalidVersion:
            ok = False
        if not ok:
            messages.append(
                f'{name}=={version} is installed but incompatible with '
                f'mmhybrid {__version__}. Please install {name}{spec}.')
    return messages


def check_dependency_versions() -> None:
    """Raise ImportError naming every OpenMMLab library outside mmhybrid's
    supported range (as mmpretrain does for mmcv and mmengine)."""
    from importlib import metadata
    installed = {}
    for name in CHECKED_PACKAGES:
        try:
            installed[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed[name] = None
    messages = incompatible_versions(installed, supported_ranges())
    if messages:
        raise ImportError('\n'.join(messages))
