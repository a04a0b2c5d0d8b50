"""Per-layer attention diversity of the student (and its teachers) while it
trains, and a warning when the student's deep layers collapse."""
import copy
import logging
import os
import os.path as osp
import time
from numbers import Integral, Real
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmpretrain.registry import HOOKS

from ...models.losses.relation_functional import relation_logits
from ...models.utils.attention_metrics import (deep_layers, layer_scalars,
                                               vit_attention_stats)
from ...utils.problems import Problem, choice_problems, raise_problems
from ...utils.sizes import as_pair
from .monitor_inputs import (batch_images, eval_mode, input_norm,
                             module_device, normalize, rgb_images,
                             unwrap_model)

DATA_BATCH = Optional[dict]
#: where the fixed images come from
SOURCES = ('auto', 'val', 'train')
#: the per-layer numbers logged, ``attn_<metric>/<model>_layer<i>``
LAYER_METRICS = ('distance', 'spread', 'nmi')


class TeacherAttention:
    """A frozen teacher (``FrozenTeacher`` or ``ZooTeacher``) seen as a ViT
    with ``attention_maps``, for :func:`vit_attention_stats`.

    The maps come from the teacher's own ``forward`` on the student's
    inputs: its input normalisation and size, its family's q/k and logits
    bias (BEiT), register tokens left out; i.e. the relations it teaches.

    Args:
        teacher (nn.Module): The teacher.
    """

    def __init__(self, teacher) -> None:
        self.teacher = teacher
        self.num_layers = teacher.num_layers
        backbone = getattr(teacher, 'backbone', None)
        if hasattr(teacher, 'grid'):
            self.grid = tuple(teacher.grid)
            self.patch = as_pair(teacher.patch_size)
            self.width = float(as_pair(teacher.img_size)[1])
        else:  # FrozenTeacher: its HybridViT's own size
            self.grid = tuple(backbone.patch_resolution)
            self.patch = tuple(backbone.patch_embed.projection.kernel_size)
            self.width = float(backbone.img_size[1])

    def attention_maps(self, x: torch.Tensor,
                       layers: Sequence[int]) -> Dict[int, torch.Tensor]:
        """``(B, H, 1 + N, 1 + N)`` maps of ``layers``."""
        out = self.teacher(
            x, out_layers=tuple(layers), parts=('q', 'k'), final_tokens=False)
        maps = {}
        for i, rel in out.relations.items():
            logits = relation_logits(rel['q'].float(), rel['k'].float(),
                                     self.teacher.num_heads)
            if 'bias' in rel:
                logits = logits + rel['bias'].float()
            maps[i] = logits.softmax(-1)
        return maps


def _is_int(v: Any) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def attention_monitor_problems(interval: Any,
                               num_images: Any,
                               collapse_fraction: Any,
                               collapse_window: Any,
                               collapse_after: Any = 0.1,
                               deep_layers: Any = None,
                               source: Any = 'auto',
                               prefix: str = '') -> List[Problem]:
    """The one check of :class:`AttentionDiversityHook`'s options: its
    constructor raises on it, the preflight reports it with config keys.

    Args:
        interval, num_images, collapse_fraction, collapse_window,
            collapse_after, deep_layers, source: As the hook takes them.
        prefix (str): Put before each key (``'custom_hooks[2].'``).
    """
    problems = []
    for key, v in (('interval', interval), ('num_images', num_images),
                   ('collapse_window', collapse_window)):
        if not (_is_int(v) and v >= 1):
            problems.append(
                Problem(f'{prefix}{key}', v, 'expected an integer >= 1'))
    if not (_is_real(collapse_fraction) and 0.0 < collapse_fraction <= 1.0):
        problems.append(
            Problem(
                f'{prefix}collapse_fraction', collapse_fraction,
                "expected a fraction in (0, 1] of the relation teacher's "
                'deep-layer head spread and NMI'))
    if not (_is_real(collapse_after) and 0.0 <= collapse_after < 1.0):
        problems.append(
            Problem(f'{prefix}collapse_after', collapse_after,
                    'expected a fraction of training in [0, 1)'))
    if deep_layers is not None and not (isinstance(deep_layers, (list, tuple))
                                        and deep_layers and all(
                                            _is_int(i) for i in deep_layers)):
        problems.append(
            Problem(f'{prefix}deep_layers', deep_layers,
                    'expected a non-empty list of block indices or None'))
    problems += choice_problems(f'{prefix}source', source, SOURCES)
    return problems


