from .feature_distill_loss import FeatureDistillLoss, feature_distance, whiten
from .relation_distill_loss import RelationDistillLoss
from .relation_functional import (kl_relation, mse_relation, relation_logits,
                                  smooth_l1_relation, split_heads)

__all__ = [
    'FeatureDistillLoss', 'RelationDistillLoss', 'feature_distance', 'whiten',
    'relation_logits', 'kl_relation', 'smooth_l1_relation', 'mse_relation',
    'split_heads'
]
