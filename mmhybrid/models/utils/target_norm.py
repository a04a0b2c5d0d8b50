"""Feature-target normalisation measured once over data: per-channel
standardisation, or PHI-S (RADIO, Ranzinger et al. 2024).

Feature Distillation whitens each teacher token on its own (a LayerNorm
without affine, ``FeatureDistillLoss(whiten_target=True)``, the default). With
several feature teachers whose features have very different scales (CLIP,
DINOv2, SigLIP), a fixed normalisation measured over the data keeps each
teacher's token-to-token structure instead:

* ``'standardize'``: ``(x - mean) / std`` per channel;
* ``'phi-s'``: PHI-S, ``R (x - mean) / phi``: ``R`` rotates the PCA basis so
  that every channel carries the same variance (RADIO uses a Hadamard matrix,
  which exists only for some widths; here an exact equal-diagonal rotation,
  :func:`equal_diagonal_rotation`, does the same for any width) and one
  scalar ``phi = sqrt(mean eigenvalue)`` makes it 1: isotropic, a single
  scale for all channels.

The statistics are accumulated over the first ``num_batches`` training
batches (summed over ranks, in float64), used as they stand meanwhile
(refreshed at batches 1, 2, 4, 8, ...), then fixed; they are buffers of the
student's model, saved with its checkpoints, so a resumed run keeps them.
"""
from typing import Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
from mmpretrain.registry import MODELS

from ...utils.problems import choice_problems, raise_problems

NORM_MODES = ('standardize', 'phi-s')


def equal_diagonal_rotation(eigenvalues: torch.Tensor) -> torch.Tensor:
    """An orthogonal ``Q`` with ``Q diag(eigenvalues) Q^T`` of constant.

    diagonal (the mean eigenvalue), by at most ``C - 1`` plane rotations.

    Each rotation takes a channel above the mean and one below it and turns
    them so that the first gets exactly the mean (Bendel and Mickey, 1978);
    that channel is then done.

    Args:
        eigenvalues (Tensor): ``(C,)``, float64 preferred.

    Returns:
        Tensor: ``(C, C)`` orthogonal, in ``eigenvalues``' dtype.
    """
    d = eigenvalues.clone()
    C = d.numel()
    mean = d.mean()
    Q = torch.eye(C, dtype=d.dtype)
    M = torch.diag(d)
    todo = list(range(C))
    for _ in range(C - 1):
        dd = M.diagonal()
        above = [i for i in todo if dd[i] > mean]
        below = [i for i in todo if dd[i] < mean]
        if not above or not below:
            break
        i, j = above[0], below[0]
        a, b, c = M[i, i], M[j, j], M[i, j]
        # rotate in the (i, j) plane so that M[i, i] becomes the mean:
        # cos^2 a - 2 sin cos c + sin^2 b = mean, solved for the angle
        t = _angle(a, b, c, mean)
        cs, sn = torch.cos(t), torch.sin(t)
        # G = I except G[[i, j]][:, [i, j]] = [[cs, -sn], [sn, cs]]:
        # M <- G M G^T and Q <- G Q touch rows/columns i and j only
        G = torch.stack([torch.stack([cs, -sn]), torch.stack([sn, cs])])
        ij = [i, j]
        M[ij] = G @ M[ij]
        M[:, ij] = M[:, ij] @ G.T
        Q[ij] = G @ Q[ij]
        todo.remove(i)
    return Q


def _angle(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor,
           target: torch.Tensor) -> torch.Tensor:
    """The angle ``t`` with ``cos^2 t a - 2 sin t cos t c + sin^2 t b =
    target``, for ``a > target > b``."""
    # (a + b) / 2 + (a - b) / 2 cos 2t - c sin 2t = target
    r = torch.sqrt(((a - b) / 2)**2 + c**2)
    phase = torch.atan2(c, (a - b) / 2)
    return (torch.acos(((target - (a + b) / 2) / r).clamp(-1, 1)) - phase) / 2


