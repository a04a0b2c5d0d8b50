"""mmhybrid: Hybrid Distillation for OpenMMLab.

Importing the package applies the stack fixes of :mod:`mmhybrid.compat` and
registers every component into mmpretrain's registries (which inherit from
mmengine's), so ``custom_imports = dict(imports=['mmhybrid'])`` is all a config
needs.
"""
from .version import __version__, check_dependency_versions, version_info

# before anything imports mmcv/mmengine/mmpretrain: an unsupported release fails
# here with the range to install, not later with an obscure error
check_dependency_versions()

from . import compat  # noqa: E402

compat.apply()

from . import datasets, engine, models  # noqa: E402,F401

__all__ = ['__version__', 'version_info']
