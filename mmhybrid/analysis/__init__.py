"""Analysis of ViT attention: the measurements behind the paper's figures.

* :mod:`.attention_metrics`: pure per-head statistics of attention maps
  (attention distance, entropy, query-key NMI).
* :mod:`.attention_report`: those statistics for a whole ViT over images, CSV
  and paper-style plots.
* :mod:`.vit_loading`: a ViT for analysis from a config or any supported
  checkpoint layout, and an image-folder reader.
* :mod:`.attention_tools`: what ``tools/analysis/attention_stats.py`` and
  ``visualize_masking.py`` run.
* :mod:`.knn`: what ``tools/analysis/knn_eval.py`` runs (DINO's k-NN top-1).
* :mod:`.training_plots`: what ``tools/analysis/plot_training.py`` draws.

The CPU miniature (``make demo``, ``make study``) is built on these:
:mod:`mmhybrid.miniature`.
"""
from .attention_metrics import (attention_distance, attention_entropy,
                                attention_stats, patch_attention,
                                patch_distance_matrix, query_key_nmi)

__all__ = [
    'attention_distance', 'attention_entropy', 'attention_stats',
    'patch_attention', 'patch_distance_matrix', 'query_key_nmi'
]
