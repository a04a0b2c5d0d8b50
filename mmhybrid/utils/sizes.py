"""Image, patch and grid sizes given as one number or a pair."""
from typing import Any, Callable, Tuple


def as_pair(value: Any, cast: Callable = int) -> Tuple[Any, Any]:
    """``v`` -> ``(v, v)``; ``(h, w)`` or ``[h, w]`` -> ``(h, w)``; a sequence
    of one value (``--img-size 224``) -> ``(v, v)``; each value cast. A longer
    sequence is a ValueError.

    Args:
        value (int | float | Sequence): A size, a patch size or a grid.
        cast (callable): Applied to both values. Defaults to ``int``.
    """
    if isinstance(value, (list, tuple)):
        if len(value) not in (1, 2):
            raise ValueError(f'expected a number or a pair, got {value}')
        return (cast(value[0]), cast(value[-1]))
    return (cast(value), cast(value))
