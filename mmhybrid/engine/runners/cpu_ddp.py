"""``MMDistributedDataParallel`` that accepts CPU modules (gloo)."""
import torch.nn as nn
from mmengine.model import MMDistributedDataParallel
from mmpretrain.registry import MODEL_WRAPPERS

from .helpers import drop_cpu_device_ids


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """mmengine's DDP wrapper, minus ``device_ids`` for a module on the CPU.

    mmengine's ``Runner.wrap_model`` passes ``device_ids=[LOCAL_RANK]`` to
    every ``DistributedDataParallel`` subclass, and torch refuses device ids
    for a CPU module, so a distributed run on CPUs (gloo) dies while wrapping
    the model.
    :class:`~mmhybrid.engine.HybridRunner` uses this wrapper on machines
    without CUDA; a GPU module keeps its device ids.

    Args:
        module (nn.Module): The model to wrap.
        detect_anomalous_params (bool): As in ``MMDistributedDataParallel``.
            Defaults to False.
        **kwargs: ``torch.nn.parallel.DistributedDataParallel`` arguments.
    """

    def __init__(self,
                 module: nn.Module,
                 detect_anomalous_params: bool = False,
                 **kwargs) -> None:
        super().__init__(
            module=module,
            detect_anomalous_params=detect_anomalous_params,
            **drop_cpu_device_ids(module, kwargs))
