"""Per-head attention statistics of a ViT (distance, entropy, NMI).

The functions live in :mod:`mmhybrid.models.utils.attention_metrics` (one
implementation, shared with the training-time ``AttentionDiversityHook`` of the
engine layer); this module re-exports them for the analysis tools.
"""
from ..models.utils.attention_metrics import *  # noqa: F401,F403
from ..models.utils.attention_metrics import __all__  # noqa: F401
