"""Stop (or skip) a training step whose loss or gradients are not finite.

Design. A NaN/inf must be caught *before* the optimizer applies it, and the
report must name the bad term (``loss_feat``: feature, ``loss_rel``: relation).
The optimizer wrapper sees only the summed loss; the hooks see the terms but
run after the step. So the hook does both halves:

* in ``before_train`` it guards the run's own optimizer wrapper instance(s)
  (never the class, nor mmengine's code: mmengine's ``update_params`` runs as
  it is and calls the guarded methods): ``backward`` notes whether the loss was
  finite, ``step`` checks that and, with ``check_grads``, the gradients, and
  skips the optimizer step when either is not finite (``update_params`` then
  zeroes the gradients as after every step). In a distributed run the decision
  is all-reduced first, so every rank skips together (no rank waits in a DDP
  all-reduce that the others never enter). With ``accumulative_counts`` > 1 a
  bad loss anywhere in the window skips that window's step.
  ``AmpOptimWrapper`` keeps its own inf/NaN-gradient handling (the loss
  scaler), the loss check still applies.
* in ``after_train_iter`` (priority ``HIGHEST``: before ``RuntimeInfoHook``
  puts
  the outputs into the logs, before ``CheckpointHook``) it averages the logged
  values over ranks (so logs show the loss of the global batch, and every rank
  sees a NaN of any rank), names the non-finite terms with the iteration, and
  after ``max_skips`` skipped steps raises :class:`NonFiniteLossError`. The
  weights were not updated by the bad step, and the error is raised before any
  checkpoint hook runs; ``mmhybrid.engine.safe_io`` also refuses to write a
  checkpoint with non-finite weights.

Cost: the finiteness decisions are read on the host, one synchronisation per
step (two with ``check_grads``), plus a tiny all-reduce each in a distributed
run; mmengine's logging already synchronises on the loss every iteration.

A config may use it directly (``custom_hooks=[dict(type='NonFiniteLossHook',
max_skips=0)]``); ``tools/train.py`` adds it to every run
(``--max-nonfinite-skips N``).
"""
import functools
from typing import List, Optional

import torch
import torch.distributed as torch_dist
from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmpretrain.registry import HOOKS

DATA_BATCH = Optional[dict]

TERM_NAMES = {'loss_feat': 'feature', 'loss_rel': 'relation', 'loss': 'total'}


class NonFiniteLossError(RuntimeError):
    """Training stopped on a NaN/inf loss or gradient."""


def _all_ranks_ok(flags: torch.Tensor) -> List[bool]:
    """Per flag, whether it holds on every rank: one all-reduce, one read-
    back."""
    flags = flags.float()
    if get_dist_info()[1] > 1:
        torch_dist.all_reduce(flags, op=torch_dist.ReduceOp.MIN)
    return [v > 0.5 for v in flags.tolist()]


