"""mmhybrid: Hybrid Distillation for OpenMMLab.

Importing the package only registers: its components into mmpretrain's
registries (which inherit from mmengine's), an mmengine file backend under a
new name, and mmengine's checkpoint types on torch's weights-only allow-list
(it admits more safe types, nothing else). So ``custom_imports =
dict(imports=['mmhybrid'])`` is all a config needs, and it changes no mmengine
function. mmhybrid's runner (``runner_type='mmpretrain.HybridRunner'``) brings
safe checkpoint I/O and the CPU fixes; the few fixes that need a process-wide
patch come only from :func:`enable_stack_fixes`, which mmhybrid's own entry
points (``tools/train.py``, ``tools/test.py``) call.
"""
from .version import __version__, check_dependency_versions, version_info

# before anything imports mmcv/mmengine/mmpretrain: an unsupported release
# fails here with the range to install, not later with an obscure error
check_dependency_versions()

from .utils.allow_list import register_safe_globals  # noqa: E402

register_safe_globals()

from . import datasets, engine, models  # noqa: E402,F401
from .engine import stack_fixes  # noqa: E402

enable_stack_fixes = stack_fixes.enable_stack_fixes
disable_stack_fixes = stack_fixes.disable_stack_fixes

__all__ = [
    '__version__', 'version_info', 'enable_stack_fixes', 'disable_stack_fixes'
]
