from typing import Sequence, Tuple

import torch
import torch.nn as nn
from mmpretrain.registry import MODELS

from ...utils.problems import choice_problems, raise_problems
from ..utils.lazy_compile import LazyCompileMixin
from .relation_functional import (kl_relation, mse_relation, relation_logits,
                                  smooth_l1_relation)


@MODELS.register_module()
class RelationDistillLoss(LazyCompileMixin, nn.Module):
    """Token-relation distillation from the MIM teacher.

    For every distilled (student block, teacher block) pair, the relation is
    the per-head attention distribution ``softmax(q k^T / sqrt(d))``; the
    student's q/k are split into the *teacher's* head count, so students of
    another width or head count need no extra parameters. Optionally V-V
    relations ``softmax(v v^T / sqrt(d))`` are distilled as well.

    ``loss = loss_weight * mean over pairs of [D(S_qk, T_qk) (+ D(S_vv,
    T_vv))]``, the V-V term only with ``use_vv``.

    Args:
        loss_type (str): ``'kl'`` (KL(T || S) summed over keys, mean over
            heads and queries), ``'smooth_l1'`` or ``'mse'`` on the probability
            maps. Defaults to ``'kl'``.
        use_vv (bool): Also distil V-V relations. Defaults to False.
        beta (float): Smooth-L1 beta for ``'smooth_l1'``. Defaults to 1.0.
        loss_weight (float): beta of docs/method.md#relation-loss. Defaults
            to 1.0.
        compile (bool): On CUDA, fuse the distance's element-wise passes
            over the ``(B, H, L, L)`` maps with :func:`torch.compile` (dynamic
            shapes, as the kept-token count changes). CPU inputs always run
            eagerly. Defaults to False.
    """
    LOSS_TYPES = ('kl', 'smooth_l1', 'mse')

    def __init__(self,
                 loss_type: str = 'kl',
                 use_vv: bool = False,
                 beta: float = 1.0,
                 loss_weight: float = 1.0,
                 compile: bool = False) -> None:
        super().__init__()
        raise_problems(
            'RelationDistillLoss',
            choice_problems('loss_type', loss_type, self.LOSS_TYPES))
        self.loss_type = loss_type
        self.use_vv = use_vv
        self.beta = beta
        self.loss_weight = loss_weight
        self.compile_cfg = compile  # not self.compile: nn.Module.compile

    @property
    def parts(self) -> Tuple[str, ...]:
        """The projections each pair needs from student and teacher."""
        return ('q', 'k', 'v') if self.use_vv else ('q', 'k')

    def distance(self, s_logits: torch.Tensor,
                 t_logits: torch.Tensor) -> torch.Tensor:
        if self.compile_cfg and s_logits.is_cuda:
            distance = self.compiled_method('_eager_distance', dynamic=True)
            return distance(s_logits, t_logits)
        return self._eager_distance(s_logits, t_logits)

    def _eager_distance(self, s_logits: torch.Tensor,
                        t_logits: torch.Tensor) -> torch.Tensor:
        if self.loss_type == 'kl':
            return kl_relation(s_logits, t_logits)
        if self.loss_type == 'smooth_l1':
            return smooth_l1_relation(s_logits, t_logits, self.beta)
        return mse_relation(s_logits, t_logits)

    def forward(self, student: Sequence[dict], teacher: Sequence[dict],
                num_heads: int) -> torch.Tensor:
        """Args:
            student (list[dict]): Per pair,
                ``{'q': (B, L, Cs), 'k': ..., ['v']}``.
            teacher (list[dict]): Per pair,
                ``{'q': (B, L, Ct), 'k': ..., ['v'], ['bias']}`` at the same
                L tokens; ``'bias'`` (``(1 | B, H, L, L)``) is added to the
                teacher's Q-K logits, as the family's attention adds it
                (BEiT's relative position bias).
            num_heads (int): The teacher's head count.
        """
        if len(student) != len(teacher) or not student:
            raise ValueError(
                f'RelationDistillLoss: got {len(student)} student and '
                f'{len(teacher)} teacher relations')
        total = 0.
        for s, t in zip(student, teacher):
            t_logits = relation_logits(t['q'], t['k'], num_heads)
            if 'bias' in t:  # e.g. BEiT's relative position bias
                t_logits = t_logits + t['bias'].to(t_logits.dtype)
            loss = self.distance(
                relation_logits(s['q'], s['k'], num_heads), t_logits)
            if self.use_vv:
                loss = loss + self.distance(
                    relation_logits(s['v'], s['v'], num_heads),
                    relation_logits(t['v'], t['v'], num_heads))
            total = total + loss
        return self.loss_weight * total / len(student)
