"""The few small validators of user input, whose messages say what was expected and what came.

Every public function validates its arguments with these, so that bad input gets a
``ValueError`` / ``TypeError`` naming the argument, never an ``assert`` or a silent clip.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any
from darkknowledge.errors import InputError, InputTypeError, MissingFileError


#: The largest learning rate accepted anywhere (configs, ``fit``): a step this large already diverges
#: with SGD; 1e300 overflowed to inf inside torch's optimizer.
MAX_LR = 100.0

#: The temperatures the distillation loss is exact for (``darkknowledge.losses.check_temperature``):
#: below, float32 underflows; above, the loss has long reached its logit-matching limit.
TEMPERATURE_RANGE = (1e-6, 1e30)

def check_positive_finite(name: str, value: Any) -> float:
    """Return ``float(value)`` if it is a finite number > 0, else raise naming ``name``.

    >>> check_positive_finite("temperature", 2)
    2.0
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputTypeError(f"{name} must be a number, got {type(value).__name__} instead.")
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"{name} must be a finite number > 0, got {value!r} instead.")
    return float(value)


def check_in_range(name: str, value: Any, low: float, high: float) -> float:
    """Return ``float(value)`` if ``low <= value <= high``, else raise naming ``name``.

    >>> check_in_range("alpha", 0.1, 0.0, 1.0)
    0.1
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputTypeError(f"{name} must be a number, got {type(value).__name__} instead.")
    if not (low <= value <= high):  # also rejects NaN
        raise InputError(f"{name} must be in [{low}, {high}], got {value!r} instead.")
    return float(value)


def check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an ``int >= minimum``, else raise naming ``name``.

    >>> check_positive_int("epochs", 3)
    3
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputTypeError(f"{name} must be an integer, got {type(value).__name__} instead.")
    if value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r} instead.")
    return value


def check_one_of(name: str, value: Any, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise listing the valid ones.

    >>> check_one_of("reduction", "mean", ("mean", "sum", "none"))
    'mean'
    """
    choices = tuple(choices)
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise InputError(f"{name} must be one of {valid}; got {value!r} instead.")
    return value


def check_regular_file(what: str, path: Any) -> Any:
    """Return ``path`` if it is an existing regular file, else raise saying what it is instead.

    A missing path raises ``FileNotFoundError``; a folder, a FIFO, a socket or a device raises
    ``ValueError``. Uses ``stat``, never ``open``: opening a FIFO would block forever.

    >>> check_regular_file("Data file", "/")
    Traceback (most recent call last):
    ...
    darkknowledge.errors.InputError: Data file '/' is a folder: expected a regular file.
    """
    import os
    import stat

    label = f"{what} {str(path)!r}"
    if str(path) == "":
        raise InputError(f"{what} must not be empty: expected the path of a file.")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise MissingFileError(f"{label} does not exist.") from None
    except NotADirectoryError:
        raise MissingFileError(f"{label} does not exist (a part of its path is a file, not a folder).") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{label} is a folder: expected a regular file.")
    if not stat.S_ISREG(mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else (
            "a socket" if stat.S_ISSOCK(mode) else "a device")
        raise InputError(f"{label} is {kind}, not a regular file: expected a regular file.")
    return path


def memory_limit_bytes() -> int:
    """The most bytes one array read from a file may need: this machine's physical memory.

    A header that promises more (a crafted ``.npy`` of shape ``(1e11, 4)``) is refused before
    anything is allocated. ``2**40`` where the platform does not say.
    """
    import os

    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return 1 << 40
