"""mmpretrain's ViT with register tokens (DINOv2 with registers).

`Vision Transformers Need Registers <https://arxiv.org/abs/2309.16588>`_ adds
``R`` learnable tokens that take part in attention but carry no position.
mmpretrain 1.2 has no such model; this is the smallest addition to its
:class:`~mmpretrain.models.backbones.VisionTransformer` that has them, laid out
as facebookresearch/dinov2's ``prepare_tokens_with_masks`` does: the position
embedding is added to [CLS] and the patches, then the registers
(``register_tokens``, ``(1, R, C)``) are inserted right after [CLS]. The
sequence is ``[CLS], R registers, N patches``.
"""
from typing import Sequence

import torch
import torch.nn as nn
from mmpretrain.models.backbones import VisionTransformer
from mmpretrain.models.utils import resize_pos_embed
from mmpretrain.registry import MODELS


@MODELS.register_module()
class RegisterViT(VisionTransformer):
    """:class:`~mmpretrain.models.backbones.VisionTransformer` with register
    tokens.

    Accepts every argument of mmpretrain's ``VisionTransformer`` (DINOv2:
    ``patch_size=14, layer_scale_init_value=1e-5``); its modules and
    state-dict keys are the parent's plus ``register_tokens``.

    Args:
        num_register_tokens (int): R, the registers (DINOv2: 4). Defaults to
            4.
        **kwargs: :class:`~mmpretrain.models.backbones.VisionTransformer`'s
            arguments.

    ``out_type='raw'`` returns every token, registers included (at
    ``1 : 1 + R``); ``'featmap'`` and ``'avg_featmap'`` use the patches only.
    """

    def __init__(self, num_register_tokens: int = 4, **kwargs) -> None:
        if not isinstance(num_register_tokens, int) or num_register_tokens < 0:
            raise ValueError('RegisterViT: num_register_tokens='
                             f'{num_register_tokens!r}: expected an int >= 0')
        super().__init__(**kwargs)
        self.num_register_tokens = num_register_tokens
        self.register_tokens = nn.Parameter(
            torch.zeros(1, num_register_tokens, self.embed_dims))

    def init_weights(self) -> None:
        super().init_weights()
        if not (isinstance(self.init_cfg, dict)
                and self.init_cfg['type'] == 'Pretrained'):
            # as dinov2's init_weights
            nn.init.normal_(self.register_tokens, std=1e-6)

    def forward(self, x: torch.Tensor) -> Sequence[torch.Tensor]:
        B = x.shape[0]
        x, patch_resolution = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        x = x + resize_pos_embed(
            self.pos_embed,
            self.patch_resolution,
            patch_resolution,
            mode=self.interpolate_mode,
            num_extra_tokens=self.num_extra_tokens)
        # registers after the position embedding, right after [CLS]
        n = self.num_extra_tokens
        x = torch.cat(
            (x[:, :n], self.register_tokens.expand(B, -1, -1), x[:, n:]),
            dim=1)
        x = self.drop_after_pos(x)
        x = self.pre_norm(x)

        outs = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i == len(self.layers) - 1 and self.final_norm:
                x = self.ln1(x)
            if i in self.out_indices:
                outs.append(self._format_output(x, patch_resolution))
        return tuple(outs)

    def _format_output(self, x: torch.Tensor, hw) -> torch.Tensor:
        if self.out_type in ('raw', 'cls_token'):
            return super()._format_output(x, hw)
        # featmap / avg_featmap: the patches, without the registers
        n = self.num_extra_tokens
        x = torch.cat((x[:, :n], x[:, n + self.num_register_tokens:]), dim=1)
        return super()._format_output(x, hw)
