from . import safe_io  # noqa: F401  (registers the atomic file backend)
from .bf16_optim_wrapper import BF16OptimWrapper
from .hooks import *  # noqa: F401,F403
from .optimizers import *  # noqa: F401,F403
from .runners import CPUDistributedDataParallel, HybridRunner

__all__ = ['BF16OptimWrapper', 'HybridRunner', 'CPUDistributedDataParallel']