def layer_keys(model: str, num_layers: int) -> Dict[str, List[str]]:
    """The scalar names of one model's per-layer numbers, by metric."""
    return {
        m: [f'attn_{m}/{model}_layer{i:02d}' for i in range(num_layers)]
        for m in LAYER_METRICS
    }


@HOOKS.register_module()
class AttentionDiversityHook(Hook):
    """Per-layer attention distance, head spread and NMI during training.

    Every ``interval`` iterations and at the end of every epoch, the student
    backbone (eval mode, no gradients) sees a fixed set of ``num_images``
    images; per block, its attention maps give each head's mean attention
    distance and query-key NMI (:mod:`mmhybrid.models.utils.
    attention_metrics`, the implementation that
    ``tools/analysis/attention_stats.py`` runs, averaged over the images the
    same way). Per layer it logs

    * ``attn_distance/student_layerII``: head mean of the distance (pixels),
    * ``attn_spread/student_layerII``: the spread (population std) of the
      heads' distances (pixels): attention diversity, 0 when every head looks
      equally far,
    * ``attn_nmi/student_layerII``: head mean of the NMI (low: every query
      attends alike, the collapse of contrastive ViTs),

    and, once at the start of each run, the same numbers of every teacher on
    the same images (through each teacher's own input normalisation, size
    and family: :class:`TeacherAttention`) as references,
    ``attn_*/<teacher>_layerII`` (``teacher_feat``/``teacher_rel`` in the
    two-teacher form). Then ``attn_collapse/spread_ratio`` and
    ``attn_collapse/nmi_ratio``: the student's deep-layer means over the
    (first) relation teacher's (spreads as fractions of each model's image
    width, so that a teacher at another resolution compares).

    Logging: each value goes to the message hub (readable by other hooks,
    saved with the checkpoint's message hub) and, at the check's iteration,
    through the visualizer to every backend (``scalars.json``, TensorBoard,
    W&B). Not through the LoggerHook's lines: mmengine's log processor would
    print every per-layer key (36 for ViT-B, more with the teachers) on every
    text log line and repeat stale values between checks. One INFO line per
    check sums the deep layers up.

    Collapse warning: when, for ``collapse_window`` checks in a row, the
    student's deep-layer head spread or NMI is below ``collapse_fraction`` of
    the relation teacher's, one WARNING line says so (again only after the
    streak has been broken). Checks during the first ``collapse_after`` of
    training do not count: a randomly initialised student starts far below
    an MIM teacher's diversity.

    The images: the first ``num_images`` of the val dataset
    (``val_dataloader.dataset``) when the config has one and ``source`` is
    ``'auto'`` or ``'val'``, else the first training batch's first
    ``num_images`` (``'train'``; a resumed run takes its own first batch).
    Rank 0 writes them as PNGs to ``<log_dir>/attention_monitor/images``, so
    ``tools/analysis/attention_stats.py CONFIG --checkpoint CKPT --data
    <that folder>`` reports the same numbers for a checkpoint of the run. Only
    rank 0 computes (the model has no collective in this forward).

    Args:
        interval (int): Check every ``interval`` iterations (and at each
            epoch's end). Defaults to 1000.
        num_images (int): Images of the fixed set. Defaults to 16.
        source (str): ``'auto'``, ``'val'`` or ``'train'``. Defaults to
            ``'auto'``.
        collapse_fraction (float): The warning's threshold, a fraction of the
            relation teacher's deep-layer spread and NMI. Defaults to 0.5.
        collapse_window (int): Consecutive checks below it before the
            warning. Defaults to 3.
        collapse_after (float): Fraction of training (of ``max_iters``)
            whose checks do not count. Defaults to 0.1.
        deep_layers (Sequence[int], optional): The student's deep blocks
            (negative: from the end). Default: the last third of each model's
            blocks (:func:`~mmhybrid.models.utils.attention_metrics.
            deep_layers`).
        batch_size (int): Images per forward pass. Defaults to 16.
        save_images (bool): Write the PNGs. Defaults to True.
    """
    priority = 'LOW'

    def __init__(self,
                 interval: int = 1000,
                 num_images: int = 16,
                 source: str = 'auto',
                 collapse_fraction: float = 0.5,
                 collapse_window: int = 3,
                 collapse_after: float = 0.1,
                 deep_layers: Optional[Sequence[int]] = None,
                 batch_size: int = 16,
                 save_images: bool = True) -> None:
        raise_problems(
            'AttentionDiversityHook',
            attention_monitor_problems(interval, num_images, collapse_fraction,
                                       collapse_window, collapse_after,
                                       deep_layers, source))
        self.interval = interval
        self.num_images = num_images
        self.source = source
        self.collapse_fraction = collapse_fraction
        self.collapse_window = collapse_window
        self.collapse_after = collapse_after
        self.deep_layers = None if deep_layers is None else list(deep_layers)
        self.batch_size = batch_size
        self.save_images = save_images
        self.images: Optional[torch.Tensor] = None  # (B, 3, H, W) RGB
        self.references: Dict[str, Dict[str, np.ndarray]] = {}
        self._reference: Optional[str] = None
        self.history: List[tuple] = []  # (step, student layer scalars)
        self._last_step = None
        self._streak: List[int] = []
        self._warned = False
        self._disabled = False
        self._from_val = False

    # ---------------------------------------------------------------- images
    def _val_images(self, runner) -> Optional[torch.Tensor]:
        loader = runner.cfg.get('val_dataloader') if hasattr(
            runner.cfg, 'get') else None
        if not loader or not loader.get('dataset'):
            return None
        from mmengine.dataset import default_collate
        from mmpretrain.registry import DATASETS
        dataset = DATASETS.build(copy.deepcopy(loader['dataset']))
        n = min(self.num_images, len(dataset))
        batch = default_collate([dataset[i] for i in range(n)])
        return batch['inputs']

    def _take_images(self, runner, inputs) -> None:
        """Fix the image set (RGB, CPU), write it out, log the references."""
        model = unwrap_model(runner.model)
        _, _, to_rgb = input_norm(model.data_preprocessor)
        self.images = rgb_images(inputs, to_rgb)[:self.num_images].clone()
        where = 'val set' if self._from_val else 'first training batch'
        folder = None
        if self.save_images and is_main_process():
            folder = self._write_images(runner)
        msg = (f'AttentionDiversityHook: {self.images.shape[0]} images of '
               f'the {where}, every {self.interval} iterations and at epoch '
               'ends')
        if folder:
            msg += (f'; written to {folder} (tools/analysis/attention_stats.'
                    f'py CONFIG --checkpoint CKPT --data {folder} reports the '
                    'same numbers)')
        print_log(msg, logger='current')
        if is_main_process():
            self._log_references(runner)

    def _write_images(self, runner) -> Optional[str]:
        if self.images.dtype != torch.uint8:
            print_log(
                'AttentionDiversityHook: the images are not uint8, not '
                'written',
                logger='current')
            return None
        from PIL import Image
        folder = osp.join(runner.log_dir, 'attention_monitor', 'images')
        os.makedirs(folder, exist_ok=True)
        for i, img in enumerate(self.images):
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(
                osp.join(folder, f'{i:03d}.png'))
        return folder

    # ----------------------------------------------------------------- stats
    @staticmethod
    def _geometry(backbone, images: torch.Tensor):
        ph, pw = backbone.patch_embed.projection.kernel_size
        h, w = images.shape[-2:]
        return (h // ph, w // pw), (ph, pw)

    def _stats(self, backbone, x: torch.Tensor) -> Dict[str, np.ndarray]:
        """Per layer and head statistics of ``backbone`` on inputs ``x``."""
        grid, patch = self._geometry(backbone, x)
        dtype = next(backbone.parameters()).dtype
        batches = (
            x[s:s + self.batch_size].to(dtype)
            for s in range(0, x.shape[0], self.batch_size))
        with eval_mode(backbone):
            if dtype == torch.float32:
                return vit_attention_stats(backbone, batches, grid, patch)
            with torch.autocast(x.device.type, dtype=dtype):
                return vit_attention_stats(backbone, batches, grid, patch)

    def _student_input(self, model) -> torch.Tensor:
        mean, std, _ = input_norm(model.data_preprocessor)
        return normalize(self.images, mean, std, module_device(model.backbone))

    def _teacher_stats(self, model, teacher) -> Dict[str, np.ndarray]:
        """A teacher's statistics on the images as it sees them in training
        (:class:`TeacherAttention`)."""
        view = TeacherAttention(teacher)
        x = self._student_input(model)
        batches = (
            x[s:s + self.batch_size]
            for s in range(0, x.shape[0], self.batch_size))
        return vit_attention_stats(view, batches, view.grid, view.patch)

    def _width(self, backbone) -> float:
        return float(backbone.img_size[1])

    @staticmethod
    def _relation_teacher(model) -> Optional[str]:
        """The name of the (first) relation teacher, the collapse reference."""
        targets = getattr(model, 'relation_targets', None)
        return targets[0].teacher if targets else None

    def _log_references(self, runner) -> None:
        model = unwrap_model(runner.model)
        scalars = {}
        for name, teacher in getattr(model, 'teachers', {}).items():
            per_layer = layer_scalars(self._teacher_stats(model, teacher))
            per_layer['width'] = TeacherAttention(teacher).width
            self.references[name] = per_layer
            keys = layer_keys(name, len(per_layer['distance']))
            for m in LAYER_METRICS:
                scalars.update(zip(keys[m], map(float, per_layer[m])))
        if scalars:
            self._publish(runner, scalars, runner.iter)
        self._reference = self._relation_teacher(model)
        if self._reference not in self.references:
            print_log(
                'AttentionDiversityHook: the model has no relation teacher: '
                'no collapse check',
                logger='current')

    # ---------------------------------------------------------------- checks
    def check(self, runner, step: int) -> Optional[Dict[str, np.ndarray]]:
        """Measure the student now and log it at ``step``; returns its per-
        layer scalars (None on ranks other than 0)."""
        if self._disabled or self.images is None or step == self._last_step:
            return None
        self._last_step = step
        if not is_main_process():
            return None
        model = unwrap_model(runner.model)
        backbone = model.backbone
        if not hasattr(backbone, 'attention_maps'):
            print_log(
                'AttentionDiversityHook: the backbone '
                f'{type(backbone).__name__} has no attention_maps() (a '
                'HybridViT has): disabled',
                logger='current',
                level=logging.WARNING)
            self._disabled = True
            return None
        t0 = time.time()
        per_layer = layer_scalars(
            self._stats(backbone, self._student_input(model)))
        keys = layer_keys('student', len(per_layer['distance']))
        scalars = {}
        for m in LAYER_METRICS:
            scalars.update(zip(keys[m], map(float, per_layer[m])))
        line, ratios = self._deep_summary(backbone, per_layer)
        scalars.update(ratios)
        self._publish(runner, scalars, step)
        self.history.append((step, per_layer))
        print_log(
            f'attention at iter {step}: {line} ({self.images.shape[0]} '
            f'images, {time.time() - t0:.2f}s)',
            logger='current')
        self._collapse_check(runner, step, ratios, line)
        return per_layer

    def _deep_summary(self, backbone, per_layer):
        """The INFO line's deep-layer summary and the ratios to the relation
        teacher."""
        s_deep = deep_layers(len(per_layer['distance']), self.deep_layers)
        s_spread = float(per_layer['spread'][s_deep].mean())
        s_nmi = float(per_layer['nmi'][s_deep].mean())
        line = (f'deep layers {s_deep[0]}-{s_deep[-1]}: head spread '
                f'{s_spread:.2f} px, NMI {s_nmi:.3f}')
        name = self._reference
        ref = self.references.get(name)
        if ref is None:
            return line, {}
        t_deep = deep_layers(len(ref['distance']))
        t_spread = float(ref['spread'][t_deep].mean())
        t_nmi = float(ref['nmi'][t_deep].mean())
        ratios = {}
        if t_spread > 0:
            ratios['attn_collapse/spread_ratio'] = (
                s_spread / self._width(backbone)) / (
                    t_spread / ref['width'])
        if t_nmi > 0:
            ratios['attn_collapse/nmi_ratio'] = s_nmi / t_nmi
        parts = [
            f"{ratios[k]:.2f}x {name}'s {what}"
            for k, what in (('attn_collapse/spread_ratio', 'spread'),
                            ('attn_collapse/nmi_ratio', 'NMI')) if k in ratios
        ]
        if parts:
            line += ' (' + ', '.join(parts) + ')'
        return line, ratios

    def _collapse_check(self, runner, step: int, ratios: dict,
                        line: str) -> None:
        if not ratios or step < self.collapse_after * runner.max_iters:
            return
        if min(ratios.values()) >= self.collapse_fraction:
            self._streak, self._warned = [], False
            return
        self._streak.append(step)
        if len(self._streak) >= self.collapse_window and not self._warned:
            self._warned = True
            iters = self._streak[-self.collapse_window:]
            low = ' and '.join(
                name for key, name in (('attn_collapse/spread_ratio',
                                        'head spread'),
                                       ('attn_collapse/nmi_ratio', 'NMI'))
                if ratios.get(key, 1.0) < self.collapse_fraction)
            print_log(
                f'attention is collapsing: the student\'s deep-layer {low} '
                f'stayed below {self.collapse_fraction} x the relation '
                f'teacher\'s for {self.collapse_window} checks in a row '
                f'(iters {iters[0]}..{iters[-1]}; now {line}); the relation '
                'loss is not keeping the heads diverse '
                '(AttentionDiversityHook collapse_fraction, collapse_window)',
                logger='current',
                level=logging.WARNING)

    @staticmethod
    def _publish(runner, scalars: Dict[str, float], step: int) -> None:
        for k, v in scalars.items():
            runner.message_hub.update_scalar(k, v)
        runner.visualizer.add_scalars(scalars, step=step)

    # ----------------------------------------------------------------- hooks
    def before_train(self, runner) -> None:
        self._from_val = False
        if self.source in ('auto', 'val'):
            inputs = self._val_images(runner)
            if inputs is None and self.source == 'val':
                raise ValueError(
                    "AttentionDiversityHook: source='val' but the config "
                    'has no val_dataloader.dataset')
            if inputs is not None:
                self._from_val = True
                self._take_images(runner, inputs)

    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch: DATA_BATCH = None) -> None:
        if self.images is None and data_batch is not None:
            self._take_images(runner, batch_images(data_batch['inputs']))

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: DATA_BATCH = None,
                         outputs=None) -> None:
        if self.every_n_train_iters(runner, self.interval):
            self.check(runner, runner.iter + 1)

    def after_train_epoch(self, runner) -> None:
        self.check(runner, runner.iter)
