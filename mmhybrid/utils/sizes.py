"""Image, patch and grid sizes given as one number or a pair."""
from typing import Any, Callable, Tuple


def as_pair(value: Any, cast: Callable = int) -> Tuple[Any, Any]:
    """``v`` -> ``(v, v)``; ``(h, w)`` or ``[h, w]`` -> ``(h, w)``; a
    one-element sequence (``--img-size 224``) -> ``(v, v)``; each value cast.

    Args:
        value (int | float | Sequence): A size, a patch size or a grid.
        cast (callable): Applied to both values. Defaults to ``int``.
    """
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return (cast(value[0]), cast(value[0]))
        return (cast(value[0]), cast(value[1]))
    return (cast(value), cast(value))
