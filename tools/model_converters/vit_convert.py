"""Shared code of the downstream converters (``hybrid2*.py``).

A pretraining checkpoint of mmhybrid holds ``backbone.*`` (mmpretrain's
``VisionTransformer`` layout) and ``neck.*`` (the projection head). Every
downstream config here uses mmpretrain's ``VisionTransformer`` as its backbone
(``StrictPretrainedViT``, ``type='mmpretrain.StrictPretrainedViT'`` inside mmseg
and mmdet; it also loads the raw pretraining checkpoint, so converting first is
optional there), so one key layout serves all three; a conversion

1. reads the file with :func:`mmhybrid.utils.load_checkpoint_file` (safe loading;
   ``.safetensors`` too) and takes the ViT (``backbone.*``, prefix stripped; the
   neck, heads and MIM tokens are dropped; official timm/CLIP layouts are read as
   well, through :mod:`mmhybrid.models.teachers.vit_formats`),
2. builds the target backbone in its config's scope, from the downstream
   config's ``model.backbone`` when one is given, else an mmpretrain
   ``VisionTransformer`` of the architecture read off the weights,
3. resizes ``pos_embed`` (bicubic, [CLS] kept) to the target's patch grid,
4. compares keys and shapes strictly with the target's state dict
   (:func:`mmhybrid.downstream.match_keys`, the rule the strict loader uses)
   and fails with the names of the missing / unexpected / mismatched keys,
5. writes ``{'state_dict': <backbone keys, no prefix>, 'meta': {...}}`` with
   :func:`mmhybrid.utils.save_checkpoint_atomic`, to be loaded with
   ``backbone.init_cfg = dict(type='Pretrained', checkpoint=...)``.

mmseg's own ``MAE`` and ``BEiT`` backbones (the protocol of
``mmseg::mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py``) are targets too:
their keys are mmpretrain's plus layer scale and relative-position tables (BEiT:
the qkv bias split, :func:`to_mmseg_beit`); since mmseg loads ``model.pretrained``
with ``strict=False`` and reports nothing, the converter verifies that every
target tensor but those comes from the student (:func:`fit_mmseg_beit`). Any
other target is an ``ERROR:`` naming its type.

The timm export maps the same tensors to timm's ``VisionTransformer`` names and
writes a ``.safetensors`` file.
"""
import argparse
import copy
import dataclasses
import math
import os
import os.path as osp
import re
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import mmhybrid  # noqa: E402,F401  (registers HybridViT, applies the compat fixes)
from mmhybrid.downstream import (  # noqa: E402
    KeyMatch, PretrainedMismatchError, fit_pos_embed, match_keys)
from mmhybrid.models.teachers.vit_formats import (  # noqa: E402
    convert_vit_state_dict, format_key_report, to_timm)
from mmhybrid.utils import (  # noqa: E402
    extract_state_dict, load_checkpoint_file, save_checkpoint_atomic)

#: default input size of each target (the downstream protocol's resolution)
DEFAULT_IMG_SIZE = {'mmpretrain': 224, 'mmseg': 512, 'mmdet': 1024, 'timm': 224}


class ConversionError(RuntimeError):
    """The checkpoint does not fit the target model (message names the keys)."""


