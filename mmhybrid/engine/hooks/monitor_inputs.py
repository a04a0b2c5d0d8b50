"""What the monitoring hooks share: the model under its wrapper, a batch's
images as the model sees them, and a sub-module switched to eval for a while.

The images of a batch are read *before* the data preprocessor (uint8, as the
pipeline packed them) and normalised here exactly as
:meth:`mmhybrid.analysis.vit_loading.AnalysisVit.normalize` does for the
offline tools, ``(x - mean) / std`` in fp32 on RGB input, so a hook and
``tools/analysis/attention_stats.py`` given the same images feed the model the
same numbers.
"""
import contextlib
from typing import Optional, Tuple

import torch
from mmengine.model import is_model_wrapper


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DDP / FSDP / mmengine's wrappers."""
    return model.module if is_model_wrapper(model) else model


def batch_images(inputs) -> torch.Tensor:
    """The ``(B, 3, H, W)`` images of a batch's ``inputs``: a stacked tensor, a
    list of per-sample ``(3, H, W)`` tensors (``pseudo_collate``), or a list of
    views each ``(B, 3, H, W)`` (self-supervised pipelines: the first view)."""
    if torch.is_tensor(inputs):
        return inputs
    inputs = list(inputs)
    if not inputs:
        raise ValueError('the batch has no images')
    if torch.is_tensor(inputs[0]) and inputs[0].dim() == 4:
        return inputs[0]
    return torch.stack(inputs)


def input_norm(
    data_preprocessor
) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor], bool]:
    """``(mean, std, to_rgb)`` of an mmpretrain data preprocessor: mean/std as
    ``(3,)`` fp32 CPU tensors (None without normalisation) and whether it flips
    BGR to RGB."""
    # SelfSupDataPreprocessor / mmengine's ImgDataPreprocessor keep the flag
    # in _channel_conversion, ClsDataPreprocessor in to_rgb
    to_rgb = getattr(data_preprocessor, '_channel_conversion', None)
    if to_rgb is None:
        to_rgb = getattr(data_preprocessor, 'to_rgb', False)
    to_rgb = bool(to_rgb)
    if not getattr(data_preprocessor, '_enable_normalize', False):
        return None, None, to_rgb
    mean = data_preprocessor.mean.detach().float().flatten().cpu()
    std = data_preprocessor.std.detach().float().flatten().cpu()
    return mean, std, to_rgb


def rgb_images(inputs, to_rgb: bool) -> torch.Tensor:
    """A batch's images in RGB channel order, on the CPU, as packed (uint8 for
    mmpretrain's pipelines)."""
    x = batch_images(inputs).detach().cpu()
    return x.flip(1) if to_rgb else x


def normalize(images: torch.Tensor,
              mean: Optional[torch.Tensor],
              std: Optional[torch.Tensor],
              device: Optional[torch.device] = None) -> torch.Tensor:
    """``(B, 3, H, W)`` RGB -> ``(x - mean) / std`` in fp32 on ``device``, the
    arithmetic of ``AnalysisVit.normalize``."""
    x = images.to(device=device, dtype=torch.float32)
    if mean is None:
        return x
    m = mean.to(device=x.device).view(1, 3, 1, 1)
    s = std.to(device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module):
    """``module`` in eval mode (no dropout, no drop path) and no autograd for a
    while; its training flags are put back afterwards."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        for m, mode in modes:
            m.training = mode


def module_device(module: torch.nn.Module) -> torch.device:
    """Where a module's first parameter (or buffer) lives; CPU for none."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device('cpu')
