"""Hybrid Distillation (Shi et al., ICLR 2024): one training step.

The paper's two teachers (``teacher_feat`` Tc, ``teacher_rel`` Tm):

    images --> Tc (frozen) --> last tokens F_c, [CLS]->patch attention a
           \\-> Tm (frozen) --> q/k(/v) at the distilled teacher blocks j
    a --> kept patch tokens K (ratio set by ProgressiveMaskingHook)
    images, K --> student (on K only) --> last tokens F_s, q/k(/v) at blocks i
    loss_feat = D_feat(neck(F_s), whiten(F_c[K]))
    loss_rel  = mean over pairs (i, j) of D_rel(rel(S_i), rel(T_j[K, K]))

Any number of teachers (``teachers=dict(name=dict(teacher=..., feature=...,
relation=...))``): each teacher runs once on the full image; each feature
target has its own neck and loss, each relation target its own pairs and
loss; one teacher's [CLS] attention picks the kept tokens K for all of them;
the student runs once on K. The two-teacher form is this with Tc teaching
features and Tm relations (same modules, keys and logged names as before).

Relations restricted to kept x kept are computed from q/k gathered at the kept
tokens, which equals renormalising the teacher's full map over kept keys.

Where to read further: ``docs/method.md`` gives the rules (targets, relation
loss and head re-split, masking, defaults and their reasons);
:func:`mmhybrid.testing.reference.plain_losses` is the same step written the
plain way (explicit softmax maps, full teacher maps restricted and
renormalised), which the tests check this implementation against. Every
constructor argument is checked once, by
:func:`~mmhybrid.models.utils.config_checks.hybrid_distill_problems`, the
function the preflight check of ``tools/train.py`` reports with.
"""
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmpretrain.models.selfsup import BaseSelfSupervisor
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from ...utils.problems import choice_problems, raise_problems
from ..backbones.hybrid_vit import HybridViT
from ..teachers.frozen_teacher import FrozenTeacher
from ..teachers.zoo_geometry import built_teacher_geometry
from ..utils.config_checks import (TeacherGeometry, ViTGeometry,
                                   default_relation_pairs,
                                   hybrid_distill_problems, importance_teacher,
                                   teachers_problems, vit_default)
from ..utils.token_grid import resample_importance, resample_patch_tokens
from ..utils.token_masking import (SELECTIONS, gather_tokens,
                                   mask_ratio_problems, num_kept_tokens,
                                   select_kept_tokens, with_cls_index)


def _trainable(t: torch.Tensor) -> torch.Tensor:
    """``t``, or a normal copy of it when it is an inference tensor (which
    autograd may not save for backward).

    Gathered tensors are normal already, so this copies only on the unmasked
    path.
    """
    return t.clone() if t.is_inference() else t


def _geometry(vit: HybridViT, cfg: dict) -> ViTGeometry:
    """A built ViT's geometry and its ``arch``/``img_size``, for messages."""
    cfg = cfg if hasattr(cfg, 'get') else {}
    return ViTGeometry(
        dims=vit.embed_dims,
        layers=vit.num_layers,
        heads=vit.num_heads,
        grid=tuple(vit.patch_resolution),
        arch=cfg.get('arch', vit_default('arch')),
        img_size=cfg.get('img_size', vit_default('img_size')))


def _teacher_geometry(teacher: nn.Module, cfg: Any,
                      key: str) -> TeacherGeometry:
    """A built teacher's geometry, for the checks.

    A :class:`FrozenTeacher` sees its backbone's ``img_size``; any other
    teacher (``ZooTeacher``) says its own and may be resized
    (``set_img_size``).
    """
    cfg = cfg if hasattr(cfg, 'get') else {}
    if isinstance(teacher, FrozenTeacher):
        vit = _geometry(teacher.backbone, cfg.get('backbone'))
        patch = teacher.backbone.patch_embed.projection.kernel_size
        return TeacherGeometry(vit, tuple(patch), True, False,
                               f'{key}.backbone.img_size')
    return built_teacher_geometry(teacher, cfg, key)


