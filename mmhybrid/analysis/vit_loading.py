"""Build a :class:`HybridViT` for analysis from a config or from a bare
checkpoint, and read a folder of images for it.

Two entry points, used by ``tools/analysis/attention_stats.py`` and
``tools/analysis/visualize_masking.py``:

* :func:`vit_from_config`: the student (``model.backbone``) or a teacher of a
  HybridDistill config (``teacher_feat`` / ``teacher_rel`` in the two-teacher
  form, any name of ``model.teachers`` otherwise; a ``ZooTeacher`` is read
  through its own forward, :class:`ZooTeacherVit`), or the backbone of any
  mmpretrain ViT config (``ImageClassifier``, ``MAE``, ...).
* :func:`vit_from_checkpoint`: any ViT file :func:`load_vit_weights` reads
  (mmpretrain incl. HybridDistill student checkpoints, OpenAI CLIP, timm / MAE
  / DeiT / DINO, DINOv2, ``.safetensors``); the architecture is read off the
  weights (width, depth, MLP width, patch size, image size, pre-norm, final
  norm, layer scale, qkv bias; :class:`~mmhybrid.vit_checkpoints.arch.ViTArch`,
  the converters' rule too) except the head count, which comes from ``arch`` or
  ``num_heads``, else from the published head count of the width (ViT-H/14: 16
  heads of 80 channels); an unknown width needs ``num_heads``.

Weights are always loaded strictly through :func:`load_vit_weights`, hence
through :func:`mmhybrid.utils.checkpoint.load_checkpoint_file`.
"""
import ast
import copy
import inspect
import json
import os.path as osp
import random
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmpretrain.models.backbones import VisionTransformer
from mmpretrain.registry import MODELS

from ..datasets.image_scan import IMAGE_EXTENSIONS, list_images
from ..engine.hooks.attention_diversity_hook import TeacherAttention
from ..engine.knn import pool_features
from ..engine.preflight import type_name
from ..models.backbones.hybrid_vit import DistillOutput, HybridViT
from ..models.teachers.zoo_teacher import ZooTeacher
from ..utils.constants import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
from ..vit_checkpoints import (FORMATS, ViTArch, load_vit_state_dict,
                               load_vit_weights, read_vit_state_dict)

#: the components of a two-teacher HybridDistill config (a ``teachers=``
#: config's are ``'student'`` and its teachers' names:
#: :func:`config_components`)
COMPONENTS = ('student', 'teacher_feat', 'teacher_rel')
# backbone types whose weights are mmpretrain VisionTransformer weights
_VIT_TYPES = ('VisionTransformer', 'HybridViT', 'MAEViT', 'BEiTViT',
              'MILANViT', 'CAEViT', 'MaskFeatViT', 'iTPNHiViT')


