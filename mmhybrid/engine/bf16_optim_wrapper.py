from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class BF16OptimWrapper(AmpOptimWrapper):
    """bf16 autocast without a loss scaler.

    bf16 has fp32's exponent range, so loss scaling buys nothing; mmengine's
    ``AmpOptimWrapper`` still runs a ``GradScaler`` whose inf check reads a
    flag back from the GPU every step, stalling the CPU that launches the next
    kernels. Gradient clipping (``clip_grad``) works as in ``OptimWrapper``.

    Args:
        **kwargs: As :class:`mmengine.optim.OptimWrapper` (``optimizer``,
            ``accumulative_counts``, ``clip_grad``).
    """

    def __init__(self, **kwargs) -> None:
        kwargs.pop('loss_scale', None)
        dtype = kwargs.pop('dtype', 'bfloat16')
        if str(dtype).replace('torch.', '') != 'bfloat16':
            raise ValueError(f'BF16OptimWrapper autocasts to bfloat16, got '
                             f'dtype={dtype!r}; use AmpOptimWrapper for fp16')
        super().__init__(dtype='bfloat16', **kwargs)
        self.loss_scaler = None

    def backward(self, loss, **kwargs) -> None:
        loss.backward(**kwargs)
        self._inner_count += 1

    def step(self, **kwargs) -> None:
        if self.clip_grad_kwargs:
            self._clip_grad()
        self.optimizer.step(**kwargs)

    def state_dict(self) -> dict:
        return OptimWrapper.state_dict(self)

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        state_dict.pop('loss_scaler',
                       None)  # resuming from an AmpOptimWrapper run
        OptimWrapper.load_state_dict(self, state_dict)
