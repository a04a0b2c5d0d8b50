from typing import Any, List, Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS

from ...models.utils.token_masking import (SCHEDULES, mask_ratio_at,
                                           mask_ratio_problems,
                                           num_kept_tokens)
from ...utils.problems import Problem, choice_problems, raise_problems

DATA_BATCH = Optional[dict]


def masking_schedule_problems(final_ratio: Any,
                              schedule: Any,
                              start_ratio: Any,
                              end_iter: Any,
                              start_iter: Any,
                              num_patches: Optional[int] = None,
                              prefix: str = '') -> List[Problem]:
    """The one check of :class:`ProgressiveMaskingHook`'s options: its
    constructor raises on it, the preflight reports it with config keys.

    Args:
        final_ratio, schedule, start_ratio, end_iter, start_iter: As the
            hook takes them.
        num_patches (int, optional): The student's patch tokens; when given,
            each ratio must keep at least one.
        prefix (str): Put before each key (``'custom_hooks[0].'``).
    """
    problems = (
        mask_ratio_problems(final_ratio, f'{prefix}final_ratio', num_patches) +
        mask_ratio_problems(start_ratio, f'{prefix}start_ratio', num_patches) +
        choice_problems(f'{prefix}schedule', schedule, SCHEDULES))
    if end_iter is not None and end_iter <= start_iter:
        problems.append(
            Problem(f'{prefix}end_iter', end_iter,
                    f'must be after start_iter ({start_iter})'))
    return problems


@HOOKS.register_module()
class ProgressiveMaskingHook(Hook):
    """Raises the student's token mask ratio during training.

    The ratio is a pure function of the iteration counter, so a resumed run
    continues the schedule exactly where the checkpoint left it. The current
    value is written to the message hub as ``train/mask_ratio`` (the algorithm
    also returns it with its losses, so it shows in every log line).

    Args:
        final_ratio (float): Ratio at the end of the ramp, in ``[0, 1)``.
            Defaults to 0.5.
        schedule (str): ``'linear'``, ``'cosine'`` or ``'constant'``.
            Defaults to ``'linear'``.
        start_ratio (float): Ratio at iteration 0. Defaults to 0.
        end_iter (int, optional): Iteration at which ``final_ratio`` is
            reached. Defaults to the run's ``max_iters``.
        start_iter (int): Iteration at which the ramp starts. Defaults to 0.
    """
    priority = 'NORMAL'

    def __init__(self,
                 final_ratio: float = 0.5,
                 schedule: str = 'linear',
                 start_ratio: float = 0.0,
                 end_iter: Optional[int] = None,
                 start_iter: int = 0) -> None:
        raise_problems(
            'ProgressiveMaskingHook',
            masking_schedule_problems(final_ratio, schedule, start_ratio,
                                      end_iter, start_iter))
        self.final_ratio = final_ratio
        self.schedule = schedule
        self.start_ratio = start_ratio
        self.end_iter = end_iter
        self.start_iter = start_iter

    def ratio_at(self, iteration: int, max_iters: int) -> float:
        end = self.end_iter if self.end_iter is not None else max_iters
        span = max(end - self.start_iter, 1)
        progress = (iteration - self.start_iter) / span
        return mask_ratio_at(progress, self.final_ratio, self.schedule,
                             self.start_ratio)

    def kept_counts(self, num_patches: int, max_iters: int) -> List[int]:
        """The distinct kept-token counts of a run, in the order they come.

        What a compiled student step sees: each count is another shape of
        its token dimension. ViT-B/16 (196 patches) from 0 to 0.5 gives 99;
        with automatic dynamic shapes (torch.compile's default) the second
        count makes that dimension dynamic and no later one recompiles, while
        ``dynamic=False`` would recompile per count until dynamo's recompile
        limit (8) sends the step back to eager (``docs/gpu.md``).

        Args:
            num_patches (int): The student's patch tokens.
            max_iters (int): The run's iterations.
        """
        counts: List[int] = []
        for it in range(max_iters):
            k = num_kept_tokens(num_patches, self.ratio_at(it, max_iters))
            if not counts or counts[-1] != k:
                if k not in counts:
                    counts.append(k)
        return counts

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        if not hasattr(model, 'mask_ratio'):
            raise TypeError(
                f'ProgressiveMaskingHook needs a model with a '
                f'mask_ratio attribute, got {type(model).__name__}')
        # The student's patch grid must keep >= 1 token at the final ratio.
        model.mask_ratio = self.final_ratio
        model.mask_ratio = self.ratio_at(runner.iter, runner.max_iters)

    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch: DATA_BATCH = None) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        ratio = self.ratio_at(runner.iter, runner.max_iters)
        model.mask_ratio = ratio
        runner.message_hub.update_scalar('train/mask_ratio', ratio)
