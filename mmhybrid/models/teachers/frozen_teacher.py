from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import MMLogger
from mmpretrain.registry import MODELS

from ...utils.checkpoint import (CheckpointError, extract_state_dict,
                                 load_checkpoint_file)
from ...utils.problems import choice_problems, raise_problems
from ...utils.teacher_files import fetch_teacher_file, teacher_file_problems
from ..backbones.hybrid_vit import DistillOutput, HybridViT
from ..utils.lazy_compile import LazyCompileMixin
from .vit_arch import ViTArch
from .vit_formats import (FORMATS, compare_keys, fit_final_norm,
                          format_key_report, read_vit_layout)

#: the teacher's autocast dtypes on CUDA (None: fp32)
AUTOCAST_DTYPES = (None, 'bfloat16', 'float16')

#: the parameters that enter the residual stream directly (added to it, not
#: multiplied into it): kept fp32 with ``fp32_residual``
RESIDUAL_PARAMS = ('pos_embed', 'cls_token')


def cast_frozen_weights(backbone: nn.Module,
                        dtype: torch.dtype,
                        fp32_residual: bool = True) -> None:
    """Keep a frozen backbone's weights in the autocast dtype.

    Autocast would otherwise re-cast every fp32 weight at every step.
    LayerNorm still computes in fp32 under autocast. With ``fp32_residual``
    the parameters added to the residual stream (:data:`RESIDUAL_PARAMS`)
    stay fp32: the stream is then fp32 from the embedding on (``x + pos``
    promotes; each block adds its bf16/fp16 output to an fp32 stream), as in
    an fp32 model under autocast, while every matmul still runs in ``dtype``.
    Without it the whole stream is rounded to ``dtype`` at every block.

    Args:
        backbone (nn.Module): The teacher's ViT.
        dtype (torch.dtype): The autocast dtype.
        fp32_residual (bool): Keep :data:`RESIDUAL_PARAMS` fp32. Defaults to
            True.
    """
    for name, param in backbone.named_parameters():
        keep = fp32_residual and name in RESIDUAL_PARAMS
        want = torch.float32 if keep else dtype
        if param.dtype != want:
            param.data = param.data.to(want)


def load_vit_weights(model: HybridViT,
                     filename: str,
                     fmt: str = 'auto',
                     logger: Optional[MMLogger] = None) -> str:
    """Load an official ViT checkpoint into ``model``, checking keys strictly.

    Keys that are not part of the ViT encoder (CLIP's text tower and
    projections, heads, decoders) are ignored and reported to ``logger``; the
    final norm may be absent from the file or from the model
    (:func:`~.vit_formats.fit_final_norm`); every other encoder key must match.

    Args:
        model (HybridViT): Target (mmpretrain key layout).
        filename (str): Path, URL or ``.safetensors`` file.
        fmt (str): Layout, see :data:`~.vit_formats.FORMATS`. Defaults to
            ``'auto'``.
        logger (MMLogger, optional): Where to report.

    Returns:
        str: The layout that was read.

    Raises:
        CheckpointError: Unreadable file, or keys that do not match
            (missing and unexpected keys are listed by name), or shapes that
            differ.
    """
    sd, fmt = read_vit_state_dict(filename, fmt, logger)
    load_vit_state_dict(model, sd, filename, fmt, logger)
    return fmt


def read_vit_state_dict(filename: str,
                        fmt: str = 'auto',
                        logger: Optional[MMLogger] = None
                        ) -> Tuple[Dict[str, torch.Tensor], str]:
    """Read a ViT checkpoint file and convert it to mmpretrain's key layout.

    A URL is downloaded once per node into torch hub's cache
    (:func:`~mmhybrid.utils.teacher_files.fetch_teacher_file`); every rank
    reads the cached file.

    Args:
        filename (str): Path, URL or ``.safetensors`` file.
        fmt (str): Layout, see :data:`~.vit_formats.FORMATS`. Defaults to
            ``'auto'``.
        logger (MMLogger, optional): Where the ignored keys are reported.

    Returns:
        tuple: The converted state dict and the layout that was read.

    Raises:
        CheckpointError: Unreadable file or a layout that does not convert.
    """
    path = fetch_teacher_file(filename)
    try:
        ckpt = load_checkpoint_file(path)
    except CheckpointError as e:
        if path == filename:
            raise
        raise CheckpointError(f'{filename} (cached as {path}): {e}') from None
    raw = extract_state_dict(ckpt, filename)
    try:
        vit = read_vit_layout(raw, fmt)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f'{filename}: {e}') from None
    if vit.ignored and logger is not None:
        logger.info(f'{filename} ({vit.fmt} layout): ignored '
                    f'{len(vit.ignored)} tensors that are not part of the ViT '
                    f'encoder: {_show(vit.ignored)}')
    return vit.state_dict, vit.fmt


