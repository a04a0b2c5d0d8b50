"""Pretrained ViT weights into a downstream backbone: every tensor or an error.

The downstream API of the strict load that
:class:`~mmhybrid.models.backbones.StrictPretrainedViT` runs in
``init_weights``. The functions live in
:mod:`mmhybrid.vit_checkpoints` (the ViT checkpoint I/O below ``models``,
which never imports ``downstream``); this module re-exports them.
"""
from ..vit_checkpoints import (PRETRAINED_KEYS, KeyMatch,
                               PretrainedMismatchError, fit_pos_embed,
                               load_pretrained_vit, match_keys,
                               mismatch_message, read_backbone_state_dict)

__all__ = [
    'PRETRAINED_KEYS', 'KeyMatch', 'PretrainedMismatchError', 'fit_pos_embed',
    'load_pretrained_vit', 'match_keys', 'mismatch_message',
    'read_backbone_state_dict'
]
