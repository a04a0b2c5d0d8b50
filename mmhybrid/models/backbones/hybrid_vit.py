"""The one ViT of mmhybrid: student and teachers alike.

It *is* mmpretrain's :class:`~mmpretrain.models.backbones.VisionTransformer`
(same modules, same state-dict keys, same ``forward``), so a student checkpoint
loads into ``mmpretrain.VisionTransformer`` downstream without renaming. It
adds one entry point, :meth:`HybridViT.forward_distill`, that

* encodes only the kept patch tokens (MAE-style) when given their indices,
* returns the per-token q/k/v projections of chosen blocks, from which the
  distillation losses build per-head relations (:mod:`mmhybrid.models.losses`),
* returns the [CLS]->patch attention of the last block (token importance),
* runs only the blocks that the requested outputs need (a relation teacher
  stops at its deepest distilled block),
* runs fused ``scaled_dot_product_attention`` in every block.
"""
import inspect
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmpretrain.models.backbones import VisionTransformer
from mmpretrain.models.utils import resize_pos_embed
from mmpretrain.registry import MODELS
from torch.utils.checkpoint import checkpoint

from ...utils.problems import raise_problems
from ..losses.relation_functional import relation_logits
from ..utils.config_checks import patch_grid_problems
from ..utils.token_masking import gather_tokens

QKV_PARTS = ('q', 'k', 'v')
_VIT_SIGNATURE = inspect.signature(VisionTransformer.__init__)


