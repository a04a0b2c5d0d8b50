"""The smallest model and runner, for tests of the runner machinery (saves,
resume, distributed set-up) that need no ViT."""
from typing import Any, Dict

import torch
from mmengine.model import BaseModel


class ToyModel(BaseModel):
    """One 2 -> 1 linear layer; the loss is the mean of its squared output."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode: str = 'loss') -> dict:
        return dict(loss=self.w(inputs).pow(2).mean())


def toy_runner_cfg(work_dir: str,
                   iters: int = 4,
                   samples: int = 8,
                   **kwargs: Any) -> Dict[str, Any]:
    """Keyword arguments of a runner that trains :class:`ToyModel`.

    Args:
        work_dir (str): The runner's work directory.
        iters (int): Iterations to train (iteration-based). Defaults to 4.
        samples (int): Samples of the constant dataset (batches of 2).
            Defaults to 8.
        **kwargs: More runner arguments; they replace the ones above.

    Returns:
        dict: ``Runner(**toy_runner_cfg(...))`` builds the runner (any runner
        class with mmengine's ``Runner`` arguments).
    """
    cfg = dict(
        model=ToyModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=[dict(inputs=torch.ones(2))] * samples,
            batch_size=2,
            sampler=dict(type='InfiniteSampler'),
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=False, max_iters=iters),
        default_scope='mmengine')
    cfg.update(kwargs)
    return cfg
