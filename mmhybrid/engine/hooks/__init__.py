from .exact_resume_hook import ExactResumeHook
from .non_finite_loss_hook import NonFiniteLossError, NonFiniteLossHook
from .progressive_masking_hook import ProgressiveMaskingHook

__all__ = [
    'ExactResumeHook', 'NonFiniteLossError', 'NonFiniteLossHook',
    'ProgressiveMaskingHook'
]