def _show(keys: List[str], limit: int = 12) -> str:
    more = f' ... (+{len(keys) - limit} more)' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def load_vit_state_dict(model: HybridViT,
                        sd: Dict[str, torch.Tensor],
                        filename: str,
                        fmt: str,
                        logger: Optional[MMLogger] = None) -> None:
    """Load an already converted state dict (see :func:`read_vit_state_dict`)
    into ``model`` strictly: keys by name, then shapes; the final norm may be
    absent on either side (:func:`~.vit_formats.fit_final_norm`).

    ``filename`` and ``fmt`` only name the source in errors and logs.
    """
    own = model.state_dict()
    sd, norm_note = fit_final_norm(sd, own)
    missing, unexpected = compare_keys(own, sd)
    if missing or unexpected:
        raise CheckpointError(
            format_key_report(filename, missing, unexpected, fmt))
    for k, v in sd.items():
        if k == 'pos_embed':
            continue  # resized by VisionTransformer's own load hook
        if own[k].shape != v.shape:
            raise CheckpointError(
                f'{filename} ({fmt} layout): {k} has shape {tuple(v.shape)}, '
                f'the model expects {tuple(own[k].shape)}; check the teacher '
                f'arch/patch_size{_held(sd)}')
    model.load_state_dict(sd, strict=True)
    if logger is not None:
        logger.info(
            f'loaded {len(sd)} tensors from {filename} ({fmt} layout)' +
            (f'; {norm_note}' if norm_note else ''))


def _held(sd: Dict[str, torch.Tensor]) -> str:
    """``'; the file holds <ViTArch.summary>'`` when the shapes tell one."""
    try:
        # one head: any width divides, and heads are not in the summary
        return f'; the file holds {ViTArch.from_state_dict(sd, 1).summary()}'
    except CheckpointError:
        return ''


