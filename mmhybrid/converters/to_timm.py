"""Student checkpoint -> timm ``VisionTransformer`` ``.safetensors``."""
from typing import Optional

from ..utils import save_checkpoint_atomic
from ..utils.sizes import as_pair
from ..vit_checkpoints import LAYER_SCALE_INIT, ViTArch, to_timm
from .common import ConversionError, check_against, load_vit, resize_pos_embed

#: timm's registry name of each (width, depth, heads, MLP width)
TIMM_NAMES = {
    (768, 12, 12, 3072): 'vit_base',
    (1024, 24, 16, 4096): 'vit_large',
    (384, 12, 6, 1536): 'vit_small',
    (192, 12, 3, 768): 'vit_tiny',
}


def timm_model_kwargs(arch: ViTArch, img_size) -> dict:
    """Keyword arguments of
    ``timm.models.vision_transformer.VisionTransformer`` for ``arch`` (no
    classifier: ``num_classes=0``, [CLS] pooling)."""
    return dict(
        img_size=as_pair(img_size),
        patch_size=arch.patch_size[0],
        embed_dim=arch.embed_dims,
        depth=arch.num_layers,
        num_heads=arch.num_heads,
        mlp_ratio=arch.feedforward_channels / arch.embed_dims,
        qkv_bias=arch.qkv_bias,
        pre_norm=arch.pre_norm,
        final_norm=arch.final_norm,
        init_values=LAYER_SCALE_INIT if arch.layer_scale else None,
        class_token=True,
        global_pool='token',
        num_classes=0)


def timm_model_name(arch: ViTArch, img_size) -> Optional[str]:
    """The timm registry name of ``arch`` at ``img_size``, if it has one."""
    base = TIMM_NAMES.get((arch.embed_dims, arch.num_layers, arch.num_heads,
                           arch.feedforward_channels))
    size = as_pair(img_size)
    patch = arch.patch_size[0]
    if (base is None or size[0] != size[1] or arch.pre_norm
            or not arch.final_norm or arch.layer_scale or arch.fc_norm
            or not arch.qkv_bias or patch not in (16, 32)):
        return None
    name = f'{base}_patch{patch}_{size[0]}'
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
    arch = ViTArch.from_state_dict(sd, num_heads)
    patch = arch.patch_size[0]
    size = as_pair(img_size)
    if size[0] % patch or size[1] % patch:
        raise ConversionError(
            f'img_size {size} is not a multiple of the patch '
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
    kwargs = timm_model_kwargs(arch, size)
    model = VisionTransformer(**kwargs)
    kept, _, _ = check_against(out, model.state_dict(),
                               f'{src} -> timm VisionTransformer')
    save_checkpoint_atomic(kept, dst)
    return dict(
        target='timm',
        timm_model=timm_model_name(arch, size),
        timm_kwargs={
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in kwargs.items()
        },
        img_size=list(size),
        pos_embed=dict(src_grid=list(arch.grid), dst_grid=list(dst_grid)),
        num_tensors=len(kept),
        missing=[],
        unexpected=[],
        arch=arch.to_report())
