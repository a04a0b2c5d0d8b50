"""Downstream fine-tuning support: pretrained ViT weights loaded completely or
not at all (:mod:`mmhybrid.downstream.pretrained`)."""
from .pretrained import (KeyMatch, PretrainedMismatchError, fit_pos_embed,
                         load_pretrained_vit, match_keys,
                         read_backbone_state_dict)

__all__ = [
    'KeyMatch', 'PretrainedMismatchError', 'fit_pos_embed',
    'load_pretrained_vit', 'match_keys', 'read_backbone_state_dict'
]
