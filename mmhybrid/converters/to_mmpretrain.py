"""Student checkpoint -> backbone weights for mmpretrain, mmseg and mmdet."""
import os.path as osp
from typing import Optional

import torch

from ..utils import save_checkpoint_atomic
from ..utils.sizes import as_pair
from ..vit_checkpoints import ViTArch
from .common import DEFAULT_IMG_SIZE, check_against, load_vit, resize_pos_embed
from .mmseg_beit import fit_mmseg_beit
from .targets import (backbone_cfg_from_config, build_backbone,
                      default_backbone_cfg, target_layout)


def _num_heads_of(model: torch.nn.Module) -> Optional[int]:
    """The head count of a built ViT target (mmpretrain's and mmseg's keep it
    on each block's attention), None if it has no such blocks."""
    layers = getattr(model, 'layers', None)
    try:
        return int(layers[0].attn.num_heads)
    except (TypeError, IndexError, AttributeError):
        return None


# ---------------------------------------------------------------- conversions
def convert_to_mmpretrain(src: str,
                          dst: str,
                          config: Optional[str] = None,
                          img_size=None,
                          target: str = 'mmpretrain',
                          num_heads: Optional[int] = None,
                          allow: Optional[str] = None,
                          src_format: str = 'auto') -> dict:
    """Pretraining checkpoint -> backbone weights for mmpretrain/mmseg/mmdet.

    Args:
        src (str): Source checkpoint.
        dst (str): Output ``.pth``.
        config (str | Config, optional): Downstream config whose
            ``model.backbone`` is the target (a path, ``'mmseg::<path>'`` or
            a loaded config). Without it, an mmpretrain ``VisionTransformer``
            of the source architecture at ``img_size``.
        img_size (int | tuple, optional): Target input size. Defaults to
            the config's backbone ``img_size``, else the target's protocol size
            (224, 512, 1024).
        target (str): ``'mmpretrain'``, ``'mmseg'`` or ``'mmdet'`` (the default
            ``img_size`` and the report).
        num_heads (int, optional): Attention heads (no tensor shape tells
            them). Defaults to the config's, else
            :func:`~mmhybrid.vit_checkpoints.arch.resolve_num_heads`.
        allow (str, optional): See :func:`check_against`.
        src_format (str): Layout of ``src``. Defaults to ``'auto'``.

    Returns:
        dict: The report (``num_tensors``, ``missing``, ``unexpected``,
        ``allowed_missing``, ``dropped``, ``pos_embed`` grids, ``img_size``,
        ``arch``).
    """
    sd = load_vit(src, src_format)
    if config is not None:
        model = build_backbone(backbone_cfg_from_config(config, img_size))
        arch = None  # read after the key check, with the config's heads
    else:
        arch = ViTArch.from_state_dict(sd, num_heads)
        model = build_backbone(
            default_backbone_cfg(arch, img_size or DEFAULT_IMG_SIZE[target]))
    layout = target_layout(model)
    name = f'{src} -> {target} {type(model).__name__}'
    if layout == 'mmseg_beit':
        dst_grid = tuple(model.patch_shape)
        kept, allowed_missing, dropped, notes = fit_mmseg_beit(
            sd, model, name, allow)
    else:
        dst_grid = tuple(model.patch_embed.init_out_size)
        # a resized copy: ``sd`` keeps the source grid for the report
        fitted = dict(sd)
        target_sd = model.state_dict()
        if 'pos_embed' in sd and 'pos_embed' in target_sd:
            fitted['pos_embed'] = resize_pos_embed(
                sd['pos_embed'],
                dst_grid,
                num_extra_tokens=getattr(model, 'num_extra_tokens', 1))
        kept, allowed_missing, dropped = check_against(fitted, target_sd, name,
                                                       allow)
        notes = []
    if arch is None:
        # heads change no tensor shape: the target's are the student's
        arch = ViTArch.from_state_dict(sd, num_heads or _num_heads_of(model))
    img = getattr(model, 'img_size', None)
    img = list(as_pair(img)) if img is not None else [
        g * p for g, p in zip(dst_grid, arch.patch_size)
    ]
    report = dict(
        target=target,
        backbone_type=type(model).__name__,
        img_size=img,
        pos_embed=dict(src_grid=list(arch.grid), dst_grid=list(dst_grid)),
        num_tensors=len(kept),
        missing=[],
        unexpected=[],
        allowed_missing=allowed_missing,
        dropped=dropped,
        notes=notes,
        arch=arch.to_report())
    meta = dict(
        converted_from=osp.basename(src),
        converter=f'hybrid2{target}',
        backbone_type=type(model).__name__,
        img_size=img,
        embed_dims=arch.embed_dims,
        num_layers=arch.num_layers,
        patch_size=list(arch.patch_size))
    save_checkpoint_atomic(dict(state_dict=kept, meta=meta), dst)
    return report
