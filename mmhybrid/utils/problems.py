"""What a check finds: a config key, its value and what is wrong with it.

Each check of mmhybrid is one pure function that returns a list of
:class:`Problem` (empty when all is well). A constructor raises on them
(:func:`raise_problems`); the preflight check of ``tools/train.py``
(:mod:`mmhybrid.engine.preflight`) collects them all, with the keys prefixed
to full config keys, so both say the same thing about the same input.
"""
from typing import Any, Collection, List, NamedTuple, Sequence, Type


class Problem(NamedTuple):
    """One problem with one config value.

    Attributes:
        key (str): The config key, e.g. ``'relation_pairs[1]'`` (relative to
            the component that checks it) or ``'model.relation_pairs[1]'``.
        value (Any): The offending value, as given.
        message (str): What is wrong and what was expected.
    """
    key: str
    value: Any
    message: str

    def __str__(self) -> str:
        return f'{self.key}={self.value!r}: {self.message}'


def choice_problems(key: str, value: Any,
                    choices: Collection) -> List[Problem]:
    """``value`` must be one of ``choices`` (a loss type, a schedule, ...)."""
    if value in choices:
        return []
    return [Problem(key, value, f'expected one of {tuple(choices)}')]


def raise_problems(owner: str,
                   problems: Sequence[Problem],
                   error: Type[Exception] = ValueError) -> None:
    """Raise ``error`` naming ``owner`` and every problem, if there are any.

    Args:
        owner (str): Who checked, e.g. ``'HybridDistill'``.
        problems (Sequence[Problem]): What a check returned.
        error (type): The exception class. Defaults to ``ValueError``.
    """
    if problems:
        raise error(f'{owner}: ' + '; '.join(str(p) for p in problems))
