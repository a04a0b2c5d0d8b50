"""A ViT's architecture read off its weights: the one rule for teachers,
converters and analysis.

Every tensor shape of a ViT in mmpretrain's key layout (:mod:`.layouts`
converts the others) tells its width, depth, MLP width, patch size, position
grid and which optional parts it has. The head count changes no tensor shape,
so it comes, in this order, from

1. an explicit ``num_heads``;
2. mmpretrain's ``VisionTransformer.arch_zoo`` when width, depth and MLP width
   match one entry (e.g. its 768-wide 8-block ``'small'``: 8 heads);
3. :data:`HEADS_BY_WIDTH`, the public model cards' head count of each
   published width;

and an unknown width is an error that asks for ``num_heads``: a wrong guess
would silently split attention statistics and relations over the wrong heads
(1280 // 64 = 20, but ViT-H/14 has 16 heads of 80 channels).

Layer scale: a ViT built to receive weights that have layer scale
(``ls1.gamma`` / ``attn.gamma1.weight``) gets ``layer_scale_init_value=``
:data:`LAYER_SCALE_INIT` (timm's ``init_values`` the same). Any positive
value creates the parameter; the file's own values replace it on load, so
the number only matters for a model that is trained from it, where 1e-5 is
CaiT's and timm's default.
"""
import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from ..utils.checkpoint import CheckpointError
from ..utils.sizes import as_pair

#: heads of each published ViT width (public model cards): ViT-Ti/S/B/L,
#: ViT-H/14 (head dim 80), ViT-g/14 (EVA, depth 40, MLP 6144), ViT-G / bigG
#: (MLP 8192)
HEADS_BY_WIDTH = {
    192: 3,
    384: 6,
    768: 12,
    1024: 16,
    1280: 16,
    1408: 16,
    1664: 16,
}

#: ``layer_scale_init_value`` of a ViT built for weights with layer scale
LAYER_SCALE_INIT = 1e-5

_REQUIRED = ('cls_token', 'pos_embed', 'patch_embed.projection.weight',
             'layers.0.ffn.layers.0.0.weight')


class ViTArchError(CheckpointError):
    """The weights do not tell a ViT architecture (the message says why)."""


def square_grid(num_positions: int,
                num_extra_tokens: int = 1,
                shape: Optional[Sequence[int]] = None) -> Tuple[int, int]:
    """The ``(side, side)`` grid of a position embedding.

    Args:
        num_positions (int): Its length, extra tokens included.
        num_extra_tokens (int): Leading non-patch tokens ([CLS]). Defaults
            to 1.
        shape (Sequence[int], optional): The tensor's shape, for the message.

    Raises:
        ViTArchError: When the patch positions are not a square number.
    """
    n = int(num_positions) - num_extra_tokens
    side = int(round(math.sqrt(max(n, 0))))
    if side * side != n or n == 0:
        what = 'pos_embed' + (f' {tuple(shape)}' if shape is not None else '')
        raise ViTArchError(
            f'{what}: {n} patch positions after {num_extra_tokens} extra '
            'token(s) is not a square grid')
    return (side, side)


def resolve_num_heads(embed_dims: int,
                      num_layers: Optional[int] = None,
                      feedforward_channels: Optional[int] = None,
                      num_heads: Optional[int] = None) -> int:
    """The head count of a ViT, by the rule of this module's docstring.

    Raises:
        ViTArchError: For an unknown width without ``num_heads``, or a
            ``num_heads`` that does not divide the width.
    """
    if num_heads is None:
        from mmpretrain.models import VisionTransformer
        for setting in VisionTransformer.arch_zoo.values():
            if (setting['embed_dims'], setting['num_layers'],
                    setting['feedforward_channels']) == (embed_dims,
                                                         num_layers,
                                                         feedforward_channels):
                num_heads = setting['num_heads']
                break
    if num_heads is None:
        num_heads = HEADS_BY_WIDTH.get(int(embed_dims))
    if num_heads is None:
        raise ViTArchError(
            f'cannot tell the head count of a {embed_dims}-wide ViT (heads '
            'change no tensor shape and this width is not a published one: '
            f'{sorted(HEADS_BY_WIDTH)}); pass num_heads (--num-heads)')
    num_heads = int(num_heads)
    if num_heads < 1 or embed_dims % num_heads:
        raise ViTArchError(f'width {embed_dims} is not divisible into '
                           f'{num_heads} heads')
    return num_heads