class AnalysisVit:
    """A ViT ready for analysis and how its inputs are normalised.

    Attributes:
        model (HybridViT): In eval mode, weights loaded.
        mean (tuple[float]): Input mean, 0-255 RGB.
        std (tuple[float]): Input std, 0-255 RGB.
        source (str): Human-readable origin (file and layout).
    """

    def __init__(self, model: HybridViT, mean: Sequence[float],
                 std: Sequence[float], source: str) -> None:
        model.eval()  # mmpretrain's ViT.train() returns None: no chaining
        self.model = model
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.source = source

    @property
    def img_size(self) -> Tuple[int, int]:
        return tuple(self.model.img_size)

    @property
    def grid_hw(self) -> Tuple[int, int]:
        return tuple(self.model.patch_resolution)

    @property
    def patch_size(self) -> Tuple[int, int]:
        return tuple(self.model.patch_embed.projection.kernel_size)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` uint8 RGB -> normalised float, on the model's
        device."""
        device = next(self.model.parameters()).device
        x = images.to(device=device, dtype=torch.float32)
        mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
        return (x - mean) / std

    def features(self,
                 images: torch.Tensor,
                 feature: str = 'cls') -> torch.Tensor:
        """One feature per image (k-NN): the last layer's [CLS] token after the
        final norm (``'cls'``) or its mean patch token (``'mean'``).

        Args:
            images (Tensor): ``(B, 3, H, W)`` RGB, 0-255.
            feature (str): ``'cls'`` or ``'mean'``. Defaults to ``'cls'``.

        Returns:
            Tensor: ``(B, C)``.
        """
        return pool_features(self.model(self.normalize(images)), feature)


class TeacherEncoder(TeacherAttention):
    """A ``ZooTeacher`` as the ViT the analysis tools ask for: its attention
    maps (:class:`TeacherAttention`: the teacher's own forward), its head
    count, its last tokens and its [CLS] attention.

    Args:
        teacher (ZooTeacher): The teacher, weights loaded.
    """

    def __init__(self, teacher: ZooTeacher) -> None:
        super().__init__(teacher)
        self.num_heads = teacher.num_heads

    def eval(self) -> 'TeacherEncoder':
        self.teacher.eval()
        return self

    def parameters(self):
        return self.teacher.parameters()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1 + N, C)`` last tokens ([CLS] first, after the family's final
        norm; register tokens left out) of normalised inputs."""
        return self.teacher(x).tokens

    def forward_distill(self,
                        x: torch.Tensor,
                        cls_attn: bool = False) -> DistillOutput:
        """The teacher's forward asked for its last-block [CLS] attention only
        (as :meth:`HybridViT.forward_distill` is by the masking figure)."""
        return self.teacher(x, cls_attn=cls_attn, final_tokens=False)


class ZooTeacherVit(AnalysisVit):
    """A config's ``ZooTeacher`` ready for analysis: images at the teacher's
    own ``img_size``, normalised as the student's (the data preprocessor's
    mean/std), which the teacher re-normalises itself; its grid and patch size
    are the teacher's.

    Args:
        teacher (ZooTeacher): Weights loaded, on its device, input
            normalisation set (``set_input_norm(mean, std)``).
        mean (Sequence[float]): Input mean, 0-255 RGB.
        std (Sequence[float]): Input std, 0-255 RGB.
        source (str): Human-readable origin.
    """

    def __init__(self, teacher: ZooTeacher, mean: Sequence[float],
                 std: Sequence[float], source: str) -> None:
        super().__init__(TeacherEncoder(teacher), mean, std, source)

    @property
    def img_size(self) -> Tuple[int, int]:
        return tuple(self.model.teacher.img_size)

    @property
    def grid_hw(self) -> Tuple[int, int]:
        return tuple(self.model.grid)

    @property
    def patch_size(self) -> Tuple[int, int]:
        return tuple(int(p) for p in self.model.patch)

    def features(self,
                 images: torch.Tensor,
                 feature: str = 'cls') -> torch.Tensor:
        teacher = self.model.teacher
        if not teacher.has_cls and feature == 'cls':
            raise ValueError(f'{teacher.owner} has no [CLS] token: use '
                             "feature='mean'")
        tokens = self.model(self.normalize(images))
        if not teacher.has_cls:
            return tokens.mean(1)
        return pool_features(tokens, feature)


# ---------------------------------------------------------------- arch parsing
def parse_arch(arch: Union[str, dict, None]) -> Union[str, dict, None]:
    """Read an ``--arch`` value.

    Accepts an mmpretrain arch name (``'b'``, ``'base'``, ``'l'``,
    ``'deit-s'``, ...), a shorthand ``'EMBED,LAYERS,HEADS[,FFN]'`` (FFN
    defaults to 4 x EMBED), a JSON object or a Python dict literal with
    ``embed_dims``, ``num_layers``, ``num_heads``, ``feedforward_channels``, or
    a dict.
    """
    if arch is None or isinstance(arch, dict):
        return copy.deepcopy(arch)
    text = str(arch).strip()
    if text.lower() in VisionTransformer.arch_zoo:
        return text.lower()
    if text.startswith('{'):
        try:
            value = json.loads(text)
        except ValueError:
            value = ast.literal_eval(text)
        return dict(value)
    if text.startswith('dict('):
        tree = ast.parse(text, mode='eval').body
        return {kw.arg: ast.literal_eval(kw.value) for kw in tree.keywords}
    parts = [p for p in text.replace('x', ',').split(',') if p]
    if len(parts) in (3, 4) and all(p.strip().isdigit() for p in parts):
        e, n_layers, heads = (int(p) for p in parts[:3])
        ffn = int(parts[3]) if len(parts) == 4 else 4 * e
        return dict(
            embed_dims=e,
            num_layers=n_layers,
            num_heads=heads,
            feedforward_channels=ffn)
    raise ValueError(f'cannot read --arch {arch!r}: give an mmpretrain name '
                     f'({", ".join(sorted(VisionTransformer.arch_zoo))}), '
                     "'EMBED,LAYERS,HEADS[,FFN]' or a dict")


def _arch_dict(arch: Union[str, dict]) -> dict:
    if isinstance(arch, dict):
        return dict(arch)
    return dict(VisionTransformer.arch_zoo[arch])


def infer_vit_kwargs(state_dict: Dict[str, torch.Tensor],
                     fmt: str,
                     arch: Union[str, dict, None] = None,
                     num_heads: Optional[int] = None,
                     patch_size: Optional[int] = None,
                     img_size: Optional[int] = None) -> dict:
    """A :class:`HybridViT` config that matches a (converted) state dict.

    Args:
        state_dict (dict): Weights in mmpretrain's keys
            (:func:`convert_vit_state_dict`).
        fmt (str): The layout they were read from; ``'openai_clip'`` also sets
            CLIP's QuickGELU and LayerNorm eps 1e-5.
        arch (str | dict, optional): See :func:`parse_arch`; checked
            against the weights. None: read off the weights.
        num_heads (int, optional): Overrides the head count (default: from
            ``arch``, else :func:`~mmhybrid.vit_checkpoints.arch.
            resolve_num_heads`: the arch zoo or the published widths; another
            width needs it).
        patch_size (int, optional): Defaults to the patch embedding's kernel.
        img_size (int, optional): Defaults to the position embedding's grid x
            patch size; another size resizes the position embedding on load.

    Returns:
        dict: Keyword arguments for ``HybridViT`` (with ``type``).
    """
    vit = ViTArch.from_state_dict(
        state_dict,
        num_heads,
        arch=None if arch is None else _arch_dict(parse_arch(arch)),
        arch_name=f'--arch {arch!r}')
    kwargs = dict(
        type='HybridViT',
        **vit.vit_kwargs(img_size),
        with_cls_token=True,
        out_type='raw')
    if patch_size is not None:
        kwargs['patch_size'] = int(patch_size)
    if fmt == 'openai_clip':
        kwargs['norm_cfg'] = dict(type='LN', eps=1e-5)
        kwargs['layer_cfgs'] = dict(act_cfg=dict(type='mmpretrain.QuickGELU'))
    return kwargs


def vit_from_checkpoint(
        checkpoint: str,
        fmt: str = 'auto',
        arch: Union[str, dict, None] = None,
        num_heads: Optional[int] = None,
        patch_size: Optional[int] = None,
        img_size: Optional[int] = None,
        clip_norm: Optional[bool] = None,
        quick_gelu: bool = False,
        device: Union[str, torch.device] = 'cpu') -> AnalysisVit:
    """A ViT built to match a checkpoint file, weights loaded strictly.

    Args:
        checkpoint (str): Path, URL or ``.safetensors`` file.
        fmt (str): One of :data:`~mmhybrid.vit_checkpoints.FORMATS`
            (``'auto'`` detects the layout).
        arch, num_heads, patch_size, img_size: See :func:`infer_vit_kwargs`.
        clip_norm (bool, optional): Normalise inputs with CLIP's mean/std.
            None: CLIP's for OpenAI CLIP files, ImageNet's otherwise.
        quick_gelu (bool): Use QuickGELU (timm ports of OpenAI CLIP need
            it; set automatically for ``openai_clip`` files).
        device (str | torch.device): Where the model goes.

    Returns:
        AnalysisVit: The model and its input normalisation.
    """
    if fmt not in FORMATS:
        raise ValueError(f'unknown format {fmt!r}; expected one of {FORMATS}')
    # read once: the same converted weights give the architecture and the load
    sd, used = read_vit_state_dict(checkpoint, fmt)
    kwargs = infer_vit_kwargs(sd, used, arch, num_heads, patch_size, img_size)
    if quick_gelu:
        kwargs['layer_cfgs'] = dict(act_cfg=dict(type='mmpretrain.QuickGELU'))
    model = MODELS.build(kwargs)
    load_vit_state_dict(model, sd, checkpoint, used)
    del sd
    if clip_norm is None:
        clip_norm = used == 'openai_clip'
    mean, std = (CLIP_MEAN, CLIP_STD) if clip_norm else (IMAGENET_MEAN,
                                                         IMAGENET_STD)
    return AnalysisVit(
        model.to(device), mean, std, f'{checkpoint} ({used} layout)')


# ----------------------------------------------------------------- from config
def _hybrid_vit_cfg(backbone: dict) -> dict:
    """A backbone config of the VisionTransformer family as a HybridViT
    config."""
    bb = copy.deepcopy(dict(backbone))
    btype = str(bb.get('type', 'VisionTransformer')).split('.')[-1]
    if btype not in _VIT_TYPES:
        raise ValueError(f'backbone type {btype!r} is not a ViT that shares '
                         f"mmpretrain's VisionTransformer keys {_VIT_TYPES}")
    accepted = set(inspect.signature(VisionTransformer.__init__).parameters)
    bb = {k: v for k, v in bb.items() if k in accepted and k != 'init_cfg'}
    bb.update(
        type='HybridViT',
        drop_path_rate=0.0,
        drop_rate=0.0,
        with_cls_token=True,
        frozen_stages=-1)
    if bb.get('out_type') == 'cls_token' or 'out_type' not in bb:
        bb['out_type'] = 'raw'
    return bb


def _cfg_get(cfg, key, default=None):
    return cfg.get(key, default) if cfg is not None else default


def config_teachers(model_cfg) -> Dict[str, dict]:
    """A HybridDistill model config's teacher configs by name.

    Args:
        model_cfg (dict): ``cfg.model``.

    Returns:
        dict[str, dict]: ``model.teachers``' entries' ``teacher`` by name,
        else ``teacher_feat`` / ``teacher_rel`` where set; empty for a config
        without teachers.
    """
    entries = _cfg_get(model_cfg, 'teachers')
    if entries is not None:
        return {
            str(name): _cfg_get(entry, 'teacher')
            for name, entry in entries.items()
        }
    return {
        name: model_cfg[name]
        for name in COMPONENTS[1:] if _cfg_get(model_cfg, name) is not None
    }


def drop_teacher_checkpoints(model_cfg) -> None:
    """Give every teacher of a HybridDistill model config random weights,
    read from no file and downloaded from nowhere (speed and precision
    checks): ``checkpoint=False`` for a ``ZooTeacher`` (None would be its
    model-zoo weights), None for a ``FrozenTeacher``.

    Args:
        model_cfg (dict): ``cfg.model``, changed in place.
    """
    for teacher in config_teachers(model_cfg).values():
        teacher['checkpoint'] = (False if type_name(teacher) == 'ZooTeacher'
                                 else None)


def config_components(cfg) -> Tuple[str, ...]:
    """``'student'`` and the teachers' names of a config (:func:`
    config_teachers`)."""
    return ('student', ) + tuple(config_teachers(cfg.model))


def _teacher_cfg(model_cfg, component: str) -> dict:
    """The config of the teacher ``component``; one line naming the teachers
    when it is none of them."""
    teachers = config_teachers(model_cfg)
    if component not in teachers:
        names = ', '.join(teachers) or 'none'
        raise ValueError(
            f'component {component!r} is not a teacher of the config: '
            f"expected 'student' or one of its teachers ({names})")
    teacher = teachers[component]
    if not hasattr(teacher, 'get'):
        raise ValueError(f'the teacher {component!r} of the config is not a '
                         f'teacher config dict: {teacher!r}')
    return copy.deepcopy(dict(teacher))


def _zoo_teacher_vit(teacher_cfg: dict, component: str,
                     checkpoint: Optional[str], fmt: str,
                     clip_norm: Optional[bool], random_init: bool,
                     mean: Sequence[float], std: Sequence[float],
                     device: Union[str, torch.device]) -> ZooTeacherVit:
    """A config's ``ZooTeacher`` for analysis: fp32, not compiled, its own
    input normalisation (CLIP's with ``clip_norm``), weights from
    ``checkpoint`` or the config's (a zoo name's metafile weights when
    None)."""
    if fmt not in ('auto', 'mmpretrain'):
        raise ValueError(f'--format {fmt}: the ZooTeacher {component!r} reads '
                         "mmpretrain's layout only (auto or mmpretrain)")
    teacher_cfg.pop('type', None)
    if random_init:
        teacher_cfg['checkpoint'] = False
    elif checkpoint:
        teacher_cfg['checkpoint'] = checkpoint
    if clip_norm:
        teacher_cfg.update(mean=CLIP_MEAN, std=CLIP_STD)
    teacher_cfg.update(autocast_dtype=None, compile=False)
    teacher = ZooTeacher(**teacher_cfg)
    if random_init:
        teacher.backbone.init_weights()
        teacher.freeze()
        source = f'random initialisation ({teacher.owner})'
    else:
        if teacher.checkpoint is None:
            raise ValueError(f'no checkpoint for the {component} '
                             f'({teacher.owner}): pass --checkpoint (or '
                             '--random-init)')
        teacher.init_weights()
        source = f'{teacher.checkpoint} ({teacher.owner})'
    teacher.set_input_norm(torch.tensor(mean), torch.tensor(std))
    return ZooTeacherVit(teacher.to(device), mean, std, source)


def vit_from_config(cfg,
                    component: str = 'student',
                    checkpoint: Optional[str] = None,
                    fmt: str = 'auto',
                    clip_norm: Optional[bool] = None,
                    random_init: bool = False,
                    device: Union[str, torch.device] = 'cpu') -> AnalysisVit:
    """The student or a teacher of a config, weights loaded strictly.

    A ``FrozenTeacher`` (and the student) is built as a :class:`HybridViT`
    from its backbone config; a ``ZooTeacher`` is the teacher itself, read
    through its own forward (:class:`ZooTeacherVit`, images at its own
    ``img_size``).

    Args:
        cfg (mmengine.Config): A HybridDistill config, or any mmpretrain config
            whose ``model.backbone`` is a ViT of mmpretrain's key layout.
        component (str): ``'student'`` (``model.backbone``) or a teacher's
            name: ``'teacher_feat'`` / ``'teacher_rel'`` in the two-teacher
            form, a key of ``model.teachers`` otherwise
            (:func:`config_components`). Defaults to ``'student'``.
        checkpoint (str, optional): Weights. Required for the student unless
            ``random_init``; teachers default to the config's own checkpoint.
        fmt (str): Layout; ``'auto'`` uses the teacher's ``checkpoint_format``
            when there is one, else detects (a ZooTeacher reads mmpretrain's
            layout only).
        clip_norm (bool, optional): Force CLIP's input normalisation (a
            ZooTeacher's own normalisation). None: the teacher's own
            ``mean``/``std`` if set, else the data preprocessor's.
        random_init (bool): Keep the (seeded) random initialisation.
        device (str | torch.device): Where the model goes.

    Returns:
        AnalysisVit: The model and its input normalisation.
    """
    model_cfg = cfg.model
    dp = _cfg_get(model_cfg, 'data_preprocessor') or {}
    mean = tuple(_cfg_get(dp, 'mean') or IMAGENET_MEAN)
    std = tuple(_cfg_get(dp, 'std') or IMAGENET_STD)
    if component == 'student':
        backbone = model_cfg.backbone
    else:
        teacher = _teacher_cfg(model_cfg, component)
        if type_name(teacher) == 'ZooTeacher':
            return _zoo_teacher_vit(teacher, component, checkpoint, fmt,
                                    clip_norm, random_init, mean, std, device)
        if 'backbone' not in teacher:
            raise ValueError(
                f'the teacher {component!r} ({type_name(teacher)}) is neither '
                'a FrozenTeacher (with a backbone) nor a ZooTeacher')
        backbone = teacher['backbone']
        checkpoint = checkpoint or teacher.get('checkpoint')
        if fmt == 'auto':
            fmt = teacher.get('checkpoint_format', 'auto')
        if teacher.get('mean') is not None:
            mean, std = tuple(teacher['mean']), tuple(teacher['std'])
    if clip_norm:
        mean, std = CLIP_MEAN, CLIP_STD
    model = MODELS.build(_hybrid_vit_cfg(backbone))
    if random_init:
        model.init_weights()
        source = 'random initialisation'
    else:
        if not checkpoint:
            raise ValueError(f'no checkpoint for the {component}: pass '
                             '--checkpoint (or --random-init)')
        used = load_vit_weights(model, checkpoint, fmt)
        source = f'{checkpoint} ({used} layout)'
    return AnalysisVit(model.to(device), mean, std, source)


# ------------------------------------------------------------------ images
def load_images(folder: str,
                img_size: Union[int, Sequence[int]],
                num_images: Optional[int] = None,
                seed: int = 0) -> Tuple[torch.Tensor, List[str]]:
    """Read images for analysis.

    Each image is converted to RGB, resized so that its shorter side covers the
    target (bicubic) and centre-cropped to ``img_size``.

    Args:
        folder (str): Read recursively (jpg, png, bmp, webp, ppm, tif).
        img_size (int | tuple[int, int]): Target ``(H, W)``.
        num_images (int, optional): How many; a seeded random subset when the
            folder holds more. None: all.
        seed (int): Subset seed. Defaults to 0.

    Returns:
        tuple: ``(B, 3, H, W)`` uint8 tensor and the chosen paths.
    """
    from PIL import Image

    # hidden files (macOS '._x.jpg' resource forks) are not images to look at
    paths = [
        p for p in list_images(folder) if not osp.basename(p).startswith('.')
    ]
    if not paths:
        raise FileNotFoundError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) '
                                f'under {folder}')
    if num_images is not None and num_images < len(paths):
        paths = sorted(random.Random(seed).sample(paths, num_images))
    th, tw = (img_size, img_size) if isinstance(img_size, int) else img_size
    out = torch.empty(len(paths), 3, th, tw, dtype=torch.uint8)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            im = im.convert('RGB')
            scale = max(th / im.height, tw / im.width)
            size = (max(tw, round(im.width * scale)),
                    max(th, round(im.height * scale)))
            if size != im.size:
                im = im.resize(size, Image.BICUBIC)
            left = (im.width - tw) // 2
            top = (im.height - th) // 2
            im = im.crop((left, top, left + tw, top + th))
            out[i] = torch.frombuffer(
                bytearray(im.tobytes()),
                dtype=torch.uint8).view(th, tw, 3).permute(2, 0, 1)
    return out, paths
