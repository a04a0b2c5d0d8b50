"""Shared code of the downstream converters (``hybrid2*.py``).

A pretraining checkpoint of mmhybrid holds ``backbone.*`` (mmpretrain's
``VisionTransformer`` layout) and ``neck.*`` (the projection head). Every
downstream library here uses mmpretrain's ``VisionTransformer`` as its backbone
(``type='mmpretrain.VisionTransformer'`` inside mmseg and mmdet), so one key
layout serves all three; a conversion

1. reads the file with :func:`mmhybrid.utils.load_checkpoint_file` (safe loading;
   ``.safetensors`` too) and takes the ViT (``backbone.*``, prefix stripped; the
   neck, heads and MIM tokens are dropped; official timm/CLIP layouts are read as
   well, through :mod:`mmhybrid.models.teachers.vit_formats`),
2. builds the target backbone, from the downstream config's ``model.backbone``
   when one is given, else an mmpretrain ``VisionTransformer`` of the architecture
   read off the weights,
3. resizes ``pos_embed`` (bicubic, [CLS] kept) to the target's patch grid,
4. compares keys and shapes strictly with the target's state dict and fails with
   the names of the missing / unexpected / mismatched keys,
5. writes ``{'state_dict': <backbone keys, no prefix>, 'meta': {...}}`` with
   :func:`mmhybrid.utils.save_checkpoint_atomic`, to be loaded with
   ``backbone.init_cfg = dict(type='Pretrained', checkpoint=...)``.

The timm export maps the same tensors to timm's ``VisionTransformer`` names and
writes a ``.safetensors`` file.
"""
import argparse
import copy
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
from mmhybrid.models.teachers.vit_formats import (  # noqa: E402
    to_timm,
    compare_keys, convert_vit_state_dict, format_key_report)
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


def backbone_cfg_from_config(config: str, img_size=None) -> dict:
    """``model.backbone`` of a downstream config, without its ``init_cfg``."""
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    backbone = cfg.get('model', {}).get('backbone')
    if backbone is None:
        raise ConversionError(f'{config} has no model.backbone')
    backbone = copy.deepcopy(backbone.to_dict() if hasattr(backbone, 'to_dict')
                             else dict(backbone))
    backbone.pop('init_cfg', None)
    backbone.pop('pretrained', None)
    backbone.pop('frozen_stages', None)
    if img_size is not None:
        backbone['img_size'] = _pair(img_size)
    return backbone