def _grads_finite(optim_wrapper: OptimWrapper) -> torch.Tensor:
    """A 0-dim bool tensor on the gradients' device (no read-back)."""
    grads = [
        p.grad for group in optim_wrapper.optimizer.param_groups
        for p in group['params'] if p.grad is not None
    ]
    if not grads:
        return torch.tensor(True)
    return torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Catch NaN/inf losses and gradients before they reach the weights.

    Args:
        max_skips (int): Bad steps tolerated (skipped: no weight update) before
            training stops. 0 (default) stops at the first one.
        check_grads (bool): Also skip steps whose gradients are not finite
            (plain ``OptimWrapper`` only; AMP has its loss scaler). Defaults to
            True.
        reduce_logs (bool): Average the logged values over ranks (the loss of
            the global batch). Non-finite terms of any rank are seen by all
            ranks either way. Defaults to True.
    """
    priority = 'HIGHEST'

    def __init__(self,
                 max_skips: int = 0,
                 check_grads: bool = True,
                 reduce_logs: bool = True) -> None:
        if int(max_skips) != max_skips or max_skips < 0:
            raise ValueError(f'NonFiniteLossHook.max_skips must be an integer '
                             f'>= 0, got {max_skips!r}')
        self.max_skips = int(max_skips)
        self.check_grads = check_grads
        self.reduce_logs = reduce_logs
        self.skipped = 0
        self._bad: Optional[str] = None

    # ----------------------------------------------------------------- guard
    def _guard(self, ow: OptimWrapper) -> None:
        if getattr(ow, '_mmhybrid_nonfinite_guard', False):
            return
        hook = self
        # AmpOptimWrapper's loss scaler already refuses non-finite gradients
        check_grads = self.check_grads and getattr(ow, 'loss_scaler',
                                                   None) is None
        # the instance's own (bound) methods: subclasses keep their behaviour
        backward, step = ow.backward, ow.step
        # whether every loss since the last step was finite: a device tensor,
        # read back once per step (no stall between forward and backward)
        pending: List[Optional[torch.Tensor]] = [None]

        @functools.wraps(backward)
        def guarded_backward(loss: torch.Tensor, **kwargs) -> None:
            ok = torch.isfinite(loss.detach()).all()
            pending[0] = ok if pending[0] is None else pending[0] & ok
            # a non-finite loss gives non-finite gradients: they are
            # discarded with the skipped step
            backward(loss, **kwargs)

        @functools.wraps(step)
        def guarded_step(**kwargs) -> None:
            loss_ok = pending[0] if pending[0] is not None else torch.tensor(
                True)
            pending[0] = None
            grads_ok = (
                _grads_finite(ow).to(loss_ok.device)
                if check_grads else torch.ones_like(loss_ok))
            loss_ok, grads_ok = _all_ranks_ok(torch.stack([loss_ok, grads_ok]))
            if not (loss_ok and grads_ok):
                hook._bad = 'loss' if not loss_ok else 'gradients'
                return
            step(**kwargs)

        ow.backward = guarded_backward
        ow.step = guarded_step
        # backward and the optimizer step stay eager under mmengine's
        # ``compile=True`` (which compiles the whole train_step): dynamo fails
        # on reading the optimizer's param groups; mmengine's own
        # update_params, bound to this instance, is run as it is
        ow.update_params = torch.compiler.disable(ow.update_params)
        ow._mmhybrid_nonfinite_guard = True

    def before_train(self, runner) -> None:
        ow = runner.optim_wrapper
        wrappers = list(ow.values()) if isinstance(ow, OptimWrapperDict) \
            else [ow]
        for w in wrappers:
            if isinstance(w, OptimWrapper):
                self._guard(w)

    # ---------------------------------------------------------------- report
    @staticmethod
    def _reduce(outputs: dict) -> None:
        keys = [
            k for k, v in outputs.items()
            if isinstance(v, torch.Tensor) and v.numel() == 1
        ]
        if not keys:
            return
        vals = torch.stack(
            [outputs[k].detach().float().reshape(()) for k in keys])
        torch_dist.all_reduce(vals)
        vals /= get_dist_info()[1]
        for k, v in zip(keys, vals):
            outputs[k] = v.to(outputs[k].dtype)

    @staticmethod
    def _bad_terms(outputs: dict) -> List[str]:
        bad = []
        for k, v in outputs.items():
            if 'loss' in k and isinstance(v, torch.Tensor) \
                    and not bool(torch.isfinite(v).all()):
                bad.append(k)
        return bad

    @staticmethod
    def _describe(outputs: dict) -> str:
        parts = []
        for k, v in outputs.items():
            if 'loss' not in k or not isinstance(v, torch.Tensor):
                continue
            term = TERM_NAMES.get(k, k)
            parts.append(
                f'{k}={float(v.detach().float().mean()):.6g} ({term})')
        return ', '.join(parts)

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: DATA_BATCH = None,
                         outputs: Optional[dict] = None) -> None:
        outputs = outputs if isinstance(outputs, dict) else {}
        if get_dist_info()[1] > 1 and (self.reduce_logs or self._bad):
            self._reduce(outputs)
        # a finite total (the sum of the loss terms) on every rank means every
        # term is finite: the terms are read back only after a bad step
        bad_terms = self._bad_terms(outputs) if self._bad else []
        reason, self._bad = self._bad, None
        if reason is None and not bad_terms:
            return
        it = runner.iter + 1
        if bad_terms:
            names = ', '.join(f'{k} ({TERM_NAMES.get(k, k)} term)'
                              for k in bad_terms if k != 'loss') or 'loss'
            what = f'non-finite loss at iteration {it}: {names} is NaN/inf'
        else:
            what = (f'non-finite gradients at iteration {it} (the losses are '
                    'finite)')
        what += f' [{self._describe(outputs)}]'
        self.skipped += 1
        if self.skipped > self.max_skips:
            raise NonFiniteLossError(
                f'{what}. Training stopped: the step was not applied (weights '
                f'are unchanged and finite) and no checkpoint is written from '
                f'it; {self.skipped - 1} earlier bad step(s) were skipped '
                f'(NonFiniteLossHook.max_skips={self.max_skips}, '
                f'tools/train.py --max-nonfinite-skips)')
        runner.logger.warning(
            f'{what}. Step skipped ({self.skipped}/{self.max_skips} allowed '
            'bad steps used); training continues')

    # ----------------------------------------------------- skip count saved
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault('meta', {})['nonfinite_skips'] = self.skipped

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if getattr(runner, '_resume', False):
            self.skipped = int(
                checkpoint.get('meta', {}).get('nonfinite_skips', 0))
