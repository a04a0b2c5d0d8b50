"""Hybrid Distillation (Shi et al., ICLR 2024): one training step.

    images --> Tc (frozen) --> last tokens F_c, [CLS]->patch attention a
           \\-> Tm (frozen) --> q/k(/v) at the distilled teacher blocks j
    a --> kept patch tokens K (ratio set by ProgressiveMaskingHook)
    images, K --> student (on K only) --> last tokens F_s, q/k(/v) at blocks i
    loss_feat = D_feat(neck(F_s), whiten(F_c[K]))
    loss_rel  = mean over pairs (i, j) of D_rel(rel(S_i), rel(T_j[K, K]))

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
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmpretrain.models.selfsup import BaseSelfSupervisor
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from ...utils.problems import raise_problems
from ..backbones.hybrid_vit import HybridViT
from ..teachers.frozen_teacher import FrozenTeacher
from ..utils.config_checks import (ViTGeometry, default_relation_pairs,
                                   hybrid_distill_problems, vit_default)
from ..utils.token_masking import (gather_tokens, mask_ratio_problems,
                                   num_kept_tokens, select_kept_tokens,
                                   with_cls_index)


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


@MODELS.register_module()
class HybridDistill(BaseSelfSupervisor):
    """Hybrid Distillation: a student ViT from feature and relation teachers.

    Args:
        backbone (dict): Student config, a :class:`HybridViT`.
        neck (dict): Projection head config (student width -> ``teacher_feat``
            width), e.g. :class:`DistillProjectionNeck`.
        teacher_feat (dict): Contrastive/supervised teacher Tc, a
            :class:`FrozenTeacher` config.
        teacher_rel (dict): MIM teacher Tm, a :class:`FrozenTeacher` config.
        loss_feat (dict): Feature loss config. Defaults to
            ``FeatureDistillLoss`` (whitened targets, Smooth-L1 beta 2, weight
            1).
        loss_rel (dict): Relation loss config. Defaults to
            ``RelationDistillLoss`` (KL(Tm || S), weight 1).
        relation_pairs (Sequence[tuple[int, int]], optional): ``(student
            block, teacher block)`` pairs, 0-based. Defaults to every student
            block but the last, paired by relative depth (ViT-B: 0..10 with
            0..10).
        importance_source (str): Whose last-block [CLS] attention ranks tokens:
            ``'feat'`` (Tc, default) or ``'rel'`` (Tm).
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
                 neck: dict,
                 teacher_feat: dict,
                 teacher_rel: dict,
                 loss_feat: dict = dict(type='FeatureDistillLoss'),
                 loss_rel: dict = dict(type='RelationDistillLoss'),
                 relation_pairs: Optional[Sequence[Sequence[int]]] = None,
                 importance_source: str = 'feat',
                 token_selection: str = 'sample',
                 mask_ratio: float = 0.0,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(
            backbone=backbone,
            neck=neck,
            data_preprocessor=data_preprocessor,
            init_cfg=init_cfg)
        if not isinstance(self.backbone, HybridViT):
            raise TypeError('HybridDistill.backbone must be a HybridViT, got '
                            f'{type(self.backbone).__name__}')
        # Teachers live outside the module tree on purpose: no state_dict
        # entries, no optimizer params, no DDP buckets, untouched by
        # model.train().
        teachers = {}
        for name, cfg in (('teacher_feat', teacher_feat), ('teacher_rel',
                                                           teacher_rel)):
            t = MODELS.build(cfg)
            if not isinstance(t, FrozenTeacher):
                raise TypeError(
                    f'HybridDistill.{name} must build a FrozenTeacher,'
                    f' got {type(t).__name__}')
            teachers[name] = t
        object.__setattr__(self, '_teachers', teachers)
        self.loss_feat = MODELS.build(loss_feat)
        self.loss_rel = MODELS.build(loss_rel)

        raise_problems(
            'HybridDistill',
            hybrid_distill_problems(
                _geometry(self.backbone, backbone),
                _geometry(self.teacher_feat.backbone,
                          teacher_feat.get('backbone')),
                _geometry(self.teacher_rel.backbone,
                          teacher_rel.get('backbone')),
                neck_in=getattr(self.neck, 'in_channels', None),
                neck_out=getattr(self.neck, 'out_channels', None),
                relation_pairs=relation_pairs,
                importance_source=importance_source,
                token_selection=token_selection,
                mask_ratio=mask_ratio,
                loss_feat=loss_feat,
                loss_rel=loss_rel))
        self.importance_source = importance_source
        self.token_selection = token_selection
        self.mask_ratio = mask_ratio
        if relation_pairs is None:
            relation_pairs = default_relation_pairs(
                self.backbone.num_layers, self.teacher_rel.num_layers)
        self.relation_pairs = [(int(s), int(t)) for s, t in relation_pairs]
        dp = self.data_preprocessor
        for t in teachers.values():
            t.set_input_norm(
                getattr(dp, 'mean', None), getattr(dp, 'std', None))

    # ------------------------------------------------------------------ set-up
    @property
    def teacher_feat(self) -> FrozenTeacher:
        return self._teachers['teacher_feat']

    @property
    def teacher_rel(self) -> FrozenTeacher:
        return self._teachers['teacher_rel']

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
        return (f'teacher_feat={type(self.teacher_feat.backbone).__name__}'
                f'(dims={self.teacher_feat.embed_dims}), '
                f'teacher_rel={type(self.teacher_rel.backbone).__name__}'
                f'(dims={self.teacher_rel.embed_dims}), '
                f'relation_pairs={self.relation_pairs}')

    # ------------------------------------------------------------------- step
    def extract_feat(self, inputs):
        if isinstance(inputs, (list, tuple)):
            inputs = inputs[0]
        return self.backbone(inputs)

    def teacher_requests(self) -> Dict[str, dict]:
        """What each teacher is asked for at every step: keyword arguments of
        :meth:`FrozenTeacher.forward`, by teacher name.

        The importance teacher returns its [CLS] attention whether or not
        tokens are dropped this step (one small product: a compiled teacher
        then needs one graph for every mask ratio). Each teacher runs only the
        blocks its outputs need: Tc all of them and its final norm (its last
        tokens are the feature target); Tm stops after the deepest paired
        block, without its final norm (blocks 0..10 of 12 for the default
        ViT-B pairs), unless it ranks the tokens (``importance_source='rel'``),
        which needs its last block.
        """
        use_feat = self.importance_source == 'feat'
        return dict(
            teacher_feat=dict(cls_attn=use_feat),
            teacher_rel=dict(
                out_layers=tuple(t for _, t in self.relation_pairs),
                parts=tuple(self.loss_rel.parts),
                cls_attn=not use_feat,
                final_tokens=False))

    def teacher_forward(self, x: torch.Tensor):
        """Run both teachers once on the full image, each asked for what
        :meth:`teacher_requests` says.

        Returns:
            tuple: Tc's and Tm's :class:`DistillOutput` and the importance
            teacher's ``(B, N)`` [CLS] attention.
        """
        asked = self.teacher_requests()
        tc = self.teacher_feat(x, **asked['teacher_feat'])
        tm = self.teacher_rel(x, **asked['teacher_rel'])
        importance = (tc if self.importance_source == 'feat' else tm).cls_attn
        return tc, tm, importance

    @torch.compiler.disable
    def teacher_targets(
        self, x: torch.Tensor
    ) -> Tuple[torch.Tensor, List[Dict[str, torch.Tensor]],
               Optional[torch.Tensor], torch.Tensor]:
        """What the student's losses need from the teachers, at kept tokens.

        Both teachers run once on the full image; the feature teacher's [CLS]
        attention of that same pass picks the kept tokens; the targets are
        gathered there and the full teacher outputs dropped (the q/k slices
        hold views of whole qkv buffers, which would otherwise stay alive
        through the student's forward and backward).

        Never traced by an enclosing ``torch.compile`` (mmengine's
        ``compile=True``): the mask ratio is a Python float that changes every
        iteration, and a traced float is a guard, i.e. a recompilation per
        iteration. The traced step sees tensors only; the kept-token count is
        the shape of ``keep_idx``, which becomes a dynamic dimension.

        Returns:
            tuple: ``target_feat`` ``(B, 1 + K, C)``, the relation targets
            (per pair, ``{'q': (B, 1 + K, C), 'k': ...}``), ``keep_idx``
            ``(B, K)`` or None (every token kept), and the mask ratio as a
            0-dim tensor for the logs.
        """
        num_patches = self.backbone.num_patches
        num_keep = num_kept_tokens(num_patches, self.mask_ratio)
        masked = num_keep < num_patches

        tc, tm, importance = self.teacher_forward(x)
        keep_idx = index = None
        if masked:
            keep_idx = select_kept_tokens(importance, num_keep,
                                          self.token_selection)
            index = with_cls_index(keep_idx)

        def kept(t: torch.Tensor) -> torch.Tensor:
            return t if index is None else gather_tokens(t, index)

        # The feature loss may save its target for backward, which an
        # inference tensor (unmasked path) may not be; relation targets only
        # feed no-grad teacher-side maps.
        target_feat = _trainable(kept(tc.tokens))
        t_rel = [{
            p: kept(v)
            for p, v in tm.relations[t].items()
        } for _, t in self.relation_pairs]
        # filled on the device: torch.tensor(..., device=cuda) would be a
        # blocking host-to-device copy in the middle of every step
        mask_ratio = torch.full((), self.mask_ratio, device=x.device)
        return target_feat, t_rel, keep_idx, mask_ratio

    def loss(self,
             inputs,
             data_samples: Optional[List[DataSample]] = None,
             **kwargs) -> Dict[str, torch.Tensor]:
        """Compute ``loss_feat`` and ``loss_rel`` (and log ``mask_ratio``).

        Args:
            inputs (Tensor | list[Tensor]): ``(B, 3, H, W)`` normalised images
                (the first view when a list).
            data_samples (list[DataSample], optional): Unused.
        """
        x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        target_feat, t_rel, keep_idx, mask_ratio = self.teacher_targets(x)

        s_layers = [s for s, _ in self.relation_pairs]
        student = self.backbone.forward_distill(
            x, keep_idx, out_layers=s_layers, parts=self.loss_rel.parts)

        pred = self.neck(student.tokens)
        loss_feat = self.loss_feat(pred, target_feat)
        s_rel = [student.relations[s] for s, _ in self.relation_pairs]
        loss_rel = self.loss_rel(s_rel, t_rel, self.teacher_rel.num_heads)
        return dict(
            loss_feat=loss_feat, loss_rel=loss_rel, mask_ratio=mask_ratio)