def embed_patches(patch_embed: torch.nn.Module,
                  x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """mmcv's ``PatchEmbed`` forward, as one matrix product where it can be.

    A patch convolution whose stride equals its kernel, over an image that its
    patches tile exactly, is a linear map of the flattened patches: the same
    parameters, the same tokens in the same order. cuDNN runs that convolution
    far below the matmul rate (2 ms per ViT-B call at batch 256 on an H200 in
    ``docs/benchmarks/profile_gpu_vitb.log``); other cases use the module.

    Args:
        patch_embed (nn.Module): An mmcv ``PatchEmbed``.
        x (Tensor): ``(B, C, H, W)`` images.

    Returns:
        tuple: ``(B, N, D)`` tokens and the ``(rows, cols)`` patch grid.
    """
    conv = patch_embed.projection
    kh, kw = conv.kernel_size
    B, C, H, W = x.shape
    plain = (
        type(conv) is torch.nn.Conv2d and conv.stride == (kh, kw)
        and conv.padding == (0, 0) and conv.dilation == (1, 1)
        and conv.groups == 1 and H % kh == 0 and W % kw == 0)
    if not plain:
        return patch_embed(x)
    gh, gw = H // kh, W // kw
    patches = x.reshape(B, C, gh, kh, gw, kw).permute(0, 2, 4, 1, 3, 5)
    tokens = F.linear(
        patches.reshape(B, gh * gw, C * kh * kw),
        conv.weight.reshape(conv.out_channels, -1), conv.bias)
    if patch_embed.norm is not None:
        tokens = patch_embed.norm(tokens)
    return tokens, (gh, gw)


def num_blocks_to_run(num_layers: int, out_layers: Sequence[int],
                      cls_attn: bool, final_tokens: bool) -> int:
    """How many leading blocks produce the requested outputs.

    The last block's tokens and its [CLS] attention need every block; q/k/v
    projections only need the blocks up to the deepest one asked for.

    Args:
        num_layers (int): Blocks in the model.
        out_layers (Sequence[int]): Blocks whose projections are asked for.
        cls_attn (bool): Whether the last block's [CLS] attention is asked for.
        final_tokens (bool): Whether the last block's tokens are asked for.

    Returns:
        int: The number of blocks to run, from block 0.
    """
    if final_tokens or cls_attn:
        return num_layers
    return max(out_layers, default=-1) + 1


class DistillOutput(NamedTuple):
    """What :meth:`HybridViT.forward_distill` returns.

    Attributes:
        tokens (Tensor | None): ``(B, 1 + K, C)`` last-layer tokens ([CLS]
            first), after the final norm when the model has one; None when they
            were not asked for (``final_tokens=False``).
        relations (dict[int, dict[str, Tensor]]): For each requested block, its
            ``'q'``/``'k'``/``'v'`` projections, each ``(B, 1 + K, C)``.
        cls_attn (Tensor | None): ``(B, K)`` [CLS]->patch attention of the
            last block, averaged over heads (rows sum to <= 1: the [CLS]->[CLS]
            share is left out).
    """
    tokens: Optional[torch.Tensor]
    relations: Dict[int, Dict[str, torch.Tensor]]
    cls_attn: Optional[torch.Tensor]


@MODELS.register_module()
class HybridViT(VisionTransformer):
    """mmpretrain's ViT plus kept-token encoding and relation outputs.

    Accepts every argument of :class:`mmpretrain.models.VisionTransformer`
    (``arch``, ``img_size``, ``patch_size``, ``pre_norm``, ``layer_cfgs``,
    ...). ``with_cls_token`` must stay True: relations and token importance are
    defined with [CLS].

    Args:
        with_cp (bool): Recompute each block in the backward pass of
            :meth:`forward_distill` instead of storing its activations
            (activation checkpointing, for ViT-L students). Defaults to False.
    """

    def __init__(self, *args, with_cp: bool = False, **kwargs) -> None:
        # the sizes as configured, for the check (and its message) that
        # the preflight check runs on the config
        given = _VIT_SIGNATURE.bind(self, *args, **kwargs)
        given.apply_defaults()
        raise_problems(
            'HybridViT',
            patch_grid_problems(given.arguments['img_size'],
                                given.arguments['patch_size']))
        super().__init__(*args, **kwargs)
        self.with_cp = with_cp
        if not self.with_cls_token:
            raise ValueError('HybridViT needs with_cls_token=True')
        for m in self.modules():
            # mmpretrain stores each block's drop-path rate as a numpy scalar,
            # which torch.compile treats as a tensor: a graph break per block
            if isinstance(getattr(m, 'drop_prob', None), np.generic):
                m.drop_prob = float(m.drop_prob)

    @property
    def num_patches(self) -> int:
        """N, patch tokens at the configured ``img_size``."""
        return self.patch_resolution[0] * self.patch_resolution[1]

    @property
    def num_heads(self) -> int:
        return self.layers[0].attn.num_heads

    def embed(self,
              x: torch.Tensor,
              keep_idx: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Patch + position embedding, then keep the chosen tokens.

        Args:
            x (Tensor): ``(B, 3, H, W)`` images.
            keep_idx (Tensor, optional): ``(B, K)`` kept patch indices; all
                patches when None.

        Returns:
            Tensor: ``(B, 1 + K, C)`` tokens, [CLS] first, after ``pre_norm``.
        """
        B = x.shape[0]
        x, patch_resolution = embed_patches(self.patch_embed, x)
        pos = resize_pos_embed(
            self.pos_embed,
            self.patch_resolution,
            patch_resolution,
            mode=self.interpolate_mode,
            num_extra_tokens=self.num_extra_tokens)
        x = x + pos[:, 1:]
        if keep_idx is not None:
            # dropping tokens right after embedding is where the saving comes
            # from
            x = gather_tokens(x, keep_idx)
        cls = (self.cls_token + pos[:, :1]).expand(B, -1, -1)
        x = torch.cat([cls, x], dim=1)
        x = self.drop_after_pos(x)
        return self.pre_norm(x)

    @staticmethod
    def block_forward(layer,
                      x: torch.Tensor,
                      parts: Sequence[str] = (),
                      cls_attn: bool = False):
        """One ``TransformerEncoderLayer`` step that can expose its q/k/v.

        Numerically the same as ``layer(x)``; attention runs fused.

        Returns:
            tuple: ``(x, projections, cls_attn)``; ``projections`` maps each
            part in ``parts`` to ``(B, L, C)``; ``cls_attn`` is
            ``(B, L - 1)`` or None.
        """
        attn = layer.attn
        h = layer.ln1(x)
        B, L, _ = h.shape
        C = attn.embed_dims
        qkv = attn.qkv(h)
        q, k, v = qkv.reshape(B, L, 3, attn.num_heads,
                              attn.head_dims).permute(2, 0, 3, 1, 4)
        drop = attn.attn_drop if attn.training else 0.
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        out = out.transpose(1, 2).reshape(B, L, C)
        out = attn.out_drop(attn.gamma1(attn.proj_drop(attn.proj(out))))
        if attn.v_shortcut:
            out = v.squeeze(1) + out
        x = x + out
        x = layer.ffn(layer.ln2(x), identity=x)

        projections = {}
        for p in parts:
            i = QKV_PARTS.index(p)
            projections[p] = qkv[..., i * C:(i + 1) * C]
        importance = None
        if cls_attn:
            logits = torch.matmul(q[:, :, :1].float() * attn.head_dims**-0.5,
                                  k.float().transpose(-2, -1))
            importance = logits.softmax(-1)[..., 0, 1:].mean(1)
        return x, projections, importance

    def forward_distill(self,
                        x: torch.Tensor,
                        keep_idx: Optional[torch.Tensor] = None,
                        out_layers: Sequence[int] = (),
                        parts: Sequence[str] = ('q', 'k'),
                        cls_attn: bool = False,
                        final_tokens: bool = True) -> DistillOutput:
        """Encode (kept tokens of) images for distillation.

        Only the blocks that the requested outputs need are run
        (:func:`num_blocks_to_run`): without ``final_tokens`` and ``cls_attn``
        the encoding stops after the deepest block in ``out_layers`` and the
        final norm is skipped.

        Args:
            x (Tensor): ``(B, 3, H, W)`` images.
            keep_idx (Tensor, optional): ``(B, K)`` kept patch indices, or None
                for all ``N`` patches.
            out_layers (Sequence[int]): Blocks (0-based) whose projections are
                returned.
            parts (Sequence[str]): Which of ``'q'``, ``'k'``, ``'v'``.
                Defaults to ``('q', 'k')``.
            cls_attn (bool): Also return the last block's [CLS]->patch
                attention. Defaults to False.
            final_tokens (bool): Return the last block's tokens (after the
                final norm). False returns ``tokens=None``, e.g. for a relation
                teacher. Defaults to True.

        Returns:
            DistillOutput: tokens, relations, cls_attn.
        """
        out_layers = set(out_layers)
        bad = [i for i in out_layers if not 0 <= i < self.num_layers]
        if bad:
            raise IndexError(f'HybridViT has {self.num_layers} blocks; '
                             f'asked for block(s) {sorted(bad)}')
        x = self.embed(x, keep_idx)
        relations = {}
        importance = None
        last = self.num_layers - 1
        depth = num_blocks_to_run(self.num_layers, out_layers, cls_attn,
                                  final_tokens)
        use_cp = self.with_cp and self.training and torch.is_grad_enabled()
        for i in range(depth):
            layer = self.layers[i]
            args = (layer, x, parts if i in out_layers else (), cls_attn
                    and i == last)
            if use_cp:
                x, proj, imp = checkpoint(
                    self.block_forward, *args, use_reentrant=False)
            else:
                x, proj, imp = self.block_forward(*args)
            if proj:
                relations[i] = proj
            if imp is not None:
                importance = imp
        if not final_tokens:
            return DistillOutput(None, relations, importance)
        if self.final_norm:
            x = self.ln1(x)
        return DistillOutput(x, relations, importance)

    @torch.no_grad()
    def attention_maps(
            self,
            x: torch.Tensor,
            layers: Optional[Sequence[int]] = None) -> Dict[int, torch.Tensor]:
        """Per-head attention distributions, for analysis.

        Args:
            x (Tensor): ``(B, 3, H, W)`` images.
            layers (Sequence[int], optional): Blocks to return; all when None.

        Returns:
            dict[int, Tensor]: ``(B, H, 1 + N, 1 + N)`` row-stochastic maps.
        """
        layers = range(self.num_layers) if layers is None else layers
        out = self.forward_distill(x, out_layers=layers)
        maps = {}
        for i, proj in out.relations.items():
            heads = self.layers[i].attn.num_heads
            maps[i] = relation_logits(proj['q'], proj['k'], heads).softmax(-1)
        return maps
