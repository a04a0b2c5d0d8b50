"""Read a ViT checkpoint file into mmpretrain's keys and load it strictly.

What a teacher (:class:`~mmhybrid.models.teachers.FrozenTeacher`) and the
analysis tools (:mod:`mmhybrid.analysis.vit_loading`) load their ViT with: any
layout of :mod:`.layouts`, a URL downloaded once per node, the keys checked by
name and then by shape (:mod:`.keys`), the final norm fitted on either side
(:func:`~.layouts.fit_final_norm`).
"""
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.logging import MMLogger

from ..utils.checkpoint import (CheckpointError, extract_state_dict,
                                load_checkpoint_file)
from ..utils.teacher_files import fetch_teacher_file
from .arch import ViTArch
from .keys import compare_keys, format_key_report, show_keys
from .layouts import fit_final_norm, read_vit_layout


def load_vit_weights(model: nn.Module,
                     filename: str,
                     fmt: str = 'auto',
                     logger: Optional[MMLogger] = None) -> str:
    """Load an official ViT checkpoint into ``model``, checking keys strictly.

    Keys that are not part of the ViT encoder (CLIP's text tower and
    projections, heads, decoders) are ignored and reported to ``logger``; the
    final norm may be absent from the file or from the model
    (:func:`~.layouts.fit_final_norm`); every other encoder key must match.

    Args:
        model (nn.Module): Target, a ViT in mmpretrain's key layout (e.g.
            ``HybridViT``).
        filename (str): Path, URL or ``.safetensors`` file.
        fmt (str): Layout, see :data:`~.layouts.FORMATS`. Defaults to
            ``'auto'``.
        logger (MMLogger, optional): Where to report.

    Returns:
        str: The layout that was read.

    Raises:
        CheckpointError: Unreadable file, or keys that do not match
            (missing and unexpected keys are listed by name), or shapes that
            differ.
    """
    sd, fmt = read_vit_state_dict(filename, fmt, logger)
    load_vit_state_dict(model, sd, filename, fmt, logger)
    return fmt


def read_teacher_checkpoint(filename: str) -> Dict[str, torch.Tensor]:
    """A teacher file's state dict, as saved (no layout conversion).

    A URL is downloaded once per node into torch hub's cache
    (:func:`~mmhybrid.utils.teacher_files.fetch_teacher_file`) and read with
    the project's safe loading; every rank reads the cached file.

    Args:
        filename (str): Path, URL or ``.safetensors`` file.

    Raises:
        CheckpointError: Unreadable file (naming the cached copy of a URL).
    """
    path = fetch_teacher_file(filename)
    try:
        ckpt = load_checkpoint_file(path)
    except CheckpointError as e:
        if path == filename:
            raise
        raise CheckpointError(f'{filename} (cached as {path}): {e}') from None
    return extract_state_dict(ckpt, filename)


def read_vit_state_dict(filename: str,
                        fmt: str = 'auto',
                        logger: Optional[MMLogger] = None
                        ) -> Tuple[Dict[str, torch.Tensor], str]:
    """Read a ViT checkpoint file and convert it to mmpretrain's key layout.

    A URL is downloaded once per node into torch hub's cache
    (:func:`~mmhybrid.utils.teacher_files.fetch_teacher_file`); every rank
    reads the cached file.

    Args:
        filename (str): Path, URL or ``.safetensors`` file.
        fmt (str): Layout, see :data:`~.layouts.FORMATS`. Defaults to
            ``'auto'``.
        logger (MMLogger, optional): Where the ignored keys are reported.

    Returns:
        tuple: The converted state dict and the layout that was read.

    Raises:
        CheckpointError: Unreadable file or a layout that does not convert.
    """
    raw = read_teacher_checkpoint(filename)
    try:
        vit = read_vit_layout(raw, fmt)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f'{filename}: {e}') from None
    if vit.ignored and logger is not None:
        logger.info(f'{filename} ({vit.fmt} layout): ignored '
                    f'{len(vit.ignored)} tensors that are not part of the ViT '
                    f'encoder: {show_keys(vit.ignored, 12)}')
    return vit.state_dict, vit.fmt


def load_vit_state_dict(model: nn.Module,
                        sd: Dict[str, torch.Tensor],
                        filename: str,
                        fmt: str,
                        logger: Optional[MMLogger] = None) -> None:
    """Load an already converted state dict (see :func:`read_vit_state_dict`)
    into ``model`` strictly: keys by name, then shapes; the final norm may be
    absent on either side (:func:`~.layouts.fit_final_norm`).

    Args:
        model (nn.Module): Target, a ViT in mmpretrain's key layout.
        sd (dict[str, Tensor]): Converted tensors (mmpretrain keys).
        filename (str): Names the source in errors and logs.
        fmt (str): The layout it was read from, for errors and logs.
        logger (MMLogger, optional): Where to report.

    Raises:
        CheckpointError: Keys that do not match (listed by name) or a shape
            that differs (``pos_embed`` aside, which the model's own load hook
            resizes).
    """
    own = model.state_dict()
    sd, norm_note = fit_final_norm(sd, own)
    missing, unexpected = compare_keys(own, sd)
    if missing or unexpected:
        raise CheckpointError(
            format_key_report(filename, missing, unexpected, fmt))
    for k, v in sd.items():
        if k == 'pos_embed':
            continue  # resized by VisionTransformer's own load hook
        if own[k].shape != v.shape:
            raise CheckpointError(
                f'{filename} ({fmt} layout): {k} has shape {tuple(v.shape)}, '
                f'the model expects {tuple(own[k].shape)}; check the teacher '
                f'arch/patch_size{_held(sd)}')
    model.load_state_dict(sd, strict=True)
    if logger is not None:
        logger.info(
            f'loaded {len(sd)} tensors from {filename} ({fmt} layout)' +
            (f'; {norm_note}' if norm_note else ''))


def _held(sd: Dict[str, torch.Tensor]) -> str:
    """``'; the file holds <ViTArch.summary>'`` when the shapes tell one."""
    try:
        # one head: any width divides, and heads are not in the summary
        return f'; the file holds {ViTArch.from_state_dict(sd, 1).summary()}'
    except CheckpointError:
        return ''
