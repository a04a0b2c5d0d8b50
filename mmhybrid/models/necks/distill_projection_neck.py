from typing import Optional

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS


@MODELS.register_module()
class DistillProjectionNeck(BaseModule):
    """Projects student tokens to the feature teacher's width.

    ``'linear'``: one ``Linear(in, out)`` (the default, as in Feature
    Distillation). ``'mlp'``: ``Linear(in, hidden) -> GELU -> Linear(hidden,
    out)``.

    Args:
        in_channels (int): Student width.
        out_channels (int): Feature teacher width.
        proj_type (str): ``'linear'`` or ``'mlp'``. Defaults to ``'linear'``.
        hidden_channels (int, optional): MLP hidden width; defaults to
            ``4 * out_channels``.
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        proj_type: str = 'linear',
        hidden_channels: Optional[int] = None,
        init_cfg: Optional[dict] = dict(
            type='TruncNormal', layer='Linear', std=0.02, bias=0.)
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = in_channels
        self.out_channels = out_channels
        if proj_type == 'linear':
            self.proj = nn.Linear(in_channels, out_channels)
        elif proj_type == 'mlp':
            hidden = hidden_channels or 4 * out_channels
            self.proj = nn.Sequential(
                nn.Linear(in_channels, hidden), nn.GELU(),
                nn.Linear(hidden, out_channels))
        else:
            raise ValueError(
                f"DistillProjectionNeck: proj_type must be 'linear' "
                f"or 'mlp', got {proj_type!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, L, in_channels) -> (B, L, out_channels)``."""
        return self.proj(x)
