"""What an unreadable training image does: an error naming it, or a skip."""
from typing import Optional

from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS

from ...datasets.sample_guard import ON_UNREADABLE, install_sample_guard


@HOOKS.register_module()
class UnreadableImageHook(Hook):
    """The config switch for unreadable or empty training images.

    ``tools/train.py`` adds it to every run with the defaults; a config sets
    ``custom_hooks=[dict(type='UnreadableImageHook', on_unreadable='skip',
    max_skips=100)]`` to skip them.

    The check runs inside the dataloader workers
    (:class:`~mmhybrid.datasets.sample_guard.SampleGuard`): when the pipeline
    fails on a sample whose image file is empty or does not decode
    (:func:`~mmhybrid.datasets.sample_guard.image_problem`, the rule
    ``tools/data/scan_images.py`` applies to a whole folder), then

    * ``on_unreadable='raise'``: the run stops with ``UnreadableImageError``
      naming the file and its dataset index (never the decoder's own
      traceback from a worker);
    * ``on_unreadable='skip'``: a warning names the file, another sample takes
      its place, and a counter shared by all workers of the run counts it;
      skipping more than ``max_skips`` is the error.

    Args:
        on_unreadable (str): ``'raise'`` or ``'skip'``. Defaults to
            ``'raise'``.
        max_skips (int): The most images one run may skip. Defaults to 100.
    """
    priority = 'NORMAL'

    def __init__(self,
                 on_unreadable: str = 'raise',
                 max_skips: int = 100) -> None:
        if on_unreadable not in ON_UNREADABLE:
            raise ValueError(f'UnreadableImageHook: on_unreadable='
                             f'{on_unreadable!r}: expected one of '
                             f'{ON_UNREADABLE}')
        if int(max_skips) < 0:
            raise ValueError(f'UnreadableImageHook: max_skips={max_skips}: '
                             'expected a number >= 0')
        self.on_unreadable = on_unreadable
        self.max_skips = int(max_skips)
        self._guard = None
        self._reported = 0

    def sample_guard_options(self, runner) -> dict:
        return dict(on_unreadable=self.on_unreadable, max_skips=self.max_skips)

    def before_train(self, runner) -> None:
        self._guard = install_sample_guard(runner)

    @property
    def skipped(self) -> int:
        """Unreadable images skipped so far in this run (all workers)."""
        return 0 if self._guard is None else self._guard.skipped.value

    def _report(self, runner, final: bool = False) -> None:
        count = self.skipped
        if count != self._reported or (final and count):
            runner.logger.warning(
                f'UnreadableImageHook: {count} unreadable image(s) skipped in '
                f'this run so far (limit {self.max_skips}); '
                'tools/data/scan_images.py lists them all')
            self._reported = count

    def after_train_epoch(self, runner) -> None:
        self._report(runner)

    def after_train(self, runner) -> None:
        self._report(runner, final=True)

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        if self.on_unreadable == 'skip':
            runner.message_hub.update_scalar('train/unreadable_skipped',
                                             self.skipped)
