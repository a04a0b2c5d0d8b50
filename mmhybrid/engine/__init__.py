from . import safe_io
from .bf16_optim_wrapper import BF16OptimWrapper
from .hooks import *  # noqa: F401,F403
from .optimizers import *  # noqa: F401,F403

# every checkpoint mmengine reads or writes goes through mmhybrid's safe I/O
safe_io.apply()

__all__ = ['BF16OptimWrapper']