@dataclass(frozen=True)
class ViTArch:
    """What a ViT state dict in mmpretrain's keys is.

    Attributes:
        embed_dims (int): Width.
        num_layers (int): Blocks.
        num_heads (int): Attention heads (see :func:`resolve_num_heads`).
        feedforward_channels (int): MLP width.
        patch_size (tuple[int, int]): Patch embedding kernel.
        grid (tuple[int, int]): Patch grid of ``pos_embed``.
        qkv_bias (bool): Whether the qkv projection has a bias.
        patch_bias (bool): Whether the patch embedding has a bias (OpenAI CLIP:
            no).
        pre_norm (bool): A norm before the blocks (CLIP's ``ln_pre``).
        final_norm (bool): A norm after the last block (``ln1``).
        fc_norm (bool): mmpretrain's norm after global pooling (``ln2``).
        layer_scale (bool): Per-block layer scale (``attn.gamma1``).
    """
    embed_dims: int
    num_layers: int
    num_heads: int
    feedforward_channels: int
    patch_size: Tuple[int, int]
    grid: Tuple[int, int]
    qkv_bias: bool
    patch_bias: bool
    pre_norm: bool
    final_norm: bool
    fc_norm: bool
    layer_scale: bool

    @classmethod
    def from_state_dict(cls,
                        state_dict: Mapping[str, Any],
                        num_heads: Optional[int] = None,
                        arch: Optional[Mapping[str, int]] = None,
                        arch_name: str = 'arch') -> 'ViTArch':
        """Read the architecture off a state dict in mmpretrain's keys.

        Only shapes are read, so meta tensors do.

        Args:
            state_dict (Mapping[str, Tensor]): ``VisionTransformer`` keys
                (converted with :func:`~.layouts.read_vit_layout`).
            num_heads (int, optional): The head count; see
                :func:`resolve_num_heads`.
            arch (Mapping, optional): An mmpretrain ``arch`` dict the weights
                must match in width and depth; its ``num_heads`` is used when
                ``num_heads`` is None.
            arch_name (str): How errors name ``arch``. Defaults to
                ``'arch'``.

        Raises:
            ViTArchError: Not a ViT with [CLS] in mmpretrain's layout, a
                non-square position grid, an ``arch`` of another width or
                depth, or an unknown head count.
        """
        sd = state_dict
        missing = [k for k in _REQUIRED if k not in sd]
        if missing:
            raise ViTArchError('not a ViT with [CLS] in mmpretrain layout: '
                               f'missing {missing}; first keys '
                               f'{sorted(sd)[:8]}')
        embed_dims = int(sd['cls_token'].shape[-1])
        num_layers = 1 + max(
            int(m.group(1))
            for m in (re.match(r'^layers\.(\d+)\.', k) for k in sd) if m)
        ffn = int(sd['layers.0.ffn.layers.0.0.weight'].shape[0])
        kh, kw = (
            int(s) for s in sd['patch_embed.projection.weight'].shape[-2:])
        if arch is not None:
            want = (arch.get('embed_dims'), arch.get('num_layers'))
            if want != (embed_dims, num_layers):
                raise ViTArchError(
                    f'{arch_name} has width {want[0]} and depth {want[1]}; '
                    f'the checkpoint has width {embed_dims} and depth '
                    f'{num_layers}')
            num_heads = num_heads or arch.get('num_heads')
        pos = sd['pos_embed']
        grid = square_grid(pos.shape[1], int(sd['cls_token'].shape[1]),
                           pos.shape)
        return cls(
            embed_dims=embed_dims,
            num_layers=num_layers,
            num_heads=resolve_num_heads(embed_dims, num_layers, ffn,
                                        num_heads),
            feedforward_channels=ffn,
            patch_size=(kh, kw),
            grid=grid,
            qkv_bias='layers.0.attn.qkv.bias' in sd,
            patch_bias='patch_embed.projection.bias' in sd,
            pre_norm='pre_norm.weight' in sd,
            final_norm='ln1.weight' in sd,
            fc_norm='ln2.weight' in sd,
            layer_scale='layers.0.attn.gamma1.weight' in sd)

    @property
    def img_size(self) -> Tuple[int, int]:
        """The input size of the position grid: grid x patch size."""
        return (self.grid[0] * self.patch_size[0],
                self.grid[1] * self.patch_size[1])

    def arch_dict(self) -> Dict[str, int]:
        """The ``arch`` dict of mmpretrain's ``VisionTransformer``."""
        return dict(
            embed_dims=self.embed_dims,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            feedforward_channels=self.feedforward_channels)

    def vit_kwargs(self, img_size=None) -> Dict[str, Any]:
        """Keyword arguments of mmpretrain's ``VisionTransformer`` (and
        ``HybridViT``) that give a model with exactly these tensors (no
        ``type``, ``out_type``, norm or activation config).

        Args:
            img_size (int | tuple, optional): Defaults to :attr:`img_size`.
        """
        return dict(
            arch=self.arch_dict(),
            img_size=as_pair(self.img_size if img_size is None else img_size),
            patch_size=self.patch_size[0],
            qkv_bias=self.qkv_bias,
            pre_norm=self.pre_norm,
            final_norm=self.final_norm,
            layer_scale_init_value=LAYER_SCALE_INIT
            if self.layer_scale else 0.,
            patch_cfg=dict(bias=self.patch_bias))

    def summary(self) -> str:
        """The shapes in words (not the heads, which no shape tells)."""
        (ph, pw), (gh, gw) = self.patch_size, self.grid
        return (f'a ViT of width {self.embed_dims}, depth {self.num_layers}, '
                f'MLP {self.feedforward_channels}, patch {ph}x{pw}, '
                f'{gh}x{gw} position grid')

    def to_report(self) -> Dict[str, Any]:
        """A JSON-ready dict of every field (tuples as lists)."""
        return {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in asdict(self).items()
        }