def build_backbone(backbone_cfg: dict) -> torch.nn.Module:
    """Build a ViT backbone config (mmpretrain layout) on the CPU."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    cfg = dict(backbone_cfg)
    scope = cfg.pop('_scope_', None)
    if scope not in (None, 'mmpretrain', 'mmhybrid'):
        raise ConversionError(
            f'the target backbone {cfg.get("type")!r} is built in scope '
            f'{scope!r}; the converters target mmpretrain\'s VisionTransformer '
            "(type='mmpretrain.VisionTransformer')")
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg)
    if not hasattr(model, 'pos_embed') or not hasattr(model, 'patch_embed'):
        raise ConversionError(
            f'the target backbone {type(model).__name__} is not a ViT in '
            "mmpretrain's layout; use type='mmpretrain.VisionTransformer'")
    return model


# --------------------------------------------------------------------- resizing
def resize_pos_embed(pos_embed: torch.Tensor, dst_grid: Sequence[int],
                     num_extra_tokens: int = 1,
                     mode: str = 'bicubic') -> torch.Tensor:
    """``(1, extra + h*w, C)`` -> ``(1, extra + H*W, C)``, square source grid."""
    n = pos_embed.shape[1] - num_extra_tokens
    side = int(round(math.sqrt(n)))
    if side * side != n:
        raise ConversionError(f'pos_embed: {n} positions is not a square grid')
    dst_grid = tuple(int(g) for g in dst_grid)
    if (side, side) == dst_grid:
        return pos_embed
    from mmpretrain.models.utils import resize_pos_embed as _resize
    return _resize(pos_embed.float(), (side, side), dst_grid, mode=mode,
                   num_extra_tokens=num_extra_tokens).contiguous()


# ------------------------------------------------------------------- checking
def check_against(sd: Dict[str, torch.Tensor], target: Dict[str, torch.Tensor],
                  source: str, allow: Optional[str] = None
                  ) -> Tuple[Dict[str, torch.Tensor], List[str], List[str]]:
    """Strict key + shape check of ``sd`` against the ``target`` state dict.

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
    pattern = re.compile(allow) if allow else None
    missing, unexpected = compare_keys(target, sd)
    allowed_missing = [k for k in missing if pattern and pattern.search(k)]
    dropped = [k for k in unexpected if pattern and pattern.search(k)]
    missing = [k for k in missing if k not in allowed_missing]
    unexpected = [k for k in unexpected if k not in dropped]
    mismatched = [
        f'{k} {tuple(sd[k].shape)} vs {tuple(target[k].shape)}'
        for k in sorted(set(sd) & set(target)) if sd[k].shape != target[k].shape
    ]
    if missing or unexpected or mismatched:
        msg = format_key_report(source, missing, unexpected)
        if mismatched:
            msg += (f'\n  shape mismatches ({len(mismatched)}), source vs '
                    f'target: ' + ', '.join(mismatched[:20]))
        raise ConversionError(msg)
    kept = {k: v for k, v in sd.items() if k not in dropped}
    return kept, allowed_missing, dropped


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
        config (str, optional): Downstream config whose ``model.backbone`` is the
            target. Without it, an mmpretrain ``VisionTransformer`` of the source
            architecture at ``img_size``.
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
    target_sd = model.state_dict()
    src_grid = arch['grid']
    dst_grid = tuple(model.patch_embed.init_out_size)
    if 'pos_embed' in sd and 'pos_embed' in target_sd:
        sd['pos_embed'] = resize_pos_embed(
            sd['pos_embed'], dst_grid,
            num_extra_tokens=getattr(model, 'num_extra_tokens', 1))
    kept, allowed_missing, dropped = check_against(
        sd, target_sd, f'{src} -> {target} {type(model).__name__}', allow)
    report = dict(
        target=target,
        backbone_type=type(model).__name__,
        img_size=list(model.img_size),
        pos_embed=dict(src_grid=list(src_grid), dst_grid=list(dst_grid)),
        num_tensors=len(kept),
        missing=[],
        unexpected=[],
        allowed_missing=allowed_missing,
        dropped=dropped,
        arch={k: (list(v) if isinstance(v, tuple) else v)
              for k, v in arch.items()})
    meta = dict(
        converted_from=osp.basename(src),
        converter=f'hybrid2{target}',
        img_size=list(model.img_size),
        embed_dims=arch['embed_dims'],
        num_layers=arch['num_layers'],
        patch_size=list(arch['patch_size']))
    save_checkpoint_atomic(dict(state_dict=kept, meta=meta), dst)
    return report


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
                 'configs',
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


def _show(report: dict) -> str:
    lines = [f"converted {report['num_tensors']} tensors for {report['target']}"
             f" ({report.get('backbone_type', 'VisionTransformer')}, img_size "
             f"{report['img_size']}, pos_embed {report['pos_embed']['src_grid']}"
             f" -> {report['pos_embed']['dst_grid']})",
             f"missing keys: {len(report['missing'])}, unexpected keys: "
             f"{len(report['unexpected'])}"]
    if report.get('allowed_missing'):
        lines.append(f"left to the target's init (--allow): "
                     f"{report['allowed_missing']}")
    if report.get('dropped'):
        lines.append(f"dropped (--allow): {report['dropped']}")
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
            print(f'error: {e}', file=sys.stderr)
            return 1
        raise
    print(_show(report))
    print(f'saved {os.path.abspath(args.dst)}')
    return 0
