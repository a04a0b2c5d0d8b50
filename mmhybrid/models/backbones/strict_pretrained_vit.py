"""mmpretrain's ViT for fine-tuning: its pretrained load is complete or fails.

Every downstream config of ``configs/benchmarks`` uses it as its backbone (the
mmpretrain classifiers directly, mmseg and mmdet as
``type='mmpretrain.StrictPretrainedViT'``), so the check fires wherever the
model's ``init_weights`` runs: ``tools/train.py``, ``dist_train.sh``, Slurm, a
bare mmengine ``Runner`` or a notebook.
"""
from typing import List, Optional

from mmengine.logging import print_log
from mmpretrain.models.backbones import VisionTransformer
from mmpretrain.registry import MODELS

from ...vit_checkpoints import (PRETRAINED_KEYS, PretrainedMismatchError,
                                load_pretrained_vit)


def _as_list(init_cfg) -> List[dict]:
    if not init_cfg:
        return []
    return list(init_cfg) if isinstance(init_cfg,
                                        (list, tuple)) else [init_cfg]


def _is_pretrained(cfg: dict) -> bool:
    return cfg.get('type') == 'Pretrained'


def pretrained_entry(init_cfg, owner: str) -> Optional[dict]:
    """The (last) ``Pretrained`` entry of an ``init_cfg``, checked.

    Args:
        init_cfg (dict | list[dict] | None): A module's ``init_cfg``.
        owner (str): Named in the error.

    Returns:
        dict | None: The entry, or None when there is none.

    Raises:
        PretrainedMismatchError: For unknown keys or no ``checkpoint``.
    """
    entries = [c for c in _as_list(init_cfg) if _is_pretrained(c)]
    if not entries:
        return None
    cfg = entries[-1]
    unknown = sorted(set(cfg) - set(PRETRAINED_KEYS))
    if unknown or not cfg.get('checkpoint'):
        raise PretrainedMismatchError(
            f'{owner}.init_cfg={dict(cfg)!r}: expected the keys '
            f'{PRETRAINED_KEYS[:2]} and optionally {PRETRAINED_KEYS[2:]}' +
            (f', got unknown {unknown}' if unknown else ', got no checkpoint'))
    return cfg


@MODELS.register_module()
class StrictPretrainedViT(VisionTransformer):
    """:class:`mmpretrain.models.VisionTransformer` with a strict load.

    Same arguments, modules, state-dict keys and ``forward`` as mmpretrain's
    ViT; only :meth:`init_weights` differs when ``init_cfg`` holds
    ``dict(type='Pretrained', checkpoint=..., prefix=None, allow=None)``
    (``map_location`` is accepted as mmengine's; tensors are read onto the
    CPU):

    * ``checkpoint`` may be a raw pretraining checkpoint (``backbone.*`` +
      ``neck.*``, as ``work_dirs/.../epoch_300.pth``), a converter's output
      (bare backbone keys), or an official timm / OpenAI CLIP ViT;
    * ``prefix`` (e.g. ``'backbone.'``, as mmpretrain's MAE benchmark configs
      pass it) is optional: the backbone is found without it, and a file
      without keys under it is read as a bare backbone;
    * ``pos_embed`` is resized to this model's patch grid;
    * a target tensor the file does not provide, a file tensor the model does
      not have, or a shape mismatch raises
      :class:`~mmhybrid.downstream.PretrainedMismatchError` (one line naming
      the file and the keys) instead of mmengine's warning. ``allow`` (a regex)
      names keys that may differ, e.g. ``r'^ln[12]\\.'`` for a global-pool head
      without the final norm.

    Other ``init_cfg`` entries (and no ``init_cfg``) initialise as mmpretrain
    does.
    """

    def init_weights(self) -> None:
        """Random initialisation of every part, then the strict load."""
        cfg = pretrained_entry(self.init_cfg, type(self).__name__)
        if cfg is None:
            super().init_weights()
            return
        original = self.init_cfg
        # mmpretrain re-draws pos_embed after any non-Pretrained init: do all
        # of that first, so the load below is the last word on every tensor
        others = [c for c in _as_list(original) if not _is_pretrained(c)]
        self.init_cfg = others or None
        try:
            super().init_weights()
        finally:
            self.init_cfg = original
        self.load_pretrained(cfg['checkpoint'], cfg.get('prefix'),
                             cfg.get('allow'))

    def load_pretrained(self,
                        checkpoint: str,
                        prefix: Optional[str] = None,
                        allow: Optional[str] = None) -> None:
        """Load ``checkpoint`` strictly (see the class); log what was loaded.

        Args:
            checkpoint (str): Path or URL.
            prefix (str, optional): Where the backbone sits in the file.
                Defaults to None (found from the layout).
            allow (str, optional): Regex of keys that may differ. Defaults to
                None.
        """
        match = load_pretrained_vit(self, checkpoint, prefix, allow)
        msg = (f'{type(self).__name__}: loaded all {len(match.kept)} backbone '
               f'tensors from {checkpoint}')
        if match.allowed_missing:
            msg += f'; left to init (allow): {match.allowed_missing}'
        if match.dropped:
            msg += f'; not loaded (allow): {match.dropped}'
        print_log(msg, logger='current')
