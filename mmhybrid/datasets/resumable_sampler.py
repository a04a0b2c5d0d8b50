"""``DefaultSampler`` that can start an epoch in its middle."""
from typing import Iterator

from mmengine.dataset import DefaultSampler
from mmpretrain.registry import DATA_SAMPLERS

from .sample_guard import SeededIndex, sample_seed


@DATA_SAMPLERS.register_module()
class ResumableSampler(DefaultSampler):
    """mmengine's ``DefaultSampler`` (same order, same arguments) that.

    * can skip the first samples of its next epoch (:meth:`start_at`), so a run
      resumed from a mid-epoch checkpoint draws exactly the batches the
      uninterrupted run drew next, without reading the ones before;
    * yields :class:`~mmhybrid.datasets.sample_guard.SeededIndex` indices whose
      seed is a function of (seed, epoch, position), which the
      :class:`~mmhybrid.datasets.sample_guard.SampleGuard` uses to make each
      sample's augmentation independent of the worker that draws it.

    ``ExactResumeHook`` turns a config's plain ``DefaultSampler`` into this
    class on epoch-based runs, so configs need not name it.
    """

    _start = 0

    def start_at(self, num_samples: int) -> None:
        """Skip the first ``num_samples`` of this rank in the next epoch (once;
        later epochs are whole)."""
        self._start = int(num_samples)

    def __iter__(self) -> Iterator[int]:
        start, self._start = self._start, 0
        indices = list(super().__iter__())
        # position in the epoch's global order: rank r holds r, r+w, r+2w, ...
        return iter([
            SeededIndex(
                idx,
                sample_seed(self.seed, self.epoch,
                            self.rank + pos * self.world_size))
            for pos, idx in enumerate(indices) if pos >= start
        ])
