"""What every frozen teacher shares: frozen state, input normalisation and
resize, autocast with weights kept in its dtype, optional self-compilation.

:class:`~.frozen_teacher.FrozenTeacher` (our own ``HybridViT``) and
:class:`~.zoo_teacher.ZooTeacher` (any mmpretrain model-zoo ViT) subclass
:class:`BaseFrozenTeacher`; they differ only in how they build, load and read
their backbone (:meth:`BaseFrozenTeacher._encode`).
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...utils.problems import choice_problems, raise_problems
from ..backbones.hybrid_vit import DistillOutput
from ..utils.lazy_compile import LazyCompileMixin

#: the teacher's autocast dtypes on CUDA (None: fp32)
AUTOCAST_DTYPES = (None, 'bfloat16', 'float16')

#: the parameters that enter the residual stream directly (added to it, not
#: multiplied into it): kept fp32 with ``fp32_residual``
RESIDUAL_PARAMS = ('pos_embed', 'cls_token')


def cast_frozen_weights(backbone: nn.Module,
                        dtype: torch.dtype,
                        fp32_residual: bool = True,
                        residual: Sequence[str] = RESIDUAL_PARAMS) -> None:
    """Keep a frozen backbone's weights in the autocast dtype.

    Autocast would otherwise re-cast every fp32 weight at every step.
    LayerNorm still computes in fp32 under autocast. With ``fp32_residual``
    the parameters added to the residual stream (``residual``, by default
    :data:`RESIDUAL_PARAMS`) stay fp32: the stream is then fp32 from the
    embedding on (``x + pos`` promotes; each block adds its bf16/fp16 output
    to an fp32 stream), as in an fp32 model under autocast, while every matmul
    still runs in ``dtype``. Without it the whole stream is rounded to
    ``dtype`` at every block.

    Args:
        backbone (nn.Module): The teacher's ViT.
        dtype (torch.dtype): The autocast dtype.
        fp32_residual (bool): Keep the ``residual`` parameters fp32.
            Defaults to True.
        residual (Sequence[str]): Names (in ``backbone.named_parameters()``)
            of the parameters that enter the residual stream directly.
            Defaults to :data:`RESIDUAL_PARAMS`.
    """
    for name, param in backbone.named_parameters():
        keep = fp32_residual and name in residual
        want = torch.float32 if keep else dtype
        if param.dtype != want:
            param.data = param.data.to(want)


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


class BaseFrozenTeacher(LazyCompileMixin, nn.Module):
    """A frozen teacher: never trained or saved.

    Frozen means: every parameter has ``requires_grad=False``; the module stays
    in eval mode whatever ``train()`` is asked; it runs under
    :func:`torch.inference_mode` (:func:`torch.no_grad` when compiled; autocast
    on CUDA, bf16 by default, with the weights kept in that dtype). The owning
    algorithm keeps teachers outside its module tree, so they are not in its
    ``state_dict`` nor in the optimizer.

    A subclass holds its network as ``self.backbone``, calls
    :meth:`_init_frozen` at the end of its ``__init__`` and implements
    :meth:`_encode`; :meth:`forward` wraps it.
    """

    #: names of the backbone's parameters kept fp32 with ``fp32_residual``
    residual_params: Tuple[str, ...] = RESIDUAL_PARAMS

    def _init_frozen(self, mean: Optional[Sequence[float]],
                     std: Optional[Sequence[float]],
                     autocast_dtype: Optional[str], compile: Union[bool, dict],
                     fp32_residual: bool) -> None:
        """Check and keep the shared arguments, then freeze.

        Args:
            mean (Sequence[float], optional): The teacher's own input mean
                (0-255 RGB). None: the same normalisation as the student's.
            std (Sequence[float], optional): The teacher's own input std.
            autocast_dtype (str, optional): ``'bfloat16'``, ``'float16'`` or
                None (fp32), on CUDA.
            compile (bool | dict): :func:`torch.compile` the encoding; a dict
                holds its keyword arguments.
            fp32_residual (bool): Keep :attr:`residual_params` fp32 under
                autocast (:func:`cast_frozen_weights`).
        """
        owner = type(self).__name__
        if (mean is None) != (std is None):
            raise ValueError(f'{owner}: give both mean and std, or neither')
        raise_problems(
            owner,
            choice_problems('autocast_dtype', autocast_dtype, AUTOCAST_DTYPES))
        if not isinstance(compile, (bool, dict)):
            raise TypeError(f'{owner}: compile must be a bool or a dict of '
                            f'torch.compile arguments, got {compile!r}')
        self.compile_cfg = compile
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

    def train(self, mode: bool = True) -> 'BaseFrozenTeacher':
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

    def _cast_weights(self, dtype: torch.dtype) -> None:
        # at the first step (the patch embedding's weight tells)
        if self.backbone.patch_embed.projection.weight.dtype != dtype:
            cast_frozen_weights(self.backbone, dtype, self.fp32_residual,
                                self.residual_params)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Re-normalise the student's input as the teacher expects it."""
        if self.mean is not None:
            x = x * self.in_scale + self.in_shift
        return x

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
        """Encode the full image.

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
            final_tokens (bool): Return the feature tokens (for our own
                ``HybridViT``: the last block's, after the final norm); False
                returns ``tokens=None``. Defaults to True.

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
        """The encoding itself (see :meth:`forward`); ``use_amp``: autocast to
        ``self.autocast_dtype`` on CUDA."""
        raise NotImplementedError
