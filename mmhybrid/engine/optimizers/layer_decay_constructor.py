"""Layer-wise learning-rate decay for a ViT backbone inside any MMLab model.

mmpretrain's ``LearningRateDecayOptimWrapperConstructor`` asks the model for
``get_layer_depth``, which mmseg's ``EncoderDecoder`` and mmdet's detectors do
not have; mmseg's ``LayerDecayOptimizerConstructor`` lives in mmseg's registry
only and decays ``pos_embed``/``cls_token``. This one reads the depth from
parameter names, so the same constructor (registered in mmengine's root
registry, hence visible from the ``mmpretrain``, ``mmseg`` and ``mmdet``
scopes) serves fine-tuning, segmentation and detection alike.

Depth of a parameter (``L`` = number of transformer blocks; ``P`` = the
backbone prefix, ``'backbone.'`` by default):

* ``P`` + ``cls_token``, ``pos_embed``, ``mask_token``, ``patch_embed.*``,
  ``pre_norm.*`` (the stem) -> 0
* ``P`` + ``layers.i.*`` -> ``i + 1``
* everything else (the final norms, necks, decode/detection heads) -> ``L + 1``

Learning rate: ``lr * layer_decay_rate ** (L + 1 - depth)``, i.e. the heads get
the base learning rate and every step towards the input multiplies it by the
rate. Weight decay: none for 1-D parameters (norm weights, biases), ``*.bias``,
``pos_embed``, ``cls_token``, ``mask_token`` and relative-position tables; the
base weight decay for everything else. ``custom_keys`` (as in mmengine:
``{substring: dict(lr_mult=..., decay_mult=...)}``, the longest matching key
wins) multiply on top.
"""
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import (OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS,
                               OPTIMIZERS)

_STEM = ('cls_token', 'pos_embed', 'mask_token', 'dist_token')
_STEM_MODULES = ('patch_embed.', 'pre_norm.')
_NO_DECAY_NAMES = ('pos_embed', 'cls_token', 'mask_token', 'dist_token',
                   'rel_pos', 'relative_position_bias_table',
                   'absolute_pos_embed')


def get_vit_layer_depth(name: str,
                        num_layers: int,
                        prefix: str = 'backbone.') -> int:
    """Layer depth of the parameter ``name`` (see the module docstring).

    Args:
        name (str): Full parameter name in the model, e.g.
            ``'backbone.layers.3.attn.qkv.weight'``.
        num_layers (int): Transformer blocks of the ViT.
        prefix (str): Where the ViT sits in the model. Defaults to
            ``'backbone.'``.

    Returns:
        int: ``0`` (stem) .. ``num_layers + 1`` (everything after the blocks).
    """
    if not name.startswith(prefix):
        return num_layers + 1
    rest = name[len(prefix):]
    if rest in _STEM or rest.startswith(_STEM_MODULES):
        return 0
    m = re.match(r'^(?:layers|blocks)\.(\d+)\.', rest)
    if m:
        return int(m.group(1)) + 1
    return num_layers + 1


