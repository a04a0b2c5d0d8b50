"""Strict key checks of ViT weights against a model, and their reports.

One comparison and one way of naming keys for every strict load: a teacher's
(:func:`~mmhybrid.vit_checkpoints.io.load_vit_state_dict`), a downstream
backbone's (:func:`~mmhybrid.vit_checkpoints.pretrained.load_pretrained_vit`)
and a converter's target (``mmhybrid.converters.common.check_against``).
"""
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

import torch


def compare_keys(expected: Iterable[str],
                 got: Iterable[str]) -> Tuple[List[str], List[str]]:
    """``(missing, unexpected)`` key names, sorted."""
    expected, got = set(expected), set(got)
    missing = sorted(expected - got)
    unexpected = sorted(got - expected)
    return missing, unexpected


def show_keys(keys: List[str], limit: int = 20) -> str:
    """``keys`` comma-separated, the first ``limit`` of them by name.

    Args:
        keys (list[str]): The names, in the order to show.
        limit (int): How many are named; the rest are counted. Defaults to 20.

    Returns:
        str: E.g. ``'a, b ... (+3 more)'``.
    """
    more = f' ... (+{len(keys) - limit} more)' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def format_key_report(source: str,
                      missing: List[str],
                      unexpected: List[str],
                      fmt: Optional[str] = None,
                      limit: int = 20) -> str:
    """One line reporting a strict key check: the file, then the missing and
    the unexpected keys by name."""
    parts = []
    if missing:
        parts.append(
            f'missing keys ({len(missing)}): {show_keys(missing, limit)}')
    if unexpected:
        parts.append(f'unexpected keys ({len(unexpected)}): '
                     f'{show_keys(unexpected, limit)}')
    layout = f' (read as {fmt} layout)' if fmt else ''
    return f'{source}{layout} does not match the model: ' + '; '.join(parts)


@dataclass
class KeyMatch:
    """Outcome of a strict key + shape comparison (:func:`match_keys`).

    Attributes:
        kept (dict): Source tensors to load (``dropped`` removed).
        missing (list[str]): Target keys the source lacks.
        unexpected (list[str]): Source keys the target lacks.
        mismatched (list[str]): ``'key (source shape) vs (target shape)'``.
        allowed_missing (list[str]): Target keys left to the target's own
            initialisation because ``allow`` matches them.
        dropped (list[str]): Source keys not loaded because ``allow`` matches
            them.
    """
    kept: Dict[str, torch.Tensor]
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[str] = field(default_factory=list)
    allowed_missing: List[str] = field(default_factory=list)
    dropped: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every target tensor gets a source tensor of its shape."""
        return not (self.missing or self.unexpected or self.mismatched)


def match_keys(source: Dict[str, torch.Tensor],
               target: Dict[str, torch.Tensor],
               allow: Optional[str] = None) -> KeyMatch:
    """Compare a state dict with the target model's, keys and shapes.

    Args:
        source (dict): Tensors to load.
        target (dict): The target model's ``state_dict()``.
        allow (str, optional): Regex of keys that may legitimately differ:
            matching source keys the target lacks are dropped, matching target
            keys the source lacks are left to the target's initialisation.
            Defaults to None (nothing may differ).

    Returns:
        KeyMatch: What loads, and every difference.
    """
    pattern = re.compile(allow) if allow else None
    missing, unexpected = compare_keys(target, source)
    allowed = [k for k in missing if pattern and pattern.search(k)]
    dropped = [k for k in unexpected if pattern and pattern.search(k)]
    mismatched = [
        f'{k} {tuple(source[k].shape)} vs {tuple(target[k].shape)}'
        for k in sorted(set(source) & set(target))
        if source[k].shape != target[k].shape
    ]
    return KeyMatch(
        kept={
            k: v
            for k, v in source.items() if k not in dropped
        },
        missing=[k for k in missing if k not in allowed],
        unexpected=[k for k in unexpected if k not in dropped],
        mismatched=mismatched,
        allowed_missing=allowed,
        dropped=dropped)
