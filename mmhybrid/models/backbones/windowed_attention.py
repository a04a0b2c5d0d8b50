"""ViTDet's attention on mmpretrain's ``MultiheadAttention`` parameters.

Li et al., "Exploring Plain Vision Transformer Backbones for Object Detection"
(ViTDet, 2022): non-overlapping windows (zero-padded to a multiple of the
window size; the padded tokens take part as keys and values) and decomposed
relative position biases (MViTv2), initialised to zero. The window and
relative-position helpers are mmpretrain's own (``vit_sam``, from SAM, which
took them from ViTDet).
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.models.backbones.vit_sam import (get_rel_pos, window_partition,
                                                 window_unpartition)
from mmpretrain.models.utils import MultiheadAttention


def rel_pos_channels(q: torch.Tensor, k: torch.Tensor, rel_pos_h: torch.Tensor,
                     rel_pos_w: torch.Tensor, grid: Tuple[int, int],
                     scale: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Queries and keys whose plain dot product is the scaled logit plus
    MViTv2's decomposed relative position bias, without an N x N tensor.

    ``bias[i, j] = q_i . Rh[h_i - h_j] + q_i . Rw[w_i - w_j]`` (the tables
    interpolated when their length is not ``2 * size - 1``, as
    :func:`mmpretrain.models.backbones.vit_sam.add_decomposed_rel_pos` adds
    it) is ``rel_h[i, h_j] + rel_w[i, w_j]``: appending ``(rel_h[i],
    rel_w[i])`` to query ``i`` and the one-hot row and column of key ``j`` to
    key ``j`` adds exactly it to ``q_i . k_j``, so fused attention kernels
    (no explicit mask) stay usable. Extra leading tokens ([CLS]) get zeros:
    no bias to or from them. The width is padded to a multiple of 8.

    Args:
        q (Tensor): ``(B, heads, T, C)`` queries, not scaled; the last
            ``H * W`` tokens are the grid, row-major.
        k (Tensor): ``(B, heads, T, C)`` keys.
        rel_pos_h (Tensor): ``(Lh, C)`` table of row offsets.
        rel_pos_w (Tensor): ``(Lw, C)`` table of column offsets.
        grid (tuple[int, int]): ``(H, W)``.
        scale (float): The logit scale (applied to ``q . k`` only).

    Returns:
        tuple[Tensor, Tensor]: ``(q', k')``, ``(B, heads, T, C')``; use them
        with ``scale=1``.
    """
    H, W = grid
    B, heads, T, C = q.shape
    extra = T - H * W
    Rh = get_rel_pos(H, H, rel_pos_h).to(q.dtype)
    Rw = get_rel_pos(W, W, rel_pos_w).to(q.dtype)
    r_q = q[:, :, extra:].reshape(B, heads, H, W, C)
    rel_h = torch.einsum('bnhwc,hkc->bnhwk', r_q, Rh)
    rel_w = torch.einsum('bnhwc,wkc->bnhwk', r_q, Rw)
    rel = torch.cat([rel_h, rel_w], -1).reshape(B, heads, H * W, H + W)
    rows = torch.arange(H, device=q.device).repeat_interleave(W)
    cols = torch.arange(W, device=q.device).repeat(H)
    onehot = torch.cat([F.one_hot(rows, H), F.one_hot(cols, W)], -1)
    pad = -(C + H + W) % 8
    q_out = torch.cat([q * scale, F.pad(rel, (0, pad, extra, 0))], -1)
    k_pos = F.pad(onehot.to(k.dtype), (0, pad, extra, 0))
    k_out = torch.cat([k, k_pos.expand(B, heads, T, H + W + pad)], -1)
    return q_out, k_out