def is_no_decay(name: str, param: nn.Parameter) -> bool:
    """Whether ``name`` is exempt from weight decay.

    Norms, biases, tokens and position embeddings are.
    """
    last = name.rsplit('.', 1)[-1]
    return (param.ndim <= 1 or name.endswith('.bias')
            or last in _NO_DECAY_NAMES or any(
                n in name for n in ('relative_position_bias_table',
                                    'rel_pos_h', 'rel_pos_w')))


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class ViTLayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Layer-wise lr decay for the ViT of an mmpretrain, mmseg or mmdet model.

    ``paramwise_cfg`` keys:

    * ``layer_decay_rate`` (float): decay per block. Defaults to 1.0 (none).
    * ``num_layers`` (int, optional): blocks of the ViT; by default read from
      ``<backbone>.num_layers`` or counted from the parameter names.
    * ``backbone_prefix`` (str): where the ViT sits. Defaults to
      ``'backbone.'``.
    * ``custom_keys`` (dict, optional): mmengine-style ``lr_mult`` /
      ``decay_mult`` multipliers by name substring, applied on top.

    Parameters that do not require grad (frozen stages) are left out of the
    optimizer. Parameters with the same (depth, lr, weight decay) share one
    param group; each group carries ``layer_depth``, ``lr_scale`` and
    ``param_names``.

    Example::

        optim_wrapper = dict(
            optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
            constructor='ViTLayerDecayOptimWrapperConstructor',
            paramwise_cfg=dict(layer_decay_rate=0.65))
    """

    def __init__(self,
                 optim_wrapper_cfg: dict,
                 paramwise_cfg: Optional[dict] = None):
        paramwise_cfg = dict(paramwise_cfg or {})
        self.layer_decay_rate = float(
            paramwise_cfg.pop('layer_decay_rate', 1.0))
        self.num_layers = paramwise_cfg.pop('num_layers', None)
        self.backbone_prefix = paramwise_cfg.pop('backbone_prefix',
                                                 'backbone.')
        unknown = set(paramwise_cfg) - {'custom_keys'}
        if unknown:
            raise KeyError(
                'ViTLayerDecayOptimWrapperConstructor: unsupported '
                f'paramwise_cfg keys {sorted(unknown)}; supported: '
                'layer_decay_rate, num_layers, backbone_prefix, custom_keys')
        if not 0.0 < self.layer_decay_rate <= 1.0:
            raise ValueError('layer_decay_rate must be in (0, 1], got '
                             f'{self.layer_decay_rate}')
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        if self.base_lr is None:
            raise ValueError('ViTLayerDecayOptimWrapperConstructor needs '
                             'optimizer.lr')

    def _infer_num_layers(self, model: nn.Module) -> int:
        if self.num_layers is not None:
            return int(self.num_layers)
        module = model
        for part in self.backbone_prefix.strip('.').split('.'):
            module = getattr(module, part, None) if part else module
        if module is not None and isinstance(
                getattr(module, 'num_layers', None), int):
            return module.num_layers
        ids = set()
        pattern = re.compile('^' + re.escape(self.backbone_prefix) +
                             r'(?:layers|blocks)\.(\d+)\.')
        for name, _ in model.named_parameters():
            m = pattern.match(name)
            if m:
                ids.add(int(m.group(1)))
        if not ids:
            raise ValueError(
                'ViTLayerDecayOptimWrapperConstructor found no parameters '
                f'named {self.backbone_prefix}layers.<i>.*; set '
                'paramwise_cfg.backbone_prefix or num_layers')
        return max(ids) + 1

    def _custom(self, name: str) -> Tuple[float, float]:
        custom_keys = self.paramwise_cfg.get('custom_keys', {})
        for key in sorted(sorted(custom_keys), key=len, reverse=True):
            if key in name:
                cfg = custom_keys[key]
                return (float(cfg.get('lr_mult',
                                      1.0)), float(cfg.get('decay_mult', 1.0)))
        return 1.0, 1.0

    def param_settings(self, model: nn.Module) -> 'OrderedDict[str, dict]':
        """Per trainable parameter: ``layer_depth``, ``lr_scale``, ``lr`` and
        ``weight_decay`` (the values the optimizer gets)."""
        num_layers = self._infer_num_layers(model)
        base_wd = self.base_wd or 0.0
        out = OrderedDict()
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            depth = get_vit_layer_depth(name, num_layers, self.backbone_prefix)
            scale = self.layer_decay_rate**(num_layers + 1 - depth)
            lr_mult, decay_mult = self._custom(name)
            wd = 0.0 if is_no_decay(name, param) else base_wd
            out[name] = dict(
                layer_depth=depth,
                lr_scale=scale * lr_mult,
                lr=self.base_lr * scale * lr_mult,
                weight_decay=wd * decay_mult)
        return out

    def __call__(self, model: nn.Module):
        if hasattr(model, 'module'):
            model = model.module
        optimizer_cfg = self.optimizer_cfg.copy()
        params: List[dict] = []
        self.add_params(params, model)
        optimizer_cfg['params'] = params
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        optim_wrapper_cfg = self.optim_wrapper_cfg.copy()
        optim_wrapper_cfg.setdefault('type', 'OptimWrapper')
        return OPTIM_WRAPPERS.build(
            optim_wrapper_cfg, default_args=dict(optimizer=optimizer))

    def add_params(self,
                   params: List[dict],
                   module: nn.Module,
                   prefix: str = '',
                   **kwargs) -> None:
        """Fill ``params`` with one group per (depth, lr, weight decay)."""
        settings = self.param_settings(module)
        named = dict(module.named_parameters())
        groups: Dict[tuple, dict] = OrderedDict()
        for name, s in settings.items():
            key = (s['layer_depth'], s['lr'], s['weight_decay'])
            if key not in groups:
                groups[key] = dict(
                    params=[],
                    param_names=[],
                    lr=s['lr'],
                    weight_decay=s['weight_decay'],
                    lr_scale=s['lr_scale'],
                    layer_depth=s['layer_depth'])
            groups[key]['params'].append(named[name])
            groups[key]['param_names'].append(name)
        params.extend(groups.values())
        logger = MMLogger.get_current_instance()
        lines = [
            f'{self.__class__.__name__}: '
            f'layer_decay_rate={self.layer_decay_rate}, {len(settings)} '
            f'trainable parameters in {len(groups)} groups'
        ]
        for g in groups.values():
            lines.append(f'  depth {g["layer_depth"]:>2}: lr={g["lr"]:.3e} '
                         f'(x{g["lr_scale"]:.4g}) wd={g["weight_decay"]:.3g} '
                         f'n={len(g["params"])}')
        logger.info('\n'.join(lines))
