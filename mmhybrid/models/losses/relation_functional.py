"""Relation (token-to-token attention) maps and distances: pure functions.

Shapes: ``a, b`` are ``(B, L, C)`` per-token projections (e.g. q and k) before
the split into heads; maps are ``(B, H, L, L)``.
"""
import torch
import torch.nn.functional as F


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(B, L, C) -> (B, H, L, C // H)``."""
    B, L, C = x.shape
    if C % num_heads:
        raise ValueError(
            f'cannot split width {C} into {num_heads} heads: {C} is not a '
            f'multiple of {num_heads}')
    return x.reshape(B, L, num_heads, C // num_heads).transpose(1, 2)


def relation_logits(a: torch.Tensor, b: torch.Tensor,
                    num_heads: int) -> torch.Tensor:
    """Scaled dot-product logits ``a_h b_h^T / sqrt(d)`` per head.

    The product runs in the inputs' dtype (bf16 under AMP, on tensor cores);
    the distances below take their softmax in fp32.

    Args:
        a (Tensor): ``(B, L, C)`` queries (or values for V-V relations).
        b (Tensor): ``(B, L, C)`` keys (or values).
        num_heads (int): H; each head has ``d = C // H`` channels. Passing the
            teacher's head count re-splits a student of another width/head
            count without any parameter.

    Returns:
        Tensor: ``(B, H, L, L)`` logits; ``softmax(-1)`` gives the relation.
    """
    a = split_heads(a, num_heads)
    b = split_heads(b, num_heads)
    scale = a.shape[-1]**-0.5
    return torch.matmul(a * scale, b.transpose(-2, -1))


def kl_relation(student_logits: torch.Tensor,
                teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(T || S) summed over keys, averaged over batch, heads and queries.

    ``sum_k T_k (log T_k - log S_k)`` with ``T = softmax(teacher_logits)`` and
    ``S = softmax(student_logits)``, both over the last dim.
    """
    # the fp32 cast inside the softmax kernel: no extra fp32 copy of the map
    log_s = F.log_softmax(student_logits, dim=-1, dtype=torch.float32)
    with torch.no_grad():  # the teacher side needs no autograd graph
        log_t = F.log_softmax(teacher_logits, dim=-1, dtype=torch.float32)
        p_t = log_t.exp()
        neg_entropy = (p_t * log_t).sum(-1).mean()
    return neg_entropy - (p_t * log_s).sum(-1).mean()


def smooth_l1_relation(student_logits: torch.Tensor,
                       teacher_logits: torch.Tensor,
                       beta: float = 1.0) -> torch.Tensor:
    """Smooth-L1 between the two probability maps, averaged over entries."""
    s = student_logits.softmax(-1, dtype=torch.float32)
    t = teacher_logits.softmax(-1, dtype=torch.float32)
    return F.smooth_l1_loss(s, t, beta=beta)


def mse_relation(student_logits: torch.Tensor,
                 teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the two probability maps."""
    s = student_logits.softmax(-1, dtype=torch.float32)
    t = teacher_logits.softmax(-1, dtype=torch.float32)
    return F.mse_loss(s, t)