def resize_for_teacher(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of ``(B, C, H, W)`` images to the teacher's ``size``.

    Downsizing is antialiased (the kernel widened to the output's sampling
    rate, like PIL's resize, which CLIP's own preprocessing uses); plain
    bicubic would alias fine detail. Upsizing has nothing to alias and stays
    plain bicubic (torch's antialiased kernel would also change its
    coefficient).

    Args:
        x (Tensor): ``(B, C, H, W)`` images.
        size (tuple[int, int]): The teacher's ``(height, width)``.

    Returns:
        Tensor: ``(B, C, *size)``; ``x`` itself when it has that size.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(
        x,
        size=size,
        mode='bicubic',
        align_corners=False,
        antialias=is_downsize(x.shape[-2:], size))


def is_downsize(src: Sequence[int], dst: Sequence[int]) -> bool:
    """Whether resizing ``(H, W)`` ``src`` to ``dst`` shrinks either side."""
    return dst[0] < src[0] or dst[1] < src[1]


@MODELS.register_module()
class FrozenTeacher(LazyCompileMixin, nn.Module):
    """A frozen ViT teacher: never trained or saved, loaded from its own file.

    Frozen means: every parameter has ``requires_grad=False``; the module stays
    in eval mode whatever ``train()`` is asked; it runs under
    :func:`torch.inference_mode` (:func:`torch.no_grad` when compiled; bf16
    autocast on CUDA by default). The owning
    algorithm keeps teachers outside its module tree, so they are not in its
    ``state_dict`` nor in the optimizer.

    Args:
        backbone (dict): Config of a :class:`HybridViT`.
        checkpoint (str, optional): Path or URL of the teacher weights,
            read in :meth:`init_weights` (not in ``__init__``). None leaves
            random weights (tests only; a warning says so).
        checkpoint_format (str): ``'auto'``, ``'mmpretrain'``,
            ``'openai_clip'`` or ``'timm'`` (MAE, DeiT, DINO, timm). Defaults
            to ``'auto'``.
        mean (Sequence[float], optional): The teacher's own input mean
            (0-255 RGB), e.g. CLIP's. None: the same normalisation as the
            student's input.
        std (Sequence[float], optional): The teacher's own input std.
        autocast_dtype (str, optional): Autocast dtype on CUDA, ``'bfloat16'``,
            ``'float16'`` or None for fp32. Defaults to ``'bfloat16'``.
        fp32_residual (bool): Under autocast, keep the residual stream fp32
            (:func:`cast_frozen_weights`); False rounds it to
            ``autocast_dtype`` at every block (the behaviour until 0.1.0;
            ``tools/speed/teacher_precision.py`` measures both against fp32).
            Defaults to True.
        compile (bool | dict): Run the teacher's encoding (input normalisation
            included) through :func:`torch.compile`; a dict holds its keyword
            arguments (e.g. ``dict(mode='max-autotune-no-cudagraphs')``). A
            teacher always sees full images of one size and is always asked
            for the same outputs, so one graph serves every step (one more for
            another batch size, e.g. a smaller last batch). It fuses the
            element-wise work between the matmuls (LayerNorm, casts, GELU,
            bias adds). Defaults to False.

    Images whose size differs from ``backbone.img_size`` are resized (bicubic)
    first: a CLIP ViT-L/14 teacher at 196 px sees the same 14x14 patch grid as
    a /16 student at 224 px, which token masking needs. Downsizing is
    antialiased (:func:`resize_for_teacher`), as CLIP's own PIL preprocessing
    is.

    The feature target is the teacher's last tokens after its final norm when
    the backbone has one (``final_norm=True``, mmpretrain's default and the
    shipped configs): the file's own final norm (OpenAI ``ln_post``,
    mmpretrain ``ln1`` / ``visual.ln1``, timm ``norm``), or, for a file
    without one, a LayerNorm without affine (weight 1, bias 0). With
    ``final_norm=False`` it is the last block's tokens before any norm, as
    mmpretrain's CLIP configs use them (a final norm in the file is then
    ignored and reported). ``FeatureDistillLoss`` whitens the target in every
    case.
    """

    def __init__(self,
                 backbone: dict,
                 checkpoint: Optional[str] = None,
                 checkpoint_format: str = 'auto',
                 mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None,
                 autocast_dtype: Optional[str] = 'bfloat16',
                 compile: Union[bool, dict] = False,
                 fp32_residual: bool = True) -> None:
        super().__init__()
        self.backbone = MODELS.build(backbone)
        if not isinstance(self.backbone, HybridViT):
            raise TypeError(
                'FrozenTeacher.backbone must build a HybridViT, got '
                f'{type(self.backbone).__name__}')
        raise_problems(
            'FrozenTeacher',
            choice_problems('checkpoint_format', checkpoint_format, FORMATS))
        # fail at build time, before any data is loaded or step is run
        raise_problems('FrozenTeacher', teacher_file_problems(checkpoint),
                       CheckpointError)
        if (mean is None) != (std is None):
            raise ValueError(
                'FrozenTeacher: give both mean and std, or neither')
        raise_problems(
            'FrozenTeacher',
            choice_problems('autocast_dtype', autocast_dtype, AUTOCAST_DTYPES))
        if not isinstance(compile, (bool, dict)):
            raise TypeError(
                'FrozenTeacher: compile must be a bool or a dict of '
                f'torch.compile arguments, got {compile!r}')
        self.compile_cfg = compile
        self.checkpoint = checkpoint
        self.checkpoint_format = checkpoint_format
        self.autocast_dtype = autocast_dtype
        self.fp32_residual = bool(fp32_residual)
        self.mean = mean
        self.std = std
        # affine map from the data preprocessor's normalisation to the
        # teacher's
        self.register_buffer(
            'in_scale', torch.ones(1, 3, 1, 1), persistent=False)
        self.register_buffer(
            'in_shift', torch.zeros(1, 3, 1, 1), persistent=False)
        self.freeze()

    def freeze(self) -> None:
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> 'FrozenTeacher':
        """Stay in eval mode: teachers never use dropout or drop path."""
        return super().train(False)

    def set_input_norm(self, mean: Optional[torch.Tensor],
                       std: Optional[torch.Tensor]) -> None:
        """Tell the teacher how its inputs were normalised.

        Args:
            mean (Tensor | None): The data preprocessor's mean, 3 values
                (0-255).
            std (Tensor | None): Its std. None (both) means raw 0-255 input.
        """
        if self.mean is None:
            return
        in_mean = torch.zeros(
            3) if mean is None else mean.flatten().float().cpu()
        in_std = torch.ones(3) if std is None else std.flatten().float().cpu()
        t_mean = torch.tensor(self.mean, dtype=torch.float32)
        t_std = torch.tensor(self.std, dtype=torch.float32)
        self.in_scale.copy_((in_std / t_std).view(1, 3, 1, 1))
        self.in_shift.copy_(((in_mean - t_mean) / t_std).view(1, 3, 1, 1))

    def init_weights(self) -> None:
        logger = MMLogger.get_current_instance()
        if self.checkpoint is None:
            logger.warning('FrozenTeacher has no checkpoint: its weights are '
                           'random (acceptable in tests only)')
        else:
            load_vit_weights(self.backbone, self.checkpoint,
                             self.checkpoint_format, logger)
        self.freeze()

    def _cast_weights(self, dtype: torch.dtype) -> None:
        # at the first step (the patch embedding's weight tells)
        if self.backbone.patch_embed.projection.weight.dtype != dtype:
            cast_frozen_weights(self.backbone, dtype, self.fp32_residual)

    @property
    def embed_dims(self) -> int:
        return self.backbone.embed_dims

    @property
    def num_heads(self) -> int:
        return self.backbone.num_heads

    @property
    def num_layers(self) -> int:
        return self.backbone.num_layers

    # Never traced by an enclosing torch.compile (mmengine's ``compile=True``
    # compiles the whole train_step): dynamo fails on inference tensors. The
    # teacher compiles itself when asked (``compile``).
    @torch.compiler.disable
    def forward(self,
                x: torch.Tensor,
                out_layers: Sequence[int] = (),
                parts: Sequence[str] = ('q', 'k'),
                cls_attn: bool = False,
                final_tokens: bool = True) -> DistillOutput:
        """Encode the full image (see :meth:`HybridViT.forward_distill`).

        Only the blocks the requested outputs need are run: with
        ``final_tokens=False`` and no ``cls_attn`` (a relation teacher), the
        encoding stops after the deepest block of ``out_layers``, without the
        final norm.

        Args:
            x (Tensor): ``(B, 3, H, W)`` images, normalised as the data
                preprocessor does (see :meth:`set_input_norm`).
            out_layers (Sequence[int]): Blocks whose projections are returned.
                Defaults to ``()``.
            parts (Sequence[str]): Which of ``'q'``, ``'k'``, ``'v'``.
                Defaults to ``('q', 'k')``.
            cls_attn (bool): Also return the last block's [CLS]->patch
                attention. Defaults to False.
            final_tokens (bool): Return the last block's tokens (after the
                final norm); False returns ``tokens=None``. Defaults to True.

        Outputs have no autograd history and may be bf16: inference tensors
        when eager; plain tensors made under ``no_grad`` when compiled (dynamo
        does not trace inference mode reliably: its guards and version counters
        fail on inference tensors).
        """
        use_amp = x.is_cuda and self.autocast_dtype is not None
        if use_amp:
            self._cast_weights(getattr(torch, self.autocast_dtype))
        args = (x, tuple(out_layers), tuple(parts), cls_attn, final_tokens,
                use_amp)
        if self.compile_cfg is False:
            with torch.inference_mode():
                return self._encode(*args)
        kwargs = {} if self.compile_cfg is True else dict(self.compile_cfg)
        encode = self.compiled_method('_encode', **kwargs)
        with torch.no_grad():
            return encode(*args)

    def _encode(self, x: torch.Tensor, out_layers: Tuple[int, ...],
                parts: Tuple[str, ...], cls_attn: bool, final_tokens: bool,
                use_amp: bool) -> DistillOutput:
        if self.mean is not None:
            x = x * self.in_scale + self.in_shift
        x = resize_for_teacher(x, tuple(self.backbone.img_size))
        dtype = getattr(torch, self.autocast_dtype or 'float32')
        with torch.autocast('cuda', dtype=dtype, enabled=use_amp):
            return self.backbone.forward_distill(x, None, out_layers, parts,
                                                 cls_attn, final_tokens)
