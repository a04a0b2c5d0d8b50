"""A frozen teacher that is any mmpretrain model-zoo ViT, read through hooks.

The teacher is built by mmpretrain (its own backbone class, its own forward)
and loaded from mmpretrain's own weights. What the distillation targets need is
read from that forward without re-implementing it: forward hooks on each
block's attention and on its ``qkv`` layer capture the attention's inputs and
its projection, from which the family's own submodules give q/k/v as it uses
them (EVA-02's RoPE, BEiT's biases and relative position bias;
:mod:`.families`); a forward hook on a block gives its output tokens; the
backbone's own ``out_indices`` machinery gives the last block's tokens after
its final norm.
"""
import copy
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope
from mmengine.utils import to_2tuple
from mmpretrain.registry import MODELS

from ...utils.checkpoint import CheckpointError
from ...utils.problems import raise_problems
from ...utils.teacher_files import teacher_file_problems
from ...vit_checkpoints.io import read_teacher_checkpoint
from ...vit_checkpoints.keys import show_keys
from ..backbones.hybrid_vit import DistillOutput
from ..backbones.register_vit import RegisterViT  # noqa: F401 (registers it)
from ..losses.relation_functional import relation_logits
from .base_teacher import BaseFrozenTeacher, resize_for_teacher
from .families import ATTENTION_READOUTS, backbone_family, fixed_grid


class _StopEncoding(Exception):
    """Raised by a block hook once the deepest block needed has run."""


class _QkvTap:
    """Forward hook on block ``index``'s ``attn.qkv`` layer: keeps its output
    when that block is asked."""

    def __init__(self, state: dict, index: int) -> None:
        self.state = state
        self.index = index

    def __call__(self, module: nn.Module, args: tuple,
                 output: torch.Tensor) -> None:
        if self.index in self.state['read']:
            self.state['qkv'][self.index] = output


class _AttentionTap:
    """Forward hook on block ``index``'s attention: the family's q/k/v (and
    bias) from the attention's inputs and its ``qkv`` output, when that block
    is asked."""

    def __init__(self, state: dict, index: int) -> None:
        self.state = state
        self.index = index

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict,
                 output: Any) -> None:
        if self.index in self.state['read']:
            read = ATTENTION_READOUTS[type(module)]
            qkv = self.state['qkv'].pop(self.index, None)
            self.state['qkvb'][self.index] = read(module, args, kwargs, qkv)


class _BlockTap:
    """Forward hook on block ``index``: keeps its output when it is the feature
    block, stops the encoding when it is the deepest block needed."""

    def __init__(self, state: dict, index: int) -> None:
        self.state = state
        self.index = index

    def __call__(self, module: nn.Module, args: tuple,
                 output: torch.Tensor) -> None:
        if self.index == self.state['keep']:
            self.state['block_out'] = output
        if self.index == self.state['stop']:
            raise _StopEncoding


def _is_config_file(model: str) -> bool:
    return '::' in model or model.endswith('.py')


def resolve_model(model: Union[str, dict], owner: str) -> dict:
    """Where a teacher's backbone comes from.

    Args:
        model (str | dict): A model-zoo name, an mmpretrain config file
            (``'mmpretrain::dinov2/...py'`` or a path) or a backbone config.
        owner (str): Who asks, for messages.

    Returns:
        dict: ``backbone`` (config dict), ``weights`` (the metafile's URL for
        a zoo name, else None), ``mean``/``std`` (the config's
        ``data_preprocessor`` normalisation, or None).
    """
    if isinstance(model, dict):
        if 'type' not in model:
            raise ValueError(f'{owner}: model={model!r}: a backbone config '
                             'needs a "type"')
        return dict(
            backbone=copy.deepcopy(model), weights=None, mean=None, std=None)
    if not isinstance(model, str) or not model:
        raise TypeError(f'{owner}: model={model!r}: expected an mmpretrain '
                        'model name, config file or backbone config dict')
    weights = None
    if _is_config_file(model):
        try:
            if '::' in model:
                from mmengine.hub import get_config
                cfg = get_config(model)
            else:
                cfg = Config.fromfile(model)
        except Exception as e:  # missing file, bad syntax: one line
            raise FileNotFoundError(
                f'{owner}: model={model!r}: cannot read this mmpretrain '
                f'config ({type(e).__name__}: {e})') from None
    else:
        from mmpretrain.apis import ModelHub
        try:
            info = ModelHub.get(model)
        except ValueError:
            raise ValueError(
                f'{owner}: model={model!r}: mmpretrain knows no model of that '
                f'name (mmpretrain.list_models() lists them, e.g. '
                f'list_models("*dinov2*"))') from None
        cfg = info.config
        weights = info.weights
    backbone = cfg.get('model', {}).get('backbone')
    if not backbone:
        raise ValueError(f'{owner}: model={model!r}: its config has no '
                         'model.backbone')
    pre = cfg.get('data_preprocessor') or {}
    mean, std = pre.get('mean'), pre.get('std')
    if mean is None or std is None:
        mean = std = None
    backbone = backbone.to_dict() if hasattr(backbone,
                                             'to_dict') else dict(backbone)
    return dict(
        backbone=backbone,
        weights=weights,
        mean=None if mean is None else list(mean),
        std=None if std is None else list(std))


