from .cpu_ddp import CPUDistributedDataParallel
from .hybrid_runner import HybridRunner

__all__ = ['CPUDistributedDataParallel', 'HybridRunner']
