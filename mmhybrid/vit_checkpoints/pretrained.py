"""Pretrained ViT weights into a downstream backbone: every tensor or an error.

mmengine's ``Pretrained`` initialiser loads with ``strict=False`` and only logs
the keys it could not place. A pretraining checkpoint as the runner saves it
(``backbone.*`` + ``neck.*``) given without ``prefix='backbone.'`` therefore
loads nothing at all, and a 100-epoch fine-tune silently starts from scratch.

The functions here

1. read any checkpoint mmhybrid knows (safe loading through mmengine's
   ``CheckpointLoader``): a raw pretraining checkpoint, a converter's output
   (bare backbone keys), an official timm / OpenAI CLIP file
   (:func:`mmhybrid.vit_checkpoints.layouts.convert_vit_state_dict`);
2. fit ``pos_embed`` to the target's patch grid (bicubic, [CLS] kept);
3. compare keys and shapes with the target's ``state_dict()``
   (:func:`~mmhybrid.vit_checkpoints.keys.match_keys`) and refuse a load that
   would leave any target tensor at its random initialisation
   (:class:`PretrainedMismatchError`, one line naming the file and the keys).

:func:`~mmhybrid.vit_checkpoints.keys.match_keys` and :func:`fit_pos_embed`
are also what the converters in ``tools/model_converters`` check against, so a
file that converts also loads.

:class:`mmhybrid.models.backbones.StrictPretrainedViT` runs
:func:`load_pretrained_vit` in ``init_weights``;
:mod:`mmhybrid.downstream.pretrained` re-exports these functions as the
downstream API.
"""
from typing import Dict, List, Optional, Sequence

import torch

from ..utils.checkpoint import CheckpointError, extract_state_dict
from .arch import ViTArchError, square_grid
from .keys import KeyMatch, match_keys, show_keys
from .layouts import convert_vit_state_dict

#: ``init_cfg`` keys of a strict ``Pretrained`` load
PRETRAINED_KEYS = ('type', 'checkpoint', 'prefix', 'map_location', 'allow')


class PretrainedMismatchError(CheckpointError):
    """Pretrained weights do not fit the model (the message names the keys).

    A :class:`~mmhybrid.utils.CheckpointError`, so ``tools/train.py`` reports
    it as one ``ERROR:`` line and exits with status 1.
    """


def fit_pos_embed(pos_embed: torch.Tensor,
                  dst_grid: Sequence[int],
                  num_extra_tokens: int = 1,
                  mode: str = 'bicubic') -> torch.Tensor:
    """Resize ``(1, extra + h*w, C)`` to ``(1, extra + H*W, C)``.

    The source grid is square (every mmhybrid student is trained on square
    images); the extra tokens ([CLS]) are kept as they are.

    Args:
        pos_embed (Tensor): Source position embedding.
        dst_grid (Sequence[int]): Target ``(H, W)`` patch grid.
        num_extra_tokens (int): Leading non-patch tokens. Defaults to 1.
        mode (str): Interpolation mode. Defaults to ``'bicubic'``.

    Returns:
        Tensor: The position embedding for ``dst_grid`` (``pos_embed`` itself
        when the grids agree).

    Raises:
        PretrainedMismatchError: If the source positions are not a square grid.
    """
    try:
        src_grid = square_grid(pos_embed.shape[1], num_extra_tokens,
                               pos_embed.shape)
    except ViTArchError as e:
        raise PretrainedMismatchError(str(e)) from None
    dst_grid = tuple(int(g) for g in dst_grid)
    if src_grid == dst_grid:
        return pos_embed
    from mmpretrain.models.utils import resize_pos_embed
    return resize_pos_embed(
        pos_embed.float(),
        src_grid,
        dst_grid,
        mode=mode,
        num_extra_tokens=num_extra_tokens).contiguous()


def read_backbone_state_dict(
        filename: str,
        prefix: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """The ViT of a checkpoint, in mmpretrain ``VisionTransformer`` keys.

    Args:
        filename (str): Any path or URL mmengine's ``CheckpointLoader`` reads
            (through mmhybrid's safe loader).
        prefix (str, optional): Where the backbone sits in the file, e.g.
            ``'backbone.'``. A file with no key under it is read as a bare
            backbone (a converter's output). Defaults to None: found from the
            layout (``backbone.*`` of a pretraining checkpoint, bare keys,
            timm, OpenAI CLIP).

    Returns:
        dict: Backbone tensors without prefix (necks, heads, teachers, MIM
        tokens left out).

    Raises:
        PretrainedMismatchError: If the layout is not a known ViT layout.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    ckpt = CheckpointLoader.load_checkpoint(filename, map_location='cpu')
    sd = extract_state_dict(ckpt, filename)
    if prefix:
        under = {
            k[len(prefix):]: v
            for k, v in sd.items() if k.startswith(prefix)
        }
        sd = under or sd
    try:
        vit, _ = convert_vit_state_dict(sd)
    except KeyError as e:
        raise PretrainedMismatchError(f'{filename}: {e.args[0]}') from None
    return vit


def mismatch_message(filename: str, model_name: str, match: KeyMatch,
                     num_target: int) -> str:
    """One line naming the file, the model and every kind of difference."""

    def _show(keys: List[str]) -> str:
        return f'[{show_keys(keys, 8)}]'

    parts = []
    if match.missing:
        parts.append(f'{len(match.missing)} of {num_target} target tensors '
                     f'missing {_show(match.missing)}')
    if match.unexpected:
        parts.append(f'{len(match.unexpected)} unexpected '
                     f'{_show(match.unexpected)}')
    if match.mismatched:
        parts.append(f'{len(match.mismatched)} shape mismatches (file vs '
                     f'model) {_show(match.mismatched)}')
    return (f'pretrained weights {filename} do not fit {model_name}: ' +
            '; '.join(parts) + '. Expected every backbone tensor in '
            "mmpretrain VisionTransformer keys (a pretraining checkpoint's "
            "backbone.* or a converter's output); keys that may differ go in "
            'init_cfg.allow (a regex)')


def load_pretrained_vit(model: torch.nn.Module,
                        filename: str,
                        prefix: Optional[str] = None,
                        allow: Optional[str] = None) -> KeyMatch:
    """Load a checkpoint's ViT into ``model`` (an mmpretrain
    ``VisionTransformer``), all of it.

    Args:
        model (nn.Module): The target backbone.
        filename (str): Checkpoint path or URL.
        prefix (str, optional): See :func:`read_backbone_state_dict`.
        allow (str, optional): See :func:`match_keys`.

    Returns:
        KeyMatch: What was loaded.

    Raises:
        PretrainedMismatchError: If a target tensor would stay unloaded, a
            source tensor would be ignored, or a shape differs.
    """
    source = read_backbone_state_dict(filename, prefix)
    target = model.state_dict()
    if ('pos_embed' in source and 'pos_embed' in target
            and source['pos_embed'].shape != target['pos_embed'].shape):
        source['pos_embed'] = fit_pos_embed(
            source['pos_embed'], model.patch_resolution,
            getattr(model, 'num_extra_tokens', 1),
            getattr(model, 'interpolate_mode', 'bicubic'))
    match = match_keys(source, target, allow)
    if not match.ok:
        raise PretrainedMismatchError(
            mismatch_message(filename,
                             type(model).__name__, match, len(target)))
    model.load_state_dict(match.kept, strict=not match.allowed_missing)
    return match
