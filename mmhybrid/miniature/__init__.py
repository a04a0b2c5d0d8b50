"""The whole job in miniature, on the CPU: ``make demo`` and ``make study``.

Built on the analysis library (:mod:`mmhybrid.analysis`: attention statistics,
ViT loading) and on ``tools/train.py``'s function (:mod:`mmhybrid.apis.train`),
split by concern:

* :mod:`.configs`: where the ``configs/demo/`` configs are (the packaged copy,
  ``mmhybrid/.mim/configs``) and the ``--cfg-options`` that size them;
* :mod:`.data`: the built-in generated objects (written by
  :mod:`mmhybrid.datasets.shapes`) or a user's ImageNet-style folder, and the
  options pointing a config's loaders at them;
* :mod:`.stages`: the training stages (``tools/train.py`` runs of those
  configs), their runner and its guard;
* :mod:`.measures`: k-NN, attention statistics and distances to the teachers
  of a checkpoint, and the numbers read back from the logs;
* :mod:`.pipeline`: the stages strung together, which :mod:`.demo`
  (``tools/demo/run_demo.py``) and :mod:`.study`
  (``tools/analysis/run_study.py``) configure and report.

Nothing is imported here: the tools import the module they run.
"""
