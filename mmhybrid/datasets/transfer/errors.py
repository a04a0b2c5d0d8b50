"""The error of a dataset file that cannot be read."""
from ..sample_guard import UnreadableImageError


class DatasetFileError(UnreadableImageError):
    """A dataset's annotation or data file is missing, truncated or not in its
    official format; the message names the file and what was expected.

    An :class:`~mmhybrid.datasets.UnreadableImageError` (unreadable dataset
    content, one file named), so ``tools/train.py`` and ``tools/test.py``
    report it as one ``ERROR:`` line and exit with status 1.
    """


def one_line(exc: BaseException) -> str:
    """``'TypeName: first line of the message'``."""
    text = str(exc).strip().splitlines()
    return f'{type(exc).__name__}: {text[0]}' if text else type(exc).__name__
