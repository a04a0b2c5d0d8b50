"""Student checkpoints -> downstream backbones (the library behind
``tools/model_converters/hybrid2*.py``).

A pretraining checkpoint of mmhybrid holds ``backbone.*`` (mmpretrain's
``VisionTransformer`` layout) and ``neck.*`` (the projection head). Every
downstream config here uses mmpretrain's ``VisionTransformer`` as its backbone
(``StrictPretrainedViT``, ``type='mmpretrain.StrictPretrainedViT'`` inside
mmseg and mmdet; it also loads the raw pretraining checkpoint, so converting
first is optional there), so one key layout serves all three; a conversion

1. reads the file with :func:`mmhybrid.utils.load_checkpoint_file` (safe
   loading; ``.safetensors`` too) and takes the ViT (``backbone.*``, prefix
   stripped; the neck, heads and MIM tokens are dropped; official timm/CLIP
   layouts are read as well, through
   :mod:`mmhybrid.vit_checkpoints.layouts`),
2. builds the target backbone in its config's scope, from the downstream
   config's ``model.backbone`` when one is given, else an mmpretrain
   ``VisionTransformer`` of the architecture read off the weights,
3. resizes ``pos_embed`` (bicubic, [CLS] kept) to the target's patch grid,
4. compares keys and shapes strictly with the target's state dict
   (:func:`mmhybrid.vit_checkpoints.match_keys`, the rule the strict loader
   uses) and fails with the names of the missing / unexpected / mismatched
   keys,
5. writes ``{'state_dict': <backbone keys, no prefix>, 'meta': {...}}`` with
   :func:`mmhybrid.utils.save_checkpoint_atomic`, to be loaded with
   ``backbone.init_cfg = dict(type='Pretrained', checkpoint=...)``.

mmseg's own ``MAE`` and ``BEiT`` backbones (the protocol of
``mmseg::mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py``) are targets
too: their keys are mmpretrain's plus layer scale and relative-position tables
(BEiT: the qkv bias split, :func:`to_mmseg_beit`); since mmseg loads
``model.pretrained`` with ``strict=False`` and reports nothing, the converter
verifies that every target tensor but those comes from the student
(:func:`fit_mmseg_beit`). Any other target is an ``ERROR:`` naming its type.

Modules: :mod:`.common` (reading, ``pos_embed``, the strict check),
:mod:`.targets` (the target backbone), :mod:`.to_mmpretrain`,
:mod:`.mmseg_beit`, :mod:`.to_timm`, :mod:`.cli` (the ``hybrid2*.py``
command line). The architecture is read off the weights by
:class:`~mmhybrid.vit_checkpoints.arch.ViTArch`, as for the teachers and
the analysis tools.
"""
from .cli import format_report, main, parse_args
from .common import (DEFAULT_IMG_SIZE, ConversionError, check_against,
                     load_vit, mismatch_report, resize_pos_embed)
from .mmseg_beit import MMSEG_BEIT_OWN, fit_mmseg_beit, to_mmseg_beit
from .targets import (backbone_cfg_from_config, build_backbone,
                      default_backbone_cfg, resolve_config, target_layout)
from .to_mmpretrain import convert_to_mmpretrain
from .to_timm import convert_to_timm, timm_model_kwargs, timm_model_name

__all__ = [
    'DEFAULT_IMG_SIZE', 'ConversionError', 'MMSEG_BEIT_OWN',
    'backbone_cfg_from_config', 'build_backbone', 'check_against',
    'convert_to_mmpretrain', 'convert_to_timm', 'default_backbone_cfg',
    'fit_mmseg_beit', 'format_report', 'load_vit', 'main', 'mismatch_report',
    'parse_args', 'resize_pos_embed', 'resolve_config', 'target_layout',
    'timm_model_kwargs', 'timm_model_name', 'to_mmseg_beit'
]
