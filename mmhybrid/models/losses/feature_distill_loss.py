import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.registry import MODELS

from ...utils.problems import choice_problems, raise_problems


def whiten(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Channel LayerNorm without affine parameters: ``(..., C) -> (..., C)``.

    Feature Distillation (Wei et al., 2022) whitens the teacher's features this
    way so that teachers of any scale give targets of unit variance per token.
    """
    return F.layer_norm(x.float(), x.shape[-1:], eps=eps)


def feature_distance(pred: torch.Tensor,
                     target: torch.Tensor,
                     loss_type: str = 'smooth_l1',
                     beta: float = 2.0) -> torch.Tensor:
    """Mean distance between predicted and target tokens.

    Args:
        pred (Tensor): ``(B, L, C)`` student tokens after the projection head.
        target (Tensor): ``(B, L, C)`` (whitened) teacher tokens.
        loss_type (str): ``'smooth_l1'`` (mean over all entries, with
            ``beta``), ``'mse'`` (mean over entries) or ``'cosine'`` (``1 -
            cos`` per token, mean over tokens). Defaults to ``'smooth_l1'``.
        beta (float): Smooth-L1 threshold. Defaults to 2.0.
    """
    pred = pred.float()
    target = target.float()
    if loss_type == 'smooth_l1':
        return F.smooth_l1_loss(pred, target, beta=beta)
    if loss_type == 'mse':
        return F.mse_loss(pred, target)
    if loss_type == 'cosine':
        return (1.0 - F.cosine_similarity(pred, target, dim=-1)).mean()
    raise ValueError(f'unknown feature loss {loss_type!r}; expected one of '
                     f'{FeatureDistillLoss.LOSS_TYPES}')


@MODELS.register_module()
class FeatureDistillLoss(nn.Module):
    """Feature distillation from the contrastive/supervised teacher.

    ``loss = loss_weight * D(pred, whiten(target))`` at the kept tokens.

    Args:
        loss_type (str): ``'smooth_l1'``, ``'mse'`` or ``'cosine'``.
            Defaults to ``'smooth_l1'``.
        beta (float): Smooth-L1 beta. Defaults to 2.0.
        whiten_target (bool): Whiten teacher tokens with a LayerNorm without
            affine parameters. Defaults to True.
        loss_weight (float): alpha of docs/method.md#targets. Defaults to
            1.0.
    """
    LOSS_TYPES = ('smooth_l1', 'mse', 'cosine')

    def __init__(self,
                 loss_type: str = 'smooth_l1',
                 beta: float = 2.0,
                 whiten_target: bool = True,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        raise_problems(
            'FeatureDistillLoss',
            choice_problems('loss_type', loss_type, self.LOSS_TYPES))
        self.loss_type = loss_type
        self.beta = beta
        self.whiten_target = whiten_target
        self.loss_weight = loss_weight

    def forward(self, pred: torch.Tensor,
                target: torch.Tensor) -> torch.Tensor:
        """Args: ``pred`` and ``target`` are ``(B, L, C)``."""
        if pred.shape != target.shape:
            raise ValueError(
                f'FeatureDistillLoss: prediction {tuple(pred.shape)} '
                f'and target {tuple(target.shape)} differ')
        if self.whiten_target:
            target = whiten(target)
        return self.loss_weight * feature_distance(pred, target,
                                                   self.loss_type, self.beta)
