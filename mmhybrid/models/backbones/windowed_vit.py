"""ViTDet's backbone on the student's own keys, with the strict load.

Li et al. 2022 (ViTDet) fine-tune a plain ViT for detection at 1024 px with
windowed attention (14 x 14 windows) in most blocks, global attention in a few
evenly spaced ones (2, 5, 8, 11 of ViT-B) and decomposed relative position
biases initialised to zero, the absolute position embedding of pretraining
interpolated to the new grid.

mmpretrain's ``ViTSAM`` has that attention but not the student's key layout:
no [CLS] token, a ``(1, H, W, C)`` position embedding without the [CLS]
position, and no final norm, so three of the student's tensors would not load.
:class:`WindowedViT` is mmpretrain's ``VisionTransformer`` instead (through
:class:`StrictPretrainedViT`: every student tensor loaded or an error) whose
block attentions are :class:`WindowedAttention` (mmpretrain's ``vit_sam``
window and relative-position helpers). The student's [CLS] token is kept: it
takes part in the global blocks and attends to itself in the windowed ones
(it belongs to no window); the patch tokens see exactly ViTDet's windows.
"""
from typing import Optional, Sequence

import torch
from mmpretrain.models.utils import resize_pos_embed
from mmpretrain.registry import MODELS

from .strict_pretrained_vit import StrictPretrainedViT
from .windowed_attention import WindowedAttention

#: the keys :class:`WindowedViT` adds to mmpretrain's ViT (no checkpoint of a
#: plain ViT has them): give it as ``init_cfg.allow`` / the converter's
#: ``--allow`` so they are reported as new and keep their zero init
REL_POS_KEYS = r'^layers\.\d+\.attn\.rel_pos_[hw]$'


@MODELS.register_module()
class WindowedViT(StrictPretrainedViT):
    """:class:`StrictPretrainedViT` with ViTDet's windowed attention and
    relative position biases.

    Args:
        *args: :class:`~mmpretrain.models.backbones.VisionTransformer`'s.
        window_size (int): Window side in patches (ViTDet: 14). Defaults to 14.
        global_attn_indexes (Sequence[int]): Blocks with global attention
            (ViTDet's ViT-B: 2, 5, 8, 11). Defaults to ``(2, 5, 8, 11)``.
        use_rel_pos (bool): Relative position biases in every block (zeros;
            the window size for windowed blocks, the ``img_size`` patch grid
            for global ones). Defaults to True.
        **kwargs: :class:`~mmpretrain.models.backbones.VisionTransformer`'s
            (``img_size``, ``patch_size``, ``out_type``, ``init_cfg``, ...).
    """

    def __init__(self,
                 *args,
                 window_size: int = 14,
                 global_attn_indexes: Sequence[int] = (2, 5, 8, 11),
                 use_rel_pos: bool = True,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        indexes = sorted(int(i) for i in global_attn_indexes)
        bad = [i for i in indexes if not 0 <= i < self.num_layers]
        if bad or window_size < 1:
            raise ValueError(
                f'WindowedViT: global_attn_indexes={list(global_attn_indexes)}'
                f', window_size={window_size}: expected block indexes in '
                f'[0, {self.num_layers}) and a window of at least 1 patch')
        self.window_size = int(window_size)
        self.global_attn_indexes = indexes
        grid = tuple(self.patch_resolution)
        for i, layer in enumerate(self.layers):
            windowed = i not in indexes
            size: Optional[tuple] = None
            if use_rel_pos:
                size = (window_size, window_size) if windowed else grid
            layer.attn = WindowedAttention.from_attention(
                layer.attn, window_size if windowed else 0, size)

    def forward(self, x):
        """mmpretrain's ``VisionTransformer.forward`` with the patch grid
        passed to every block's attention."""
        B = x.shape[0]
        x, hw = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        x = x + resize_pos_embed(
            self.pos_embed,
            self.patch_resolution,
            hw,
            mode=self.interpolate_mode,
            num_extra_tokens=self.num_extra_tokens)
        x = self.pre_norm(self.drop_after_pos(x))

        outs = []
        for i, layer in enumerate(self.layers):
            x = x + layer.attn(layer.ln1(x), hw)
            x = layer.ffn(layer.ln2(x), identity=x)
            if i == len(self.layers) - 1 and self.final_norm:
                x = self.ln1(x)
            if i in self.out_indices:
                outs.append(self._format_output(x, hw))
        return tuple(outs)
