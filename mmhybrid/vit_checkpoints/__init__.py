"""ViT checkpoint I/O: the one home for reading, converting and strictly
loading ViT weights, for teachers, downstream backbones, converters and the
analysis tools alike.

It sits between :mod:`mmhybrid.utils` and :mod:`mmhybrid.models` (it imports
only ``utils``, torch, mmengine and mmpretrain), so every layer above reaches
it without importing a model.

Modules:

* :mod:`.layouts`: the official file layouts (mmpretrain, OpenAI CLIP, timm,
  DINOv2) -> mmpretrain's ``VisionTransformer`` keys, their detection, the
  final norm fit, and back to timm's keys.
* :mod:`.arch`: :class:`ViTArch`, a ViT's architecture read off its weights.
* :mod:`.keys`: the strict key + shape comparison and its one-line reports.
* :mod:`.io`: a file read and loaded strictly into a ViT (teachers, analysis).
* :mod:`.pretrained`: the strict downstream load (``pos_embed`` fitted to the
  target's grid), re-exported by :mod:`mmhybrid.downstream`.
"""
from .arch import (HEADS_BY_WIDTH, LAYER_SCALE_INIT, ViTArch, ViTArchError,
                   resolve_num_heads, square_grid)
from .io import load_vit_state_dict, load_vit_weights, read_vit_state_dict
from .keys import (KeyMatch, compare_keys, format_key_report, match_keys,
                   show_keys)
from .layouts import (FORMATS, ConvertedViT, convert_vit_state_dict,
                      detect_format, fit_final_norm, read_vit_layout, to_timm)
from .pretrained import (PRETRAINED_KEYS, PretrainedMismatchError,
                         fit_pos_embed, load_pretrained_vit, mismatch_message,
                         read_backbone_state_dict)

__all__ = [
    'HEADS_BY_WIDTH', 'LAYER_SCALE_INIT', 'ViTArch', 'ViTArchError',
    'resolve_num_heads', 'square_grid', 'load_vit_state_dict',
    'load_vit_weights', 'read_vit_state_dict', 'KeyMatch', 'compare_keys',
    'format_key_report', 'match_keys', 'show_keys', 'FORMATS', 'ConvertedViT',
    'convert_vit_state_dict', 'detect_format', 'fit_final_norm',
    'read_vit_layout', 'to_timm', 'PRETRAINED_KEYS', 'PretrainedMismatchError',
    'fit_pos_embed', 'load_pretrained_vit', 'mismatch_message',
    'read_backbone_state_dict'
]
