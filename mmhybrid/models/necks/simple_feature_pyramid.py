"""ViTDet's simple feature pyramid (Li et al., ECCV 2022) as an MMLab neck.

mmdet's pip wheel does not ship ``projects/ViTDet``, so the neck lives here. It
is registered in mmengine's root ``MODELS`` registry, so mmdet and mmseg
configs (and mmpretrain ones) find it by its plain name,
``type='SimpleFeaturePyramid'``.

From the last feature map of a plain ViT (stride ``s``, e.g. 16) it builds maps
at ``s / f`` for each scale factor ``f`` (default ``(4, 2, 1, 0.5)``: strides
4, 8, 16, 32 for a /16 ViT) with transposed convolutions (up) or max pooling
(down), then a 1x1 lateral and a 3x3 output convolution per level, as ViTDet's
``SimpleFPN``. Extra levels (``num_outs`` > number of scales) are max pools of
the last one, as mmdet's FPN does for the RPN's stride-64 level.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_norm_layer
from mmengine.model import BaseModule
from mmengine.registry import MODELS


def _is_power_of_two(x: float) -> bool:
    return x > 0 and math.log2(x).is_integer()


@MODELS.register_module()
class SimpleFeaturePyramid(BaseModule):
    """ViTDet's simple feature pyramid.

    Args:
        backbone_channel (int): Channels of the ViT feature map.
        out_channels (int): Channels of every output level.
        scale_factors (Sequence[float]): Up/down-sampling of each level
            relative to the ViT map; powers of two. Defaults to ``(4.0, 2.0,
            1.0, 0.5)``.
        num_outs (int, optional): Output levels; extra ones are stride-2 max
            pools of the last. Defaults to ``len(scale_factors) + 1``.
        norm_cfg (dict, optional): Norm after every conv (ViTDet uses
            ``'mmpretrain.LN2d'``); also used between the two transposed convs
            of a 4x level. Defaults to None (no norm; the convs get a bias).
        act_cfg (dict, optional): Activation after the lateral/output convs.
            Defaults to None, as ViTDet.
        in_index (int): Which backbone output to use. Defaults to -1 (the
            last).
        init_cfg (dict | list, optional): Initialisation config.
    """

    def __init__(self,
                 backbone_channel: int,
                 out_channels: int,
                 scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
                 num_outs: Optional[int] = None,
                 norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = None,
                 in_index: int = -1,
                 init_cfg=None) -> None:
        super().__init__(init_cfg)
        self.backbone_channel = backbone_channel
        self.out_channels = out_channels
        self.scale_factors = tuple(float(f) for f in scale_factors)
        self.num_outs = (
            len(self.scale_factors) + 1 if num_outs is None else int(num_outs))
        if self.num_outs < len(self.scale_factors):
            raise ValueError(
                f'num_outs ({self.num_outs}) < number of scale factors '
                f'({len(self.scale_factors)})')
        self.in_index = in_index
        self.stages = nn.ModuleList()
        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        for factor in self.scale_factors:
            if not _is_power_of_two(factor):
                raise ValueError(
                    f'scale factors must be powers of two, got {factor}')
            stage, channels = self._make_stage(factor, backbone_channel,
                                               norm_cfg)
            self.stages.append(stage)
            self.lateral_convs.append(
                ConvModule(
                    channels,
                    out_channels,
                    1,
                    norm_cfg=norm_cfg,
                    act_cfg=act_cfg,
                    inplace=False))
            self.fpn_convs.append(
                ConvModule(
                    out_channels,
                    out_channels,
                    3,
                    padding=1,
                    norm_cfg=norm_cfg,
                    act_cfg=act_cfg,
                    inplace=False))

    @staticmethod
    def _make_stage(factor: float, channels: int,
                    norm_cfg: Optional[dict]) -> Tuple[nn.Module, int]:
        """Rescaling layers for one level and their output channels."""
        if factor == 1:
            return nn.Identity(), channels
        if factor < 1:
            k = int(round(1 / factor))
            return nn.MaxPool2d(kernel_size=k, stride=k), channels
        layers = []
        steps = int(round(math.log2(factor)))
        for i in range(steps):
            if i > 0:  # between two transposed convs: norm + GELU, as ViTDet
                if norm_cfg is not None:
                    layers.append(build_norm_layer(norm_cfg, channels)[1])
                layers.append(nn.GELU())
            layers.append(
                nn.ConvTranspose2d(channels, channels // 2, 2, stride=2))
            channels //= 2
        return nn.Sequential(*layers), channels

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor]:
        """``inputs``: the backbone's outputs (``(B, C, H, W)`` maps); returns
        ``num_outs`` maps from the finest to the coarsest."""
        if isinstance(inputs, torch.Tensor):
            inputs = [inputs]
        x = inputs[self.in_index]
        outs = [
            fpn(lateral(stage(x))) for stage, lateral, fpn in zip(
                self.stages, self.lateral_convs, self.fpn_convs)
        ]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs)
