from .target_norm import TargetNorm, phi_s
from .token_masking import (gather_tokens, mask_ratio_at, num_kept_tokens,
                            renormalize_relation, select_kept_tokens,
                            with_cls_index)

__all__ = [
    'num_kept_tokens', 'mask_ratio_at', 'select_kept_tokens', 'with_cls_index',
    'gather_tokens', 'renormalize_relation', 'TargetNorm', 'phi_s'
]