# ----------------------------------------------------------------------- reading
def load_vit(src: str, src_format: str = 'auto') -> Dict[str, torch.Tensor]:
    """The ViT of a checkpoint file, in mmpretrain's ``VisionTransformer`` keys.

    Args:
        src (str): A pretraining checkpoint (``backbone.*`` + ``neck.*``), a bare
            mmpretrain backbone, or an official timm / OpenAI CLIP file.
        src_format (str): ``'auto'``, ``'mmpretrain'``, ``'timm'`` or
            ``'openai_clip'``.
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
        raise ConversionError(f'{src} holds no ViT weights (no backbone.* keys)')
    return {k: v.detach().float().contiguous() if v.is_floating_point() else v
            for k, v in vit.items()}


# ------------------------------------------------------------ architecture sniff
def infer_arch(sd: Dict[str, torch.Tensor],
               num_heads: Optional[int] = None) -> dict:
    """Architecture of an mmpretrain-layout ViT state dict.

    Everything but the head count is read off the tensors; ``num_heads`` (which
    changes no tensor shape) comes from the argument, else from mmpretrain's arch
    zoo when width, depth and MLP width match an entry, else ``embed_dims // 64``.
    """
    required = ('cls_token', 'pos_embed', 'patch_embed.projection.weight',
                'layers.0.ffn.layers.0.0.weight')
    missing = [k for k in required if k not in sd]
    if missing:
        raise ConversionError(
            f'not a ViT with [CLS] in mmpretrain layout: missing {missing}')
    embed_dims = sd['cls_token'].shape[-1]
    num_layers = 1 + max(
        int(m.group(1)) for m in (re.match(r'^layers\.(\d+)\.', k) for k in sd)
        if m)
    ffn = sd['layers.0.ffn.layers.0.0.weight'].shape[0]
    kh, kw = sd['patch_embed.projection.weight'].shape[-2:]
    num_extra = sd['cls_token'].shape[1]
    n = sd['pos_embed'].shape[1] - num_extra
    side = int(round(math.sqrt(n)))
    if side * side != n:
        raise ConversionError(
            f'pos_embed holds {n} patch positions, not a square grid')
    if num_heads is None:
        from mmpretrain.models import VisionTransformer
        for setting in VisionTransformer.arch_zoo.values():
            if (setting['embed_dims'], setting['num_layers'],
                    setting['feedforward_channels']) == (embed_dims, num_layers,
                                                         ffn):
                num_heads = setting['num_heads']
                break
    if num_heads is None:
        num_heads = embed_dims // 64 if embed_dims % 64 == 0 else 1
    return dict(
        embed_dims=embed_dims,
        num_layers=num_layers,
        num_heads=int(num_heads),
        feedforward_channels=ffn,
        patch_size=(kh, kw),
        grid=(side, side),
        qkv_bias='layers.0.attn.qkv.bias' in sd,
        patch_bias='patch_embed.projection.bias' in sd,
        pre_norm='pre_norm.weight' in sd,
        final_norm='ln1.weight' in sd,
        fc_norm='ln2.weight' in sd,  # mmpretrain's norm after global pooling
        layer_scale='layers.0.attn.gamma1.weight' in sd)


def _pair(size) -> Tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(s) for s in size)
    return (size[0], size[0]) if len(size) == 1 else size[:2]


# ---------------------------------------------------------------- target models
def default_backbone_cfg(arch: dict, img_size) -> dict:
    """An mmpretrain ``VisionTransformer`` config with exactly ``arch``."""
    return dict(
        type='mmpretrain.VisionTransformer',
        arch=dict(
            embed_dims=arch['embed_dims'],
            num_layers=arch['num_layers'],
            num_heads=arch['num_heads'],
            feedforward_channels=arch['feedforward_channels']),
        img_size=_pair(img_size),
        patch_size=arch['patch_size'][0],
        qkv_bias=arch['qkv_bias'],
        pre_norm=arch['pre_norm'],
        final_norm=arch['final_norm'],
        layer_scale_init_value=0.1 if arch['layer_scale'] else 0.,
        patch_cfg=dict(bias=arch['patch_bias']),
        out_type='avg_featmap' if arch.get('fc_norm') else 'cls_token')


def resolve_config(config: str) -> str:
    """A config path, or ``'mmseg::mae/x.py'`` for a config an OpenMMLab
    package ships (``<package>/.mim/configs/mae/x.py``)."""
    if '::' not in config:
        return config
    import importlib
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
    backbone = copy.deepcopy(backbone.to_dict() if hasattr(backbone, 'to_dict')
                             else dict(backbone))
    backbone.pop('init_cfg', None)
    backbone.pop('pretrained', None)
    backbone.pop('frozen_stages', None)
    backbone.setdefault('_scope_', cfg.get('default_scope', None))
    if img_size is not None:
        backbone['img_size'] = _pair(img_size)
    return backbone


def build_backbone(backbone_cfg: dict) -> torch.nn.Module:
    """Build a backbone config on the CPU, in its ``_scope_`` (default
    ``mmpretrain``).

    Raises:
        ConversionError: One line naming the type and scope when it cannot be
            built.
    """
    import importlib

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
        f'the target backbone {cls.__name__} ({cls.__module__}) is not one the '
        "converters handle: mmpretrain's VisionTransformer (and subclasses: "
        "StrictPretrainedViT, HybridViT), mmseg's MAE and BEiT")


# --------------------------------------------------------------------- resizing
def resize_pos_embed(pos_embed: torch.Tensor, dst_grid: Sequence[int],
                     num_extra_tokens: int = 1,
                     mode: str = 'bicubic') -> torch.Tensor:
    """``(1, extra + h*w, C)`` -> ``(1, extra + H*W, C)``, square source grid
    (:func:`mmhybrid.downstream.fit_pos_embed`, the downstream loader's rule)."""
    try:
        return fit_pos_embed(pos_embed, dst_grid, num_extra_tokens, mode)
    except PretrainedMismatchError as e:
        raise ConversionError(str(e)) from None


# ------------------------------------------------------------------- checking
def check_against(sd: Dict[str, torch.Tensor], target: Dict[str, torch.Tensor],
                  source: str, allow: Optional[str] = None
                  ) -> Tuple[Dict[str, torch.Tensor], List[str], List[str]]:
    """Strict key + shape check of ``sd`` against the ``target`` state dict
    (:func:`mmhybrid.downstream.match_keys`, the downstream loader's rule).

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


# ---------------------------------------------------------------- conversions
def convert_to_mmpretrain(src: str,
                          dst: str,
                          config: Optional[str] = None,
                          img_size=None,
                          target: str = 'mmpretrain',
                          num_heads: Optional[int] = None,
                          allow: Optional[str] = None,
                          src_format: str = 'auto') -> dict:
    """Pretraining checkpoint -> backbone weights for mmpretrain / mmseg / mmdet.

    Args:
        src (str): Source checkpoint.
        dst (str): Output ``.pth``.
        config (str | Config, optional): Downstream config whose
            ``model.backbone`` is the target (a path, ``'mmseg::<path>'`` or
            a loaded config). Without it, an mmpretrain ``VisionTransformer``
            of the source architecture at ``img_size``.
        img_size (int | tuple, optional): Target input size. Defaults to the
            config's backbone ``img_size``, else the target's protocol size (224,
            512, 1024).
        target (str): ``'mmpretrain'``, ``'mmseg'`` or ``'mmdet'`` (the default
            ``img_size`` and the report).
        num_heads (int, optional): Only used without ``config``.
        allow (str, optional): See :func:`check_against`.
        src_format (str): Layout of ``src``. Defaults to ``'auto'``.

    Returns:
        dict: The report (``num_tensors``, ``missing``, ``unexpected``,
        ``allowed_missing``, ``dropped``, ``pos_embed`` grids, ``img_size``,
        ``arch``).
    """
    sd = load_vit(src, src_format)
    arch = infer_arch(sd, num_heads)
    if config is not None:
        backbone_cfg = backbone_cfg_from_config(config, img_size)
    else:
        backbone_cfg = default_backbone_cfg(
            arch, img_size or DEFAULT_IMG_SIZE[target])
    model = build_backbone(backbone_cfg)
    layout = target_layout(model)
    name = f'{src} -> {target} {type(model).__name__}'
    if layout == 'mmseg_beit':
        dst_grid = tuple(model.patch_shape)
        kept, allowed_missing, dropped, notes = fit_mmseg_beit(
            sd, model, name, allow)
    else:
        dst_grid = tuple(model.patch_embed.init_out_size)
        if 'pos_embed' in sd and 'pos_embed' in model.state_dict():
            sd['pos_embed'] = resize_pos_embed(
                sd['pos_embed'], dst_grid,
                num_extra_tokens=getattr(model, 'num_extra_tokens', 1))
        kept, allowed_missing, dropped = check_against(
            sd, model.state_dict(), name, allow)
        notes = []
    img = getattr(model, 'img_size', None)
    img = list(_pair(img)) if img is not None else [g * p for g, p in zip(
        dst_grid, arch['patch_size'])]
    report = dict(
        target=target,
        backbone_type=type(model).__name__,
        img_size=img,
        pos_embed=dict(src_grid=list(arch['grid']), dst_grid=list(dst_grid)),
        num_tensors=len(kept),
        missing=[],
        unexpected=[],
        allowed_missing=allowed_missing,
        dropped=dropped,
        notes=notes,
        arch={k: (list(v) if isinstance(v, tuple) else v)
              for k, v in arch.items()})
    meta = dict(
        converted_from=osp.basename(src),
        converter=f'hybrid2{target}',
        backbone_type=type(model).__name__,
        img_size=img,
        embed_dims=arch['embed_dims'],
        num_layers=arch['num_layers'],
        patch_size=list(arch['patch_size']))
    save_checkpoint_atomic(dict(state_dict=kept, meta=meta), dst)
    return report


# ------------------------------------------------------------ mmseg BEiT / MAE
#: target tensors of mmseg's BEiT / MAE that no ViT student has: layer scale
#: (``init_values``) and relative-position tables, left to the target's init
MMSEG_BEIT_OWN = r'(^|\.)(gamma_[12]|relative_position_bias_table|' \
    r'relative_position_index)$'


def to_mmseg_beit(sd: Dict[str, torch.Tensor],
                  target: Dict[str, torch.Tensor]
                  ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """mmpretrain ViT tensors -> mmseg ``BEiT`` / ``MAE`` keys.

    The names agree except layer scale (``attn.gamma1.weight`` ->
    ``gamma_1``, ``ffn.gamma2.weight`` -> ``gamma_2``) and, for BEiT, the qkv
    bias. mmseg's ``MAE`` keeps the whole ``attn.qkv.bias``; ``BEiT`` keeps
    ``attn.q_bias`` + ``attn.v_bias`` (``qv_bias=True``) or no bias at all:

    * the key bias is dropped, exactly: it adds ``q . b_k`` to every logit of a
      query, a per-query constant that softmax removes;
    * without ``v_bias``, the value bias moves into ``attn.proj.bias``
      (``+ W_proj @ b_v``), exactly: attention rows sum to 1, so it reaches
      the projection unchanged;
    * without ``q_bias`` the query bias has no place; a note says so.

    Args:
        sd (dict): Source tensors, mmpretrain ``VisionTransformer`` keys.
        target (dict): The target's ``state_dict()``.

    Returns:
        tuple: ``(tensors in mmseg keys, notes on inexact parts)``.
    """
    out, biases = {}, {}
    for k, v in sd.items():
        m = re.match(r'^layers\.(\d+)\.(.*)$', k)
        rest = m.group(2) if m else None
        if rest == 'attn.qkv.bias':
            biases[int(m.group(1))] = v
        elif rest == 'attn.gamma1.weight':
            out[f'layers.{m.group(1)}.gamma_1'] = v
        elif rest == 'ffn.gamma2.weight':
            out[f'layers.{m.group(1)}.gamma_2'] = v
        else:
            out[k] = v
    lost_q = []
    for i, bias in sorted(biases.items()):
        if f'layers.{i}.attn.qkv.bias' in target:
            out[f'layers.{i}.attn.qkv.bias'] = bias
            continue
        q, _, v = bias.chunk(3)
        if f'layers.{i}.attn.q_bias' in target:
            out[f'layers.{i}.attn.q_bias'] = q
            out[f'layers.{i}.attn.v_bias'] = v
            continue
        proj_w = out.get(f'layers.{i}.attn.proj.weight')
        if proj_w is None:
            continue  # the coverage check names the missing projection
        proj_b = out.get(f'layers.{i}.attn.proj.bias', torch.zeros_like(v))
        out[f'layers.{i}.attn.proj.bias'] = proj_b + proj_w @ v
        if bool(q.any()):
            lost_q.append(i)
    notes = []
    if lost_q:
        notes.append(
            f'the target has no q bias: the query bias of blocks {lost_q} '
            'is not representable (value bias folded into attn.proj.bias, '
            'key bias dropped, both exactly)')
    return out, notes


def fit_mmseg_beit(sd: Dict[str, torch.Tensor], model: torch.nn.Module,
                   source: str, allow: Optional[str] = None
                   ) -> Tuple[Dict[str, torch.Tensor], List[str], List[str],
                              List[str]]:
    """Convert for mmseg's ``BEiT`` / ``MAE`` and verify coverage: every
    target tensor except layer scale and relative-position tables
    (:data:`MMSEG_BEIT_OWN`) must come from the source, with its shape. mmseg
    loads ``model.pretrained`` with ``strict=False`` and reports nothing, so
    this check is the only one.

    Returns:
        tuple: ``(tensors to save, target keys left to the target's init,
        source keys the target has no place for, notes)``.

    Raises:
        ConversionError: Naming every uncovered or mismatched target key.
    """
    target = model.state_dict()
    out, notes = to_mmseg_beit(sd, target)
    if 'pos_embed' in out and 'pos_embed' in target:
        out['pos_embed'] = resize_pos_embed(out['pos_embed'], model.patch_shape)
    own = MMSEG_BEIT_OWN + (f'|{allow}' if allow else '')
    match = match_keys(out, target, own)
    if match.missing or match.mismatched:
        raise ConversionError(mismatch_report(
            source, dataclasses.replace(match, unexpected=[])))
    kept = {k: v for k, v in match.kept.items() if k in target}
    return kept, match.allowed_missing, sorted(match.unexpected), notes


def timm_model_kwargs(arch: dict, img_size) -> dict:
    """Keyword arguments of ``timm.models.vision_transformer.VisionTransformer``
    for ``arch`` (no classifier: ``num_classes=0``, [CLS] pooling)."""
    return dict(
        img_size=_pair(img_size),
        patch_size=arch['patch_size'][0],
        embed_dim=arch['embed_dims'],
        depth=arch['num_layers'],
        num_heads=arch['num_heads'],
        mlp_ratio=arch['feedforward_channels'] / arch['embed_dims'],
        qkv_bias=arch['qkv_bias'],
        pre_norm=arch['pre_norm'],
        final_norm=arch['final_norm'],
        init_values=1e-5 if arch['layer_scale'] else None,
        class_token=True,
        global_pool='token',
        num_classes=0)


def timm_model_name(arch: dict, img_size) -> Optional[str]:
    """The timm registry name of ``arch`` at ``img_size``, if it has one."""
    names = {
        (768, 12, 12, 3072): 'vit_base',
        (1024, 24, 16, 4096): 'vit_large',
        (384, 12, 6, 1536): 'vit_small',
        (192, 12, 3, 768): 'vit_tiny',
    }
    base = names.get((arch['embed_dims'], arch['num_layers'], arch['num_heads'],
                      arch['feedforward_channels']))
    size = _pair(img_size)
    if (base is None or size[0] != size[1] or arch['pre_norm']
            or not arch['final_norm'] or arch['layer_scale']
            or arch.get('fc_norm') or not arch['qkv_bias']
            or arch['patch_size'][0] not in (16, 32)):
        return None
    name = f'{base}_patch{arch["patch_size"][0]}_{size[0]}'
    try:
        import timm
        return name if name in timm.list_models(name) else None
    except ImportError:
        return name


def convert_to_timm(src: str,
                    dst: str,
                    img_size=224,
                    num_heads: Optional[int] = None,
                    src_format: str = 'auto') -> dict:
    """Pretraining checkpoint -> timm ``VisionTransformer`` weights
    (``.safetensors``), checked strictly against a timm model of the same
    architecture (no classifier)."""
    if not dst.endswith('.safetensors'):
        raise ConversionError(f'{dst}: the timm export is a .safetensors file')
    sd = load_vit(src, src_format)
    arch = infer_arch(sd, num_heads)
    patch = arch['patch_size'][0]
    size = _pair(img_size)
    if size[0] % patch or size[1] % patch:
        raise ConversionError(f'img_size {size} is not a multiple of the patch '
                              f'size {patch}')
    dst_grid = (size[0] // patch, size[1] // patch)
    sd['pos_embed'] = resize_pos_embed(sd['pos_embed'], dst_grid)
    out = to_timm(sd)
    try:
        from timm.models.vision_transformer import VisionTransformer
    except ImportError:
        raise ConversionError(
            "the timm export is checked against timm's VisionTransformer: "
            'pip install timm') from None
    model = VisionTransformer(**timm_model_kwargs(arch, size))
    kept, _, _ = check_against(out, model.state_dict(),
                               f'{src} -> timm VisionTransformer')
    save_checkpoint_atomic(kept, dst)
    return dict(
        target='timm',
        timm_model=timm_model_name(arch, size),
        timm_kwargs={k: (list(v) if isinstance(v, tuple) else v)
                     for k, v in timm_model_kwargs(arch, size).items()},
        img_size=list(size),
        pos_embed=dict(src_grid=list(arch['grid']), dst_grid=list(dst_grid)),
        num_tensors=len(kept),
        missing=[],
        unexpected=[],
        arch={k: (list(v) if isinstance(v, tuple) else v)
              for k, v in arch.items()})


# ------------------------------------------------------------------------- CLI
def parse_args(target: str, argv=None) -> argparse.Namespace:
    what = {
        'mmpretrain': 'mmpretrain VisionTransformer (ImageNet fine-tuning, '
                      'linear probing)',
        'mmseg': 'the mmpretrain VisionTransformer inside the mmseg UperNet '
                 "configs, or mmseg's own MAE / BEiT backbones",
        'mmdet': 'the mmpretrain VisionTransformer inside the mmdet Mask R-CNN '
                 '(simple feature pyramid) configs',
        'timm': "timm's VisionTransformer, as .safetensors",
    }[target]
    p = argparse.ArgumentParser(
        description=f'Convert an mmhybrid pretraining checkpoint to {what}. '
        'Keys are checked strictly against the target model; position '
        'embeddings are resized to the target input size.')
    p.add_argument('src', help='pretraining checkpoint (.pth / .safetensors)')
    p.add_argument('dst', help='output file' + (' (.safetensors)'
                                               if target == 'timm' else ' (.pth)'))
    p.add_argument(
        '--img-size', type=int, nargs='+', default=None,
        help=f'target input size, one value or H W (default: the config\'s '
        f'backbone img_size, else {DEFAULT_IMG_SIZE[target]})')
    if target != 'timm':
        p.add_argument(
            '--config', default=None,
            help='downstream config whose model.backbone is the target '
            '(recommended: checks against exactly the model that will load it)')
        p.add_argument(
            '--allow', default=None, metavar='REGEX',
            help='keys that may differ: matching source keys the target lacks '
            'are dropped, matching target keys the source lacks are left to '
            "the target's init (e.g. 'ln[12]\\.' for a global-pool head with "
            'final_norm=False)')
    p.add_argument('--num-heads', type=int, default=None,
                   help='attention heads (not in the weights; default: '
                   "mmpretrain's arch zoo, else embed_dims // 64)")
    p.add_argument('--src-format', default='auto',
                   choices=['auto', 'mmpretrain', 'timm', 'openai_clip'])
    return p.parse_args(argv)


def _by_block(keys: List[str]) -> str:
    """Key names with the block index folded (``layers.*.gamma_1``), so that a
    per-block tensor is listed once."""
    names = sorted({re.sub(r'^layers\.\d+\.', 'layers.*.', k) for k in keys})
    if len(names) == len(keys):
        return str(keys)
    return f'{len(keys)} tensors, {names}'


def _show(report: dict) -> str:
    lines = [f"converted {report['num_tensors']} tensors for {report['target']}"
             f" ({report.get('backbone_type', 'VisionTransformer')}, img_size "
             f"{report['img_size']}, pos_embed {report['pos_embed']['src_grid']}"
             f" -> {report['pos_embed']['dst_grid']})",
             f"missing keys: {len(report['missing'])}, unexpected keys: "
             f"{len(report['unexpected'])}"]
    if report.get('allowed_missing'):
        lines.append(f"left to the target's init: "
                     f"{_by_block(report['allowed_missing'])}")
    if report.get('dropped'):
        lines.append(f"source tensors not used by the target: "
                     f"{_by_block(report['dropped'])}")
    for note in report.get('notes', []):
        lines.append(f'note: {note}')
    if report['target'] == 'timm':
        kw = report['timm_kwargs']
        if report.get('timm_model'):
            lines.append(
                f"load with: timm.create_model('{report['timm_model']}', "
                'pretrained=True, num_classes=0, pretrained_cfg_overlay='
                "dict(file='<DST>'))")
        lines.append(f'timm VisionTransformer kwargs: {kw}')
    return '\n'.join(lines)


def main(target: str, argv=None) -> int:
    args = parse_args(target, argv)
    img_size = None if args.img_size is None else _pair(args.img_size)
    try:
        if target == 'timm':
            report = convert_to_timm(
                args.src, args.dst, img_size or DEFAULT_IMG_SIZE['timm'],
                num_heads=args.num_heads, src_format=args.src_format)
        else:
            report = convert_to_mmpretrain(
                args.src, args.dst, config=args.config, img_size=img_size,
                target=target, num_heads=args.num_heads, allow=args.allow,
                src_format=args.src_format)
    except Exception as e:  # noqa: BLE001  (report, non-zero exit)
        from mmhybrid.utils import CheckpointError
        if isinstance(e, (ConversionError, CheckpointError)):
            one_line = '; '.join(ln.strip() for ln in str(e).splitlines()
                                 if ln.strip())
            print(f'ERROR: {one_line}', file=sys.stderr)
            return 1
        raise
    print(_show(report))
    print(f'saved {os.path.abspath(args.dst)}')
    return 0
