from typing import Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import MMLogger
from mmpretrain.registry import MODELS

from ...utils.checkpoint import CheckpointError
from ...utils.problems import choice_problems, raise_problems
from ...utils.teacher_files import teacher_file_problems
from ...vit_checkpoints import FORMATS, load_vit_weights
from ..backbones.hybrid_vit import DistillOutput, HybridViT
# re-exported: their home was this module
from .base_teacher import AUTOCAST_DTYPES  # noqa: F401
from .base_teacher import RESIDUAL_PARAMS  # noqa: F401
from .base_teacher import cast_frozen_weights  # noqa: F401
from .base_teacher import is_downsize  # noqa: F401
from .base_teacher import BaseFrozenTeacher, resize_for_teacher


@MODELS.register_module()
class FrozenTeacher(BaseFrozenTeacher):
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
        self.checkpoint = checkpoint
        self.checkpoint_format = checkpoint_format
        self._init_frozen(mean, std, autocast_dtype, compile, fp32_residual)

    def init_weights(self) -> None:
        logger = MMLogger.get_current_instance()
        if self.checkpoint is None:
            logger.warning('FrozenTeacher has no checkpoint: its weights are '
                           'random (acceptable in tests only)')
        else:
            load_vit_weights(self.backbone, self.checkpoint,
                             self.checkpoint_format, logger)
        self.freeze()

    @property
    def embed_dims(self) -> int:
        return self.backbone.embed_dims

    @property
    def num_heads(self) -> int:
        return self.backbone.num_heads

    @property
    def num_layers(self) -> int:
        return self.backbone.num_layers

    def _encode(self, x: torch.Tensor, out_layers: Tuple[int, ...],
                parts: Tuple[str, ...], cls_attn: bool, final_tokens: bool,
                use_amp: bool) -> DistillOutput:
        x = self._normalise(x)
        x = resize_for_teacher(x, tuple(self.backbone.img_size))
        dtype = getattr(torch, self.autocast_dtype or 'float32')
        with torch.autocast('cuda', dtype=dtype, enabled=use_amp):
            return self.backbone.forward_distill(x, None, out_layers, parts,
                                                 cls_attn, final_tokens)