class WindowedAttention(MultiheadAttention):
    """mmpretrain's multi-head attention with ViTDet's windows and relative
    positions; the same ``qkv`` / ``proj`` keys, plus ``rel_pos_h`` and
    ``rel_pos_w`` when ``rel_pos_size`` is given.

    The input is a ViT token sequence: ``L - H * W`` leading extra tokens
    ([CLS]) and the ``H x W`` patch grid, row-major. With ``window_size > 0``
    the grid is zero-padded to a multiple of the window and each patch attends
    to the (padded) tokens of its window; an extra token belongs to no window
    and attends to itself only. With ``window_size == 0`` every token attends
    to every token, and the bias is added between patch tokens only.

    Args:
        embed_dims (int): Token width.
        num_heads (int): Attention heads.
        window_size (int): Window side in patches; 0 for global attention.
            Defaults to 0.
        rel_pos_size (Sequence[int], optional): The ``(H, W)`` the relative
            position tables are sized for (tables of ``2 * size - 1`` rows,
            zeros): the window for windowed blocks, the pretraining-resolution
            patch grid for global ones (ViTDet). None: no relative positions.
            Defaults to None.
        **kwargs: :class:`~mmpretrain.models.utils.MultiheadAttention`'s other
            arguments (``v_shortcut`` and ``qk_scale`` are not supported).
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 window_size: int = 0,
                 rel_pos_size: Optional[Sequence[int]] = None,
                 **kwargs) -> None:
        if kwargs.get('v_shortcut') or kwargs.get('qk_scale') is not None:
            raise ValueError('WindowedAttention supports neither v_shortcut '
                             'nor qk_scale')
        super().__init__(embed_dims, num_heads, **kwargs)
        if window_size < 0:
            raise ValueError(f'window_size={window_size}: expected >= 0')
        self.window_size = int(window_size)
        self.use_rel_pos = rel_pos_size is not None
        if self.use_rel_pos:
            h, w = (int(s) for s in rel_pos_size)
            self.rel_pos_h = nn.Parameter(
                torch.zeros(2 * h - 1, self.head_dims))
            self.rel_pos_w = nn.Parameter(
                torch.zeros(2 * w - 1, self.head_dims))

    @classmethod
    def from_attention(
            cls,
            attn: MultiheadAttention,
            window_size: int = 0,
            rel_pos_size: Optional[Sequence[int]] = None
    ) -> 'WindowedAttention':
        """The same attention, windowed: ``attn``'s sizes, dropout rates, drop
        path and layer scale modules (taken over, not copied).

        Args:
            attn (MultiheadAttention): A block's attention, as mmpretrain's
                ``TransformerEncoderLayer`` builds it.
            window_size (int): See the class. Defaults to 0.
            rel_pos_size (Sequence[int], optional): See the class. Defaults to
                None.
        """
        new = cls(
            attn.embed_dims,
            attn.num_heads,
            window_size=window_size,
            rel_pos_size=rel_pos_size,
            input_dims=attn.input_dims,
            attn_drop=attn.attn_drop,
            proj_drop=attn.proj_drop.p,
            qkv_bias=attn.qkv.bias is not None,
            proj_bias=attn.proj.bias is not None)
        new.out_drop = attn.out_drop
        new.gamma1 = attn.gamma1
        return new

    def _attend(self, x: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        """Full attention over ``x`` (``(B, T, C)``: extra tokens, then the
        ``grid``); the relative bias between patch tokens.

        Before ``proj``.
        """
        B, T, _ = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.num_heads,
                                  self.head_dims).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scale = self.head_dims**-0.5
        if self.use_rel_pos:
            q, k = rel_pos_channels(q, k, self.rel_pos_h, self.rel_pos_w, grid,
                                    scale)
            scale = 1.0
            # fused kernels want one head width for q, k and v
            v = F.pad(v, (0, q.shape[-1] - v.shape[-1]))
        drop = self.attn_drop if self.training else 0.
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=drop, scale=scale)[..., :self.head_dims]
        return out.transpose(1, 2).reshape(B, T, self.embed_dims)

    def _self_only(self, x: torch.Tensor) -> torch.Tensor:
        """Attention of tokens that see only themselves: their values."""
        C = self.embed_dims
        bias = None if self.qkv.bias is None else self.qkv.bias[2 * C:]
        return F.linear(x, self.qkv.weight[2 * C:], bias)

    def forward(self, x: torch.Tensor,
                hw_shape: Sequence[int]) -> torch.Tensor:
        """Attend, project, drop.

        Args:
            x (Tensor): ``(B, L, C)`` tokens (normalised), the patch grid last.
            hw_shape (Sequence[int]): The patch grid ``(H, W)``.

        Returns:
            Tensor: ``(B, L, C)``, to be added to the residual.
        """
        B, L, C = x.shape
        H, W = (int(s) for s in hw_shape)
        extra = L - H * W
        if extra < 0:
            raise ValueError(f'{L} tokens cannot hold a {H}x{W} patch grid')
        if self.window_size == 0:
            out = self._attend(x, (H, W))
        else:
            ws = self.window_size
            windows, pad_hw = window_partition(x[:, extra:].view(B, H, W, C),
                                               ws)
            y = self._attend(windows.view(-1, ws * ws, C), (ws, ws))
            y = window_unpartition(y.view(-1, ws, ws, C), ws, pad_hw, (H, W))
            out = torch.cat(
                [self._self_only(x[:, :extra]),
                 y.view(B, H * W, C)], 1)
        out = self.proj(out)
        return self.out_drop(self.gamma1(self.proj_drop(out)))