def phi_s(mean: torch.Tensor,
          cov: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """PHI-S of features with ``mean`` ``(C,)`` and covariance ``(C, C)``.

    Returns:
        tuple: The rotation ``R`` ``(C, C)`` and the scale ``phi`` (0-dim):
        ``R (x - mean) / phi`` has identity-diagonal covariance, every
        channel the same variance 1.
    """
    eigenvalues, U = torch.linalg.eigh(cov)
    eigenvalues = eigenvalues.clamp_min(0)
    R = equal_diagonal_rotation(eigenvalues) @ U.T
    return R, eigenvalues.mean().clamp_min(1e-12).sqrt()


@MODELS.register_module()
class TargetNorm(nn.Module):
    """A feature target's normalisation, measured over the first batches.

    Args:
        dims (int): The teacher's width C.
        mode (str): ``'standardize'`` or ``'phi-s'``.
        num_batches (int): Training batches the statistics are measured on
            (summed over ranks). Defaults to 100.
        eps (float): Added to the variances. Defaults to 1e-6.
    """

    def __init__(self,
                 dims: int,
                 mode: str = 'phi-s',
                 num_batches: int = 100,
                 eps: float = 1e-6) -> None:
        super().__init__()
        raise_problems('TargetNorm', choice_problems('mode', mode, NORM_MODES))
        if not isinstance(num_batches, int) or num_batches < 1:
            raise ValueError('TargetNorm: num_batches='
                             f'{num_batches!r}: expected an int >= 1')
        self.mode, self.num_batches, self.eps = mode, num_batches, eps
        self._measured = False
        f64 = torch.float64
        self.register_buffer('batches', torch.zeros((), dtype=torch.long))
        self.register_buffer('count', torch.zeros((), dtype=f64))
        self.register_buffer('sum', torch.zeros(dims, dtype=f64))
        second = (dims, dims) if mode == 'phi-s' else (dims, )
        self.register_buffer('sum_sq', torch.zeros(second, dtype=f64))
        # the transform in use: x -> (x - mean) @ weight.T * scale
        self.register_buffer('mean', torch.zeros(dims))
        self.register_buffer('weight', torch.eye(dims))
        self.register_buffer('scale', torch.ones(dims))

    @property
    def measured(self) -> bool:
        """Whether the statistics are fixed.

        Read from the ``batches`` buffer (a device-to-host copy, a stall on
        CUDA) only until it says yes, then remembered: the training step asks
        at every iteration.
        """
        if not self._measured:
            self._measured = int(self.batches) >= self.num_batches
        return self._measured

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._measured = False  # the loaded count decides again

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Add a batch of teacher tokens ``(B, L, C)`` to the statistics
        (all ranks' when distributed) and refresh the transform; nothing once
        :attr:`measured`."""
        if self.measured:
            return
        flat = x.reshape(-1, x.shape[-1]).double()
        stats = [
            flat.new_tensor(float(flat.shape[0])).reshape(1),
            flat.sum(0), (flat.T @ flat).flatten() if self.mode == 'phi-s' else
            (flat * flat).sum(0)
        ]
        packed = torch.cat(stats)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(packed)
        C = flat.shape[1]
        self.count += packed[0]
        self.sum += packed[1:1 + C]
        self.sum_sq += packed[1 + C:].reshape(self.sum_sq.shape)
        self.batches += 1
        n = int(self.batches)
        # the transform is refreshed at batches 1, 2, 4, 8, ... and the last
        # (an eigendecomposition and C rotations each, about 1.6 s at C = 768
        # on a CPU core)
        if n & (n - 1) and n != self.num_batches:
            return
        mean = self.sum / self.count
        if self.mode == 'phi-s':
            cov = self.sum_sq / self.count - torch.outer(mean, mean)
            cov += self.eps * torch.eye(C, dtype=cov.dtype, device=cov.device)
            R, phi = phi_s(mean.cpu(), cov.cpu())
            self.weight.copy_(R)
            self.scale.fill_(float(1 / phi))
        else:
            var = (self.sum_sq / self.count - mean * mean).clamp_min(0)
            self.scale.copy_(1 / (var + self.eps).sqrt())
        self.mean.copy_(mean)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``(B, L, C)`` teacher tokens (fp32 out)."""
        y = x.float() - self.mean
        if self.mode == 'phi-s':
            y = y @ self.weight.T
        return y * self.scale

    def extra_repr(self) -> str:
        return (f'mode={self.mode!r}, num_batches={self.num_batches}, '
                f'measured over {int(self.batches)}')
