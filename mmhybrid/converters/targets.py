"""The target backbone of a conversion: from a downstream config (in its own
registry scope) or an mmpretrain ``VisionTransformer`` of the student's
architecture, and which key layout it has."""
import copy
import importlib
import os.path as osp

import torch

from ..utils.sizes import as_pair
from ..vit_checkpoints import ViTArch
from .common import ConversionError


def default_backbone_cfg(arch: ViTArch, img_size) -> dict:
    """An mmpretrain ``VisionTransformer`` config with exactly ``arch``'s
    tensors (:meth:`ViTArch.vit_kwargs`) at ``img_size``."""
    return dict(
        type='mmpretrain.VisionTransformer',
        **arch.vit_kwargs(img_size),
        out_type='avg_featmap' if arch.fc_norm else 'cls_token')


def resolve_config(config: str) -> str:
    """A config path, or ``'mmseg::mae/x.py'`` for a config an OpenMMLab
    package ships (``<package>/.mim/configs/mae/x.py``)."""
    if '::' not in config:
        return config
    package, rel = config.split('::', 1)
    try:
        root = osp.dirname(importlib.import_module(package).__file__)
    except ImportError:
        raise ConversionError(f'{config}: package {package!r} is not '
                              'installed') from None
    path = osp.join(root, '.mim', 'configs', rel)
    if not osp.isfile(path):
        raise ConversionError(f'{config}: no such config in {package} '
                              f'(looked for {path})')
    return path


def backbone_cfg_from_config(config, img_size=None) -> dict:
    """``model.backbone`` of a downstream config, without its ``init_cfg``,
    with the config's ``default_scope`` as ``_scope_`` (mmseg's ``MAE`` is a
    backbone in the ``mmseg`` scope, mmpretrain's ``MAE`` an algorithm).

    Args:
        config (str | Config): A path, ``'<package>::<path>'`` or a loaded
            config.
        img_size (int | tuple, optional): Replaces the backbone's ``img_size``.
    """
    from mmengine.config import Config
    if isinstance(config, Config):
        cfg = config
    else:
        try:
            cfg = Config.fromfile(resolve_config(config))
        except ConversionError:
            raise
        except Exception as e:  # noqa: BLE001  (a config that cannot load)
            reason = str(e).splitlines()[0] if str(e) else ''
            raise ConversionError(f'cannot read the config {config}: '
                                  f'{type(e).__name__}: {reason}') from None
    backbone = cfg.get('model', {}).get('backbone')
    if backbone is None:
        raise ConversionError(f'{config} has no model.backbone')
    backbone = copy.deepcopy(
        backbone.to_dict() if hasattr(backbone, 'to_dict') else dict(backbone))
    backbone.pop('init_cfg', None)
    backbone.pop('pretrained', None)
    backbone.pop('frozen_stages', None)
    backbone.setdefault('_scope_', cfg.get('default_scope', None))
    if img_size is not None:
        backbone['img_size'] = as_pair(img_size)
    return backbone


def build_backbone(backbone_cfg: dict) -> torch.nn.Module:
    """Build a backbone config on the CPU, in its ``_scope_``.

    The scope defaults to ``mmpretrain``.

    Raises:
        ConversionError: One line naming the type and scope when it cannot be
            built.
    """
    from mmengine.registry import MODELS, DefaultScope
    cfg = dict(backbone_cfg)
    scope = cfg.pop('_scope_', None) or 'mmpretrain'
    name = f'{cfg.get("type")!r} (scope {scope!r})'
    try:
        importlib.import_module(f'{scope}.registry')
    except ImportError:
        raise ConversionError(f'the target backbone {name} needs the package '
                              f'{scope!r}, which is not installed') from None
    try:
        with DefaultScope.overwrite_default_scope(scope):
            return MODELS.build(cfg)
    except Exception as e:  # noqa: BLE001  (any build failure: one line)
        reason = str(e).splitlines()[0] if str(e) else ''
        raise ConversionError(f'cannot build the target backbone {name}: '
                              f'{type(e).__name__}: {reason}') from None


def target_layout(model: torch.nn.Module) -> str:
    """``'mmpretrain'`` for mmpretrain's ``VisionTransformer`` and its
    subclasses (``StrictPretrainedViT``, ``HybridViT``), ``'mmseg_beit'`` for
    mmseg's ``BEiT`` and ``MAE``.

    Raises:
        ConversionError: Naming the backbone type, for anything else.
    """
    from mmpretrain.models import VisionTransformer
    if isinstance(model, VisionTransformer):
        return 'mmpretrain'
    try:
        from mmseg.models.backbones import BEiT
    except ImportError:
        BEiT = ()
    if BEiT and isinstance(model, BEiT):
        return 'mmseg_beit'
    cls = type(model)
    raise ConversionError(
        f'the target backbone {cls.__name__} ({cls.__module__}) is not one '
        "the converters handle: mmpretrain's VisionTransformer (and "
        "subclasses: StrictPretrainedViT, HybridViT), mmseg's MAE and BEiT")