#: backbone keys a teacher's file may hold that no teacher uses: the token
#: that replaces masked patches (DINOv2's and BEiT's pre-training); ignored
#: and reported when the backbone class has no such parameter
MASK_TOKENS = ('mask_token', )


@MODELS.register_module()
class ZooTeacher(BaseFrozenTeacher):
    """A frozen teacher that is any supported mmpretrain ViT.

    Built by mmpretrain (its own backbone class, heads dropped), loaded from
    mmpretrain's weights, frozen as :class:`~.frozen_teacher.FrozenTeacher`
    (see :class:`~.base_teacher.BaseFrozenTeacher`) and interchangeable with
    it: :meth:`forward` returns a :class:`DistillOutput` read from the
    family's own forward (:mod:`.families` lists the families).

    Args:
        model (str | dict): A model-zoo name
            (``'vit-base-p14_dinov2-pre_3rdparty'``, see
            ``mmpretrain.list_models``), an mmpretrain config file
            (``'mmpretrain::dinov2/vit-base-p14_dinov2-pre_headless.py'`` or a
            path; its ``model.backbone`` is used) or a backbone config dict
            (``dict(type='mmpretrain.VisionTransformer', arch=...)``).
        checkpoint (str | bool, optional): Path or URL of the weights, read in
            :meth:`init_weights` (one download per node): mmpretrain's layout
            (``state_dict`` with ``backbone.*`` keys; other keys such as
            ``head.*`` are ignored and logged) or bare backbone keys. Every
            parameter of the backbone must be in the file, and no other
            ``backbone.*`` key. None: a zoo name's metafile weights; random
            weights (a warning says so) for a config. False: random weights
            without a download (tests, dry runs).
        img_size (int | tuple, optional): The input size the teacher sees
            (images are resized to it, bicubic, antialiased when shrinking).
            None: the backbone's ``img_size``. See :meth:`set_img_size`.
        mean (Sequence[float], optional): The teacher's own input mean
            (0-255 RGB). None: its config's ``data_preprocessor`` mean for a
            zoo name or config file, else the student's normalisation.
        std (Sequence[float], optional): The teacher's own input std (as
            ``mean``).
        autocast_dtype (str, optional): Autocast dtype on CUDA, ``'bfloat16'``,
            ``'float16'`` or None for fp32. Defaults to ``'bfloat16'``.
        compile (bool | dict): :func:`torch.compile` the encoding (a dict:
            its keyword arguments). Defaults to False.
        feature_layer (int): The block whose tokens are the feature target.
            -1 (default): the last block, after the family's final norm when
            it has one (``final_norm=True``); another index: that block's
            output tokens, before any norm.
        registers (bool): Keep register tokens (DINOv2 with registers) in
            ``tokens`` and ``relations``, right after [CLS] (``1 + R + N``
            tokens): for analysis, or a target that wants them; the owner
            must then align them itself. False (default): they are left out
            (``1 + N`` tokens, the relations of [CLS] and patches among
            themselves, renormalised without the registers), so the teacher
            lines up with a student that has none. ``cls_attn`` is always
            over the patches, as the family's attention computes it (its
            softmax includes the registers).
        fp32_residual (bool): Under autocast, keep the parameters that are
            added, not multiplied, fp32: ``pos_embed``, ``cls_token``,
            ``register_tokens`` (added to the residual stream) and BEiT's
            ``relative_position_bias_table`` (added to the logits), as they
            are in an fp32 model under autocast. Defaults to True.
    """

    def __init__(self,
                 model: Union[str, dict],
                 checkpoint: Union[str, bool, None] = None,
                 img_size: Union[int, Tuple[int, int], None] = None,
                 mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None,
                 autocast_dtype: Optional[str] = 'bfloat16',
                 compile: Union[bool, dict] = False,
                 feature_layer: int = -1,
                 registers: bool = False,
                 fp32_residual: bool = True) -> None:
        super().__init__()
        name = model if isinstance(model, str) else model.get(
            'type', '?') if isinstance(model, dict) else repr(model)
        self.owner = f'ZooTeacher({name})'
        source = resolve_model(model, self.owner)
        self.model = model
        # in mmpretrain's scope: the blocks build their layers (CLIP's
        # QuickGELU, say) through mmcv's builders, which look them up there
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            self.backbone = MODELS.build(source['backbone'])
        self.family = backbone_family(self.backbone, self.owner)
        if checkpoint is None:
            checkpoint = source['weights']
        if checkpoint is not False:
            raise_problems(self.owner, teacher_file_problems(checkpoint),
                           CheckpointError)
        self.checkpoint = checkpoint or None
        if mean is None and std is None:
            mean, std = source['mean'], source['std']
        L = self.backbone.num_layers
        if (not isinstance(feature_layer, int) or not -L <= feature_layer < L):
            raise ValueError(
                f'{self.owner}: feature_layer={feature_layer!r}: expected an '
                f'int in [{-L}, {L - 1}] ({L} blocks)')
        self.feature_layer = feature_layer % L
        self.registers = bool(registers)
        # the family's own output machinery gives the feature block's tokens
        # ([CLS] and all), after its final norm for the last block; the norm
        # of the pooled output (``ln2`` with 'avg_featmap') is then unused,
        # and files without it (EVA-02's pre-training weights) load
        self.unused_params = tuple(
            n for n, _ in self.backbone.named_parameters() if
            self.backbone.out_type == 'avg_featmap' and n.startswith('ln2.'))
        self.backbone.out_type = 'raw'
        self.backbone.out_indices = [self.feature_layer]
        self._img_size = tuple(self.backbone.img_size)
        self.set_img_size(self._img_size if img_size is None else img_size)
        self.residual_params = tuple(
            n for n, _ in self.backbone.named_parameters()
            if n in ('pos_embed', 'cls_token', 'register_tokens')
            or n.endswith('relative_position_bias_table'))
        self._state: Dict[str, Any] = self._empty_state()
        for i, layer in enumerate(self.backbone.layers):
            if isinstance(getattr(layer.attn, 'qkv', None), nn.Module):
                layer.attn.qkv.register_forward_hook(_QkvTap(self._state, i))
            layer.attn.register_forward_hook(
                _AttentionTap(self._state, i), with_kwargs=True)
            layer.register_forward_hook(_BlockTap(self._state, i))
        self._init_frozen(mean, std, autocast_dtype, compile, fp32_residual)

    @staticmethod
    def _empty_state() -> Dict[str, Any]:
        return dict(
            read=(), keep=None, stop=None, qkv={}, qkvb={}, block_out=None)

    # ---- what the owner asks about -----------------------------------------
    @property
    def embed_dims(self) -> int:
        return self.backbone.embed_dims

    @property
    def num_heads(self) -> int:
        return self.backbone.layers[0].attn.num_heads

    @property
    def num_layers(self) -> int:
        return self.backbone.num_layers

    @property
    def patch_size(self) -> Union[int, Tuple[int, int]]:
        """The patch size (an int when square)."""
        ph, pw = to_2tuple(self.backbone.patch_embed.projection.kernel_size)
        return ph if ph == pw else (ph, pw)

    @property
    def img_size(self) -> Tuple[int, int]:
        """The ``(height, width)`` the teacher resizes its input to."""
        return self._img_size

    @property
    def grid(self) -> Tuple[int, int]:
        """The teacher's patch grid ``(rows, cols)`` at :attr:`img_size`."""
        ph, pw = to_2tuple(self.patch_size)
        return self._img_size[0] // ph, self._img_size[1] // pw

    @property
    def has_cls(self) -> bool:
        return getattr(self.backbone, 'cls_token', None) is not None

    @property
    def num_register_tokens(self) -> int:
        return int(getattr(self.backbone, 'num_register_tokens', 0))

    def set_img_size(self, size: Union[int, Tuple[int, int]]) -> None:
        """Change the input size the teacher resizes its images to (e.g. a.

        /14 teacher at 196 px against a /16 student at 224 px: both 14x14).

        Args:
            size (int | tuple[int, int]): ``(height, width)`` in pixels, each
                a multiple of :attr:`patch_size`.

        Raises:
            ValueError: One line naming the size, when it does not tile into
                patches, or when the family's grid is fixed (BEiT's relative
                position bias) and the size gives another grid.
        """
        size = tuple(int(s) for s in to_2tuple(size))
        ph, pw = to_2tuple(self.patch_size)
        if len(size) != 2 or min(size) <= 0 or size[0] % ph or size[1] % pw:
            raise ValueError(
                f'{self.owner}: img_size={size}: expected a positive multiple '
                f'of the patch size {(ph, pw)} on each side')
        fixed = fixed_grid(self.backbone)
        grid = (size[0] // ph, size[1] // pw)
        if fixed is not None and grid != tuple(fixed):
            raise ValueError(
                f'{self.owner}: img_size={size} gives a {grid[0]}x{grid[1]} '
                f'grid; the relative position bias of {self.family.name} is '
                f'sized for {fixed[0]}x{fixed[1]} '
                f'({fixed[0] * ph}x{fixed[1] * pw} px)')
        self._img_size = size

    # ---- weights -----------------------------------------------------------
    def init_weights(self) -> None:
        logger = MMLogger.get_current_instance()
        if self.checkpoint is None:
            logger.warning(f'{self.owner} has no checkpoint: its weights are '
                           'random (acceptable in tests only)')
        else:
            self.load_weights(self.checkpoint, logger)
        self.freeze()

    def load_weights(self,
                     filename: str,
                     logger: Optional[MMLogger] = None) -> None:
        """Load the backbone from an mmpretrain checkpoint, strictly.

        Args:
            filename (str): Path or URL (downloaded once per node).
            logger (MMLogger, optional): Where ignored keys are reported.

        Raises:
            CheckpointError: One line naming the file and the missing /
                unexpected keys or the key whose shape differs.
        """
        raw = read_teacher_checkpoint(filename)
        if any(k.startswith('backbone.') for k in raw):
            sd = {
                k[len('backbone.'):]: v
                for k, v in raw.items() if k.startswith('backbone.')
            }
            ignored = sorted(k for k in raw if not k.startswith('backbone.'))
        else:
            sd, ignored = dict(raw), []
        own = self.backbone.state_dict()
        # every parameter the teacher uses must be in the file (buffers, e.g.
        # RoPE's frequencies, are computed by the family)
        params = {n
                  for n, _ in self.backbone.named_parameters()} - set(
                      self.unused_params)
        missing = sorted(k for k in own if k not in sd and k in params)
        # the token of masked inputs (DINOv2, BEiT): a teacher never masks
        for k in MASK_TOKENS:
            if k in sd and k not in own:
                ignored.append(f'backbone.{k}' if f'backbone.{k}' in
                               raw else k)
                del sd[k]
        unexpected = sorted(k for k in sd if k not in own)
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f'missing keys {show_keys(missing, 12)}')
            if unexpected:
                parts.append(f'unexpected keys {show_keys(unexpected, 12)}')
            raise CheckpointError(f'{filename}: does not fit {self.owner} '
                                  f'({type(self.backbone).__name__}): ' +
                                  '; '.join(parts))
        for k, v in sd.items():
            if k == 'pos_embed' or k.endswith('relative_position_bias_table'):
                continue  # resized by the backbone's own load hooks
            if own[k].shape != v.shape:
                raise CheckpointError(
                    f'{filename}: {k} has shape {tuple(v.shape)}, '
                    f'{self.owner} expects {tuple(own[k].shape)}')
        result = self.backbone.load_state_dict(sd, strict=False)
        left = [k for k in result.missing_keys if k in params]
        if left or result.unexpected_keys:
            raise CheckpointError(
                f'{filename}: {self.owner} did not load '
                f'{show_keys(left + list(result.unexpected_keys), 12)}')
        if logger is not None:
            note = (f'; ignored {len(ignored)} tensors that are not the '
                    f'backbone: {show_keys(ignored, 12)}') if ignored else ''
            logger.info(f'{self.owner}: loaded {len(sd)} tensors from '
                        f'{filename}{note}')

    # ---- encoding ----------------------------------------------------------
    def _drop_registers(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """``t`` without the register tokens along ``dim`` (unless kept)."""
        R = self.num_register_tokens
        if not R or self.registers:
            return t
        n = int(self.has_cls)
        return torch.cat(
            (t.narrow(dim, 0, n), t.narrow(dim, n + R, t.shape[dim] - n - R)),
            dim)

    def _encode(self, x: torch.Tensor, out_layers: Tuple[int, ...],
                parts: Tuple[str, ...], cls_attn: bool, final_tokens: bool,
                use_amp: bool) -> DistillOutput:
        L = self.num_layers
        bad = [i for i in out_layers if not 0 <= i < L]
        if bad:
            raise IndexError(f'{self.owner} has {L} blocks; asked for '
                             f'block(s) {sorted(bad)}')
        if cls_attn and not self.has_cls:
            raise ValueError(f'{self.owner}: cls_attn asked, but '
                             f'{self.family.name} has no [CLS] token')
        last = L - 1
        read = set(out_layers) | ({last} if cls_attn else set())
        feat = self.feature_layer if final_tokens else None
        depth = max(
            read | ({feat} if feat is not None else set()), default=-1) + 1
        state = self._state
        state.update(
            read=read,
            keep=feat if feat is not None and feat != last else None,
            stop=depth - 1 if depth < L else None,
            qkv={},
            qkvb={},
            block_out=None)
        x = self._normalise(x)
        x = resize_for_teacher(x, self._img_size)
        dtype = getattr(torch, self.autocast_dtype or 'float32')
        try:
            with torch.autocast('cuda', dtype=dtype, enabled=use_amp):
                outs = None
                if depth > 0:
                    try:
                        outs = self.backbone(x, **self.family.forward_kwargs)
                    except _StopEncoding:
                        pass
            qkvb, block_out = state['qkvb'], state['block_out']
        finally:
            state.update(self._empty_state())
        return self._collect(outs, qkvb, block_out, out_layers, parts,
                             cls_attn, feat)

    def _collect(self, outs, qkvb: dict, block_out: Optional[torch.Tensor],
                 out_layers: Tuple[int, ...], parts: Tuple[str, ...],
                 cls_attn: bool, feat: Optional[int]) -> DistillOutput:
        tokens = None
        if feat is not None:
            tokens = outs[0] if feat == self.num_layers - 1 else block_out
        if tokens is not None:
            tokens = self._drop_registers(tokens, 1)
        relations = {}
        for i in sorted(set(out_layers)):
            q, k, v, bias = qkvb[i]
            got = dict(q=q, k=k, v=v)
            rel = {p: self._drop_registers(got[p], 1) for p in parts}
            if bias is not None:
                rel['bias'] = self._drop_registers(
                    self._drop_registers(bias, 2), 3)
            relations[i] = rel
        importance = None
        if cls_attn:
            q, k, _, bias = qkvb[self.num_layers - 1]
            logits = relation_logits(q[:, :1].float(), k.float(),
                                     self.num_heads)
            if bias is not None:
                logits = logits + bias[:, :, :1].float()
            first = 1 + self.num_register_tokens  # registers never ranked
            importance = logits.softmax(-1)[..., 0, first:].mean(1)
        return DistillOutput(tokens, relations, importance)