def _gather_bias(bias: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``(1 | B, H, L, L)`` logits bias at the kept tokens ``index`` ``(B, 1 +
    K)``, rows and columns: ``(B, H, 1 + K, 1 + K)``."""
    B, K1 = index.shape
    H, L = bias.shape[1], bias.shape[-1]
    bias = bias.expand(B, H, L, L)
    rows = index[:, None, :, None].expand(B, H, K1, L)
    bias = bias.gather(2, rows)
    cols = index[:, None, None, :].expand(B, H, K1, K1)
    return bias.gather(3, cols)


class FeatureTarget(NamedTuple):
    """One feature target: whose tokens, which of them, its loss's name."""
    teacher: str
    tokens: str
    loss: str


class RelationTarget(NamedTuple):
    """One relation target: whose q/k, which block pairs, its loss's name."""
    teacher: str
    pairs: List[Tuple[int, int]]
    loss: str


def target_norm_cfg(norm: Any, dims: int) -> Optional[dict]:
    """A feature entry's ``norm`` as a :class:`TargetNorm` config: None for the
    loss's own whitening (None or ``'whiten'``), a mode name as
    ``dict(type='TargetNorm', mode=...)``, a dict completed with ``dims``."""
    if norm is None or norm == 'whiten':
        return None
    cfg = dict(
        type='TargetNorm', mode=norm) if isinstance(norm, str) else dict(norm)
    cfg.setdefault('type', 'TargetNorm')
    cfg['dims'] = dims
    return cfg


def two_teacher_entries(teacher_feat: dict, teacher_rel: dict, neck: dict,
                        loss_feat: dict, loss_rel: dict,
                        relation_pairs: Optional[Sequence]) -> Dict[str, dict]:
    """The paper's two teachers as ``teachers=`` entries: Tc teaches features
    through ``neck``, Tm relations at ``relation_pairs``."""
    return dict(
        teacher_feat=dict(
            teacher=teacher_feat, feature=dict(neck=neck, loss=loss_feat)),
        teacher_rel=dict(
            teacher=teacher_rel,
            relation=dict(loss=loss_rel, relation_pairs=relation_pairs)))


@MODELS.register_module()
class HybridDistill(BaseSelfSupervisor):
    """Hybrid Distillation: a student ViT from feature and relation teachers.

    Two ways to name the teachers. The paper's (and the flagship configs'):
    ``teacher_feat`` + ``neck`` + ``loss_feat`` for the features,
    ``teacher_rel`` + ``loss_rel`` + ``relation_pairs`` for the relations;
    the student's head is ``neck``, the losses are logged as ``loss_feat``
    and ``loss_rel``. Or any number of them in ``teachers``::

        teachers=dict(
            dinov2=dict(
                teacher=dict(type='ZooTeacher',
                             model='vit-base-p14_dinov2-pre_3rdparty'),
                feature=dict(neck=dict(type='DistillProjectionNeck',
                                       in_channels=768, out_channels=768),
                             loss=dict(type='FeatureDistillLoss')),
                grid='resize'),
            mae=dict(
                teacher=dict(type='FrozenTeacher', ...),
                relation=dict(loss=dict(type='RelationDistillLoss'),
                              relation_pairs=None)))

    Each entry's ``feature`` target has its own neck (``necks.<name>``) and
    loss (logged as ``loss_feat_<name>``; ``tokens``: ``'all'`` (default),
    ``'cls'`` or ``'patches'``; ``norm``: None for the loss's own per-token
    whitening (FD's, default), ``'standardize'`` or ``'phi-s'`` for a
    normalisation measured over the first training batches,
    :class:`~mmhybrid.models.utils.target_norm.TargetNorm`, saved as
    ``target_norms.<name>``); its ``relation`` target its own pairs (None:
    :func:`default_relation_pairs`) and loss (``loss_rel_<name>``). ``grid``
    says what happens when the teacher's patch grid is not the student's:
    ``'resize'`` (default) resizes the teacher's input so that the grids
    match (a ``ZooTeacher``; a ``FrozenTeacher`` must be configured at the
    matching ``img_size``), ``'interpolate'`` resamples its patch tokens to
    the student's grid (features only: relations need the same grid).

    Args:
        backbone (dict): Student config, a :class:`HybridViT`.
        neck (dict, optional): Two-teacher form: the projection head (student
            width -> ``teacher_feat`` width), e.g.
            :class:`DistillProjectionNeck`.
        teacher_feat (dict, optional): Two-teacher form: the contrastive or
            supervised teacher Tc, a :class:`FrozenTeacher` (or ``ZooTeacher``)
            config.
        teacher_rel (dict, optional): Two-teacher form: the MIM teacher Tm.
        loss_feat (dict, optional): Two-teacher form: the feature loss.
            Defaults to ``FeatureDistillLoss`` (whitened targets, Smooth-L1
            beta 2, weight 1).
        loss_rel (dict, optional): Two-teacher form: the relation loss.
            Defaults to ``RelationDistillLoss`` (KL(Tm || S), weight 1).
        relation_pairs (Sequence[tuple[int, int]], optional): Two-teacher
            form: ``(student block, teacher block)`` pairs, 0-based. Defaults
            to every student block but the last, paired by relative depth
            (ViT-B: 0..10 with 0..10).
        teachers (dict, optional): Any number of teachers, as above; instead
            of the two-teacher keys.
        importance_source (str): Whose last-block [CLS] attention ranks
            tokens: ``'feat'`` (the first feature teacher, Tc; default),
            ``'rel'`` (the first relation teacher, Tm) or a teacher's name.
        token_selection (str): ``'sample'`` (without replacement, weighted by
            importance; default) or ``'topk'``.
        mask_ratio (float): Initial mask ratio; :class:`ProgressiveMaskingHook`
            updates it every iteration. Defaults to 0.
        data_preprocessor (dict, optional): Usually
            ``SelfSupDataPreprocessor``.
        init_cfg (dict, optional): Init config of the student parts.
    """

    def __init__(self,
                 backbone: dict,
                 neck: Optional[dict] = None,
                 teacher_feat: Optional[dict] = None,
                 teacher_rel: Optional[dict] = None,
                 loss_feat: Optional[dict] = None,
                 loss_rel: Optional[dict] = None,
                 relation_pairs: Optional[Sequence[Sequence[int]]] = None,
                 teachers: Optional[Dict[str, dict]] = None,
                 importance_source: str = 'feat',
                 token_selection: str = 'sample',
                 mask_ratio: float = 0.0,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        two = dict(
            neck=neck,
            teacher_feat=teacher_feat,
            teacher_rel=teacher_rel,
            loss_feat=loss_feat,
            loss_rel=loss_rel,
            relation_pairs=relation_pairs)
        self.two_teacher_form = teachers is None
        if not self.two_teacher_form:
            given = [k for k, v in two.items() if v is not None]
            if given:
                raise ValueError(
                    'HybridDistill: give either teachers=... or the '
                    'two-teacher keys (teacher_feat, teacher_rel, neck, '
                    f'loss_feat, loss_rel, relation_pairs), not both; got '
                    f'teachers and {", ".join(given)}')
        super().__init__(
            backbone=backbone,
            neck=neck if self.two_teacher_form else None,
            data_preprocessor=data_preprocessor,
            init_cfg=init_cfg)
        if not isinstance(self.backbone, HybridViT):
            raise TypeError('HybridDistill.backbone must be a HybridViT, got '
                            f'{type(self.backbone).__name__}')
        if self.two_teacher_form:
            loss_feat = loss_feat or dict(type='FeatureDistillLoss')
            loss_rel = loss_rel or dict(type='RelationDistillLoss')
            entries = two_teacher_entries(teacher_feat, teacher_rel, neck,
                                          loss_feat, loss_rel, relation_pairs)
        else:
            entries = teachers
            if not hasattr(entries, 'items') or not entries:
                raise ValueError(
                    'HybridDistill: teachers must be a non-empty dict: '
                    f'teacher name -> dict(teacher=..., ...), got {entries!r}')
        # Teachers live outside the module tree on purpose: no state_dict
        # entries, no optimizer params, no DDP buckets, untouched by
        # model.train().
        built, geometries = {}, {}
        for name, entry in entries.items():
            key = name if self.two_teacher_form else f'teachers.{name}.teacher'
            cfg = (entry or {}).get('teacher') if hasattr(entry,
                                                          'get') else None
            if not hasattr(cfg, 'get'):
                raise TypeError(f'HybridDistill.{key} must be a teacher '
                                f'config dict, got {cfg!r}')
            t = MODELS.build(cfg)
            if not hasattr(t, 'set_input_norm') or not hasattr(
                    t, 'embed_dims'):
                raise TypeError(
                    f'HybridDistill.{key} must build a FrozenTeacher or a '
                    f'ZooTeacher, got {type(t).__name__}')
            built[name] = t
            geometries[name] = _teacher_geometry(t, cfg, key)
        object.__setattr__(self, '_teachers', built)

        student = _geometry(self.backbone, backbone)
        if self.two_teacher_form:
            raise_problems(
                'HybridDistill',
                hybrid_distill_problems(
                    student,
                    geometries['teacher_feat'].vit,
                    geometries['teacher_rel'].vit,
                    neck_in=getattr(self.neck, 'in_channels', None),
                    neck_out=getattr(self.neck, 'out_channels', None),
                    relation_pairs=relation_pairs,
                    importance_source=importance_source,
                    token_selection=token_selection,
                    mask_ratio=mask_ratio,
                    loss_feat=loss_feat,
                    loss_rel=loss_rel))
        else:
            raise_problems(
                'HybridDistill',
                teachers_problems(student, entries, geometries,
                                  importance_source) +
                choice_problems('token_selection', token_selection,
                                SELECTIONS))
        self.importance_source = importance_source
        self.importance_teacher = importance_teacher(importance_source,
                                                     entries)
        self.token_selection = token_selection
        self.mask_ratio = mask_ratio
        self._build_targets(entries, geometries, student)
        dp = self.data_preprocessor
        for t in built.values():
            t.set_input_norm(
                getattr(dp, 'mean', None), getattr(dp, 'std', None))

    def _build_targets(self, entries: Dict[str, dict],
                       geometries: Dict[str, TeacherGeometry],
                       student: ViTGeometry) -> None:
        """Necks, losses and target lists; teacher grids fitted."""
        self.feature_targets: List[FeatureTarget] = []
        self.relation_targets: List[RelationTarget] = []
        #: teacher name -> its patch grid when it is resampled to the
        #: student's (``grid='interpolate'``)
        self.resampled: Dict[str, Tuple[int, int]] = {}
        #: teachers without [CLS]: their tokens are the patches only
        self.without_cls = {n for n, g in geometries.items() if not g.has_cls}
        if not self.two_teacher_form:
            self.necks = nn.ModuleDict()
            #: feature targets normalised over data (``feature.norm``)
            self.target_norms = nn.ModuleDict()
        for name, entry in entries.items():
            geo, t = geometries[name], self._teachers[name]
            if geo.vit.grid != student.grid:
                if entry.get('grid', 'resize') == 'interpolate':
                    self.resampled[name] = geo.vit.grid
                else:  # 'resize' (checked: the teacher can)
                    t.set_img_size((student.grid[0] * geo.patch[0],
                                    student.grid[1] * geo.patch[1]))
            feat, rel = entry.get('feature'), entry.get('relation')
            # the two-teacher form keeps its names: loss_feat, loss_rel
            suffix = '' if self.two_teacher_form else f'_{name}'
            if feat is not None:
                loss_name = f'loss_feat{suffix}'
                loss_cfg = dict(feat.get('loss') or {})
                loss_cfg.setdefault('type', 'FeatureDistillLoss')
                norm = target_norm_cfg(feat.get('norm'), t.embed_dims)
                if norm is not None:
                    # normalised here, once; not whitened again by the loss
                    loss_cfg.setdefault('whiten_target', False)
                    self.target_norms[name] = MODELS.build(norm)
                self.add_module(loss_name, MODELS.build(loss_cfg))
                if not self.two_teacher_form:
                    self.necks[name] = MODELS.build(feat['neck'])
                self.feature_targets.append(
                    FeatureTarget(name, feat.get('tokens', 'all'), loss_name))
            if rel is not None:
                loss_name = f'loss_rel{suffix}'
                self.add_module(
                    loss_name,
                    MODELS.build(
                        rel.get('loss') or dict(type='RelationDistillLoss')))
                pairs = rel.get('relation_pairs')
                if pairs is None:
                    pairs = default_relation_pairs(self.backbone.num_layers,
                                                   t.num_layers)
                self.relation_targets.append(
                    RelationTarget(name, [(int(s), int(b)) for s, b in pairs],
                                   loss_name))

    # ------------------------------------------------------------------ set-up
    @property
    def teachers(self) -> Dict[str, nn.Module]:
        """The frozen teachers by name (``teacher_feat``/``teacher_rel`` in the
        two-teacher form)."""
        return dict(self._teachers)

    @property
    def teacher_feat(self) -> nn.Module:
        """The first feature teacher (Tc)."""
        return self._teachers[self.feature_targets[0].teacher]

    @property
    def teacher_rel(self) -> nn.Module:
        """The first relation teacher (Tm)."""
        return self._teachers[self.relation_targets[0].teacher]

    @property
    def relation_pairs(self) -> List[Tuple[int, int]]:
        """The first relation target's pairs (the two-teacher form's)."""
        return self.relation_targets[0].pairs if self.relation_targets else []

    def feature_neck(self, teacher: str) -> nn.Module:
        """The student's head for ``teacher``'s feature target."""
        return self.neck if self.two_teacher_form else self.necks[teacher]

    @property
    def mask_ratio(self) -> float:
        return self._mask_ratio

    @mask_ratio.setter
    def mask_ratio(self, value: float) -> None:
        raise_problems(
            'HybridDistill',
            mask_ratio_problems(value, 'mask_ratio',
                                self.backbone.num_patches))
        self._mask_ratio = float(value)

    def init_weights(self) -> None:
        """Initialise the student parts, then load the teachers' own files."""
        super().init_weights()
        for t in self._teachers.values():
            t.init_weights()

    def _apply(self, fn, *args, **kwargs):
        # .to(), .cuda(), .float() ... must reach the teachers too
        super()._apply(fn, *args, **kwargs)
        for t in self._teachers.values():
            t._apply(fn, *args, **kwargs)
        return self

    def extra_repr(self) -> str:
        teachers = ', '.join(f'{n}={type(getattr(t, "backbone", t)).__name__}'
                             f'(dims={t.embed_dims})'
                             for n, t in self._teachers.items())
        pairs = {r.teacher: r.pairs for r in self.relation_targets}
        return f'{teachers}, relation_pairs={pairs}'

    # ------------------------------------------------------------------- step
    def extract_feat(self, inputs):
        if isinstance(inputs, (list, tuple)):
            inputs = inputs[0]
        return self.backbone(inputs)

    def teacher_requests(self) -> Dict[str, dict]:
        """What each teacher is asked for at every step: keyword arguments of
        the teacher's ``forward``, by teacher name.

        The importance teacher returns its [CLS] attention whether or not
        tokens are dropped this step (one small product: a compiled teacher
        then needs one graph for every mask ratio). Each teacher runs only the
        blocks its outputs need: a feature teacher all of them and its final
        norm (its last tokens are the target); a relation-only teacher stops
        after its deepest paired block, without its final norm (blocks 0..10 of
        12 for the default ViT-B pairs), unless it ranks the tokens, which
        needs its last block.
        """
        asked = {}
        for name in self._teachers:
            rels = [r for r in self.relation_targets if r.teacher == name]
            parts = []
            for r in rels:
                parts += [
                    p for p in getattr(self, r.loss).parts if p not in parts
                ]
            layers = sorted({b for r in rels for _, b in r.pairs})
            feats = [f for f in self.feature_targets if f.teacher == name]
            if feats and not rels:
                asked[name] = dict(cls_attn=name == self.importance_teacher)
                continue
            asked[name] = dict(
                out_layers=tuple(layers),
                parts=tuple(parts or ('q', 'k')),
                cls_attn=name == self.importance_teacher,
                final_tokens=bool(feats))
        return asked

    def teacher_forward(self, x: torch.Tensor):
        """Run every teacher once on the full image, each asked for what
        :meth:`teacher_requests` says.

        Returns:
            tuple: The teachers' :class:`DistillOutput` by name and the
            importance teacher's ``(B, N)`` [CLS] attention on the student's
            grid.
        """
        asked = self.teacher_requests()
        outs = {
            name: t(x, **asked[name])
            for name, t in self._teachers.items()
        }
        importance = outs[self.importance_teacher].cls_attn
        src = self.resampled.get(self.importance_teacher)
        if src is not None:
            importance = resample_importance(
                importance, src, tuple(self.backbone.patch_resolution))
        return outs, importance

    @torch.compiler.disable
    def teacher_targets(
        self, x: torch.Tensor
    ) -> Tuple[List[torch.Tensor], List[List[Dict[str, torch.Tensor]]],
               Optional[torch.Tensor], torch.Tensor]:
        """What the student's losses need from the teachers, at kept tokens.

        Every teacher runs once on the full image; the importance teacher's
        [CLS] attention of that same pass picks the kept tokens; the targets
        are gathered there and the full teacher outputs dropped (the q/k
        slices hold views of whole qkv buffers, which would otherwise stay
        alive through the student's forward and backward).

        Never traced by an enclosing ``torch.compile`` (mmengine's
        ``compile=True``): the mask ratio is a Python float that changes every
        iteration, and a traced float is a guard, i.e. a recompilation per
        iteration. The traced step sees tensors only; the kept-token count is
        the shape of ``keep_idx``, which becomes a dynamic dimension.

        Returns:
            tuple: The feature targets (one per :attr:`feature_targets`,
            ``(B, 1 + K, C)``, or ``(B, 1, C)``/``(B, K, C)`` for
            ``tokens='cls'``/``'patches'``), the relation targets (one list
            per :attr:`relation_targets`, per pair ``{'q': (B, 1 + K, C),
            'k': ..., ['bias': (B, H, 1 + K, 1 + K)]}``), ``keep_idx`` ``(B,
            K)`` or None (every token kept), and the mask ratio as a 0-dim
            tensor for the logs.
        """
        num_patches = self.backbone.num_patches
        num_keep = num_kept_tokens(num_patches, self.mask_ratio)
        masked = num_keep < num_patches

        outs, importance = self.teacher_forward(x)
        keep_idx = index = None
        if masked:
            keep_idx = select_kept_tokens(importance, num_keep,
                                          self.token_selection)
            index = with_cls_index(keep_idx)

        def kept(t: torch.Tensor) -> torch.Tensor:
            return t if index is None else gather_tokens(t, index)

        grid = tuple(self.backbone.patch_resolution)
        t_feat = []
        for f in self.feature_targets:
            tokens = outs[f.teacher].tokens
            if f.teacher in self.resampled:
                tokens = resample_patch_tokens(tokens,
                                               self.resampled[f.teacher], grid)
            if not self.two_teacher_form and f.teacher in self.target_norms:
                norm = self.target_norms[f.teacher]
                if self.training:
                    norm.update(tokens)
                tokens = norm(tokens)
            if f.teacher in self.without_cls:  # patch tokens only
                target = tokens if keep_idx is None else gather_tokens(
                    tokens, keep_idx)
            elif f.tokens == 'cls':
                target = tokens[:, :1]
            else:
                target = kept(tokens)
                if f.tokens == 'patches':
                    target = target[:, 1:]
            # The feature loss may save its target for backward, which an
            # inference tensor (unmasked path) may not be
            t_feat.append(_trainable(target))
        t_rel = []
        for r in self.relation_targets:
            relations = outs[r.teacher].relations
            per_pair = []
            for _, b in r.pairs:
                kept_rel = {}
                for p, v in relations[b].items():
                    if p == 'bias':
                        kept_rel[p] = v if index is None else _gather_bias(
                            v, index)
                    else:
                        kept_rel[p] = kept(v)
                per_pair.append(kept_rel)
            t_rel.append(per_pair)
        # filled on the device: torch.tensor(..., device=cuda) would be a
        # blocking host-to-device copy in the middle of every step
        mask_ratio = torch.full((), self.mask_ratio, device=x.device)
        return t_feat, t_rel, keep_idx, mask_ratio

    def loss(self,
             inputs,
             data_samples: Optional[List[DataSample]] = None,
             **kwargs) -> Dict[str, torch.Tensor]:
        """Compute each target's loss (and log ``mask_ratio``).

        Two-teacher form: ``loss_feat`` and ``loss_rel``; ``teachers`` form:
        ``loss_feat_<name>`` and ``loss_rel_<name>`` per teacher target.

        Args:
            inputs (Tensor | list[Tensor]): ``(B, 3, H, W)`` normalised images
                (the first view when a list).
            data_samples (list[DataSample], optional): Unused.
        """
        x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        t_feat, t_rel, keep_idx, mask_ratio = self.teacher_targets(x)

        s_layers, parts = [], []
        for r in self.relation_targets:
            s_layers += [s for s, _ in r.pairs if s not in s_layers]
            parts += [p for p in getattr(self, r.loss).parts if p not in parts]
        student = self.backbone.forward_distill(
            x, keep_idx, out_layers=s_layers, parts=tuple(parts or ('q', 'k')))

        losses = {}
        for f, target in zip(self.feature_targets, t_feat):
            tokens = student.tokens
            if f.tokens == 'cls':
                tokens = tokens[:, :1]
            elif f.tokens == 'patches':
                tokens = tokens[:, 1:]
            pred = self.feature_neck(f.teacher)(tokens)
            losses[f.loss] = getattr(self, f.loss)(pred, target)
        for r, target in zip(self.relation_targets, t_rel):
            s_rel = [student.relations[s] for s, _ in r.pairs]
            heads = self._teachers[r.teacher].num_heads
            losses[r.loss] = getattr(self, r.loss)(s_rel, target, heads)
        losses['mask_ratio'] = mask_ratio
        return losses
