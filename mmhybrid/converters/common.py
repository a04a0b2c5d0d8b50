"""What every conversion shares: reading the student's ViT, resizing
``pos_embed`` and the strict key + shape check against a target.

The rules are :mod:`mmhybrid.vit_checkpoints`' (the layouts, the downstream
loader's ``pos_embed`` fit and key check); here they raise
:class:`ConversionError`, which the command line reports as one line.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..utils import extract_state_dict, load_checkpoint_file
from ..vit_checkpoints import (KeyMatch, PretrainedMismatchError,
                               convert_vit_state_dict, fit_pos_embed,
                               format_key_report, match_keys)

#: default input size of each target (the downstream protocol's resolution)
DEFAULT_IMG_SIZE = {
    'mmpretrain': 224,
    'mmseg': 512,
    'mmdet': 1024,
    'timm': 224
}


class ConversionError(RuntimeError):
    """The checkpoint does not fit the target model (message names keys)."""


# --------------------------------------------------------------------- reading
def load_vit(src: str, src_format: str = 'auto') -> Dict[str, torch.Tensor]:
    """A checkpoint file's ViT, in mmpretrain's ``VisionTransformer`` keys.

    Args:
        src (str): A pretraining checkpoint (``backbone.*`` + ``neck.*``),
            a bare mmpretrain backbone, or an official timm / OpenAI CLIP /
            DINOv2 file.
        src_format (str): One of :data:`mmhybrid.vit_checkpoints.FORMATS`
            (``'auto'`` detects the layout).
    """
    sd = extract_state_dict(load_checkpoint_file(src), src)
    if any('teacher' in k.split('.')[0] for k in sd):
        raise ConversionError(
            f'{src} holds teacher weights; pass the student checkpoint')
    try:
        vit, _ = convert_vit_state_dict(sd, src_format)
    except KeyError as e:
        raise ConversionError(f'{src}: {e.args[0]}') from None
    if not vit:
        raise ConversionError(
            f'{src} holds no ViT weights (no backbone.* keys)')
    return {
        k: v.detach().float().contiguous() if v.is_floating_point() else v
        for k, v in vit.items()
    }


# -------------------------------------------------------------------- resizing
def resize_pos_embed(pos_embed: torch.Tensor,
                     dst_grid: Sequence[int],
                     num_extra_tokens: int = 1,
                     mode: str = 'bicubic') -> torch.Tensor:
    """``(1, extra + h*w, C)`` -> ``(1, extra + H*W, C)``, square source grid
    (:func:`mmhybrid.vit_checkpoints.fit_pos_embed`, the downstream loader's
    rule)."""
    try:
        return fit_pos_embed(pos_embed, dst_grid, num_extra_tokens, mode)
    except PretrainedMismatchError as e:
        raise ConversionError(str(e)) from None


# ------------------------------------------------------------------- checking
def check_against(
    sd: Dict[str, torch.Tensor],
    target: Dict[str, torch.Tensor],
    source: str,
    allow: Optional[str] = None
) -> Tuple[Dict[str, torch.Tensor], List[str], List[str]]:
    """Strict key + shape check of ``sd`` against the ``target`` state dict
    (:func:`mmhybrid.vit_checkpoints.match_keys`, the downstream loader's
    rule).

    Args:
        sd (dict): Converted tensors.
        target (dict): The target model's ``state_dict()``.
        source (str): Name used in the report.
        allow (str, optional): Regex of keys that may legitimately differ:
            matching source keys the target lacks are dropped, matching target
            keys the source lacks are left to the target's initialisation.

    Returns:
        tuple: ``(kept tensors, allowed-missing keys, dropped keys)``.

    Raises:
        ConversionError: With the names of every missing, unexpected or
            shape-mismatched key.
    """
    match = match_keys(sd, target, allow)
    if not match.ok:
        raise ConversionError(mismatch_report(source, match))
    return match.kept, match.allowed_missing, match.dropped


def mismatch_report(source: str, match: KeyMatch) -> str:
    """The missing / unexpected keys (:func:`format_key_report`) and the shape
    mismatches of a failed :func:`match_keys`."""
    msg = format_key_report(source, match.missing, match.unexpected)
    if match.mismatched:
        sep = '; ' if match.missing or match.unexpected else ''
        msg += (f'{sep}shape mismatches ({len(match.mismatched)}), source vs '
                'target: ' + ', '.join(match.mismatched[:20]))
    return msg
