from .attention_diversity_hook import AttentionDiversityHook
from .exact_resume_hook import ExactResumeHook
from .knn_monitor_hook import KNNMonitorHook
from .non_finite_loss_hook import NonFiniteLossError, NonFiniteLossHook
from .preemption_hook import (REQUEUE_EXIT_CODE, PreemptionHook,
                              TrainingPreempted)
from .progressive_masking_hook import ProgressiveMaskingHook
from .unreadable_image_hook import UnreadableImageHook

__all__ = [
    'AttentionDiversityHook', 'ExactResumeHook', 'KNNMonitorHook',
    'NonFiniteLossError', 'NonFiniteLossHook', 'PreemptionHook',
    'ProgressiveMaskingHook', 'REQUEUE_EXIT_CODE', 'TrainingPreempted',
    'UnreadableImageHook'
]
