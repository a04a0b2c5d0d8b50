"""mmhybrid: Hybrid Distillation for OpenMMLab.

Importing the package applies the stack fixes of :mod:`mmhybrid.compat` and
registers every component into mmpretrain's registries (which inherit from
mmengine's), so ``custom_imports = dict(imports=['mmhybrid'])`` is all a config
needs.
"""
from . import compat
from .version import __version__

compat.apply()

from . import datasets, engine, models  # noqa: E402,F401

__all__ = ['__version__']
