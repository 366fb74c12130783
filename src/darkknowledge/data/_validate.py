"""Checks that every loaded dataset passes: finite features, integer labels in range, matching lengths."""

from __future__ import annotations

from typing import Any

import numpy as np
from darkknowledge.errors import InputError, InputTypeError

__all__ = [
    "DataError",
    "DatasetUnavailableError",
    "MAX_CLASSES_FROM_LABELS",
    "check_class_names",
    "check_npy_header",
    "names_from_labels",
    "validate_features",
    "validate_labels",
    "validate_pair",
]


class DataError(InputError):
    """Data on disk or from a download is not what was expected (checksum, size, contents)."""


class DatasetUnavailableError(DataError, OSError):
    """A built-in data set is neither on disk nor downloadable (offline, server down, HTTP error).

    A ``ValueError`` (the command line prints its one-line message) and an ``OSError`` (what a
    failed download raised before, so ``except OSError`` still catches it).
    """


#: Without ``class_names`` the number of classes is the largest label + 1; beyond this it is
#: taken for labels that are not class indices (ids, codes) rather than a real class count.
MAX_CLASSES_FROM_LABELS = 100_000


def names_from_labels(file: str, what: str, high: int) -> list[str]:
    """``["0", ..., str(high)]``, or a ``ValueError`` if ``high + 1`` classes is implausibly many.

    >>> names_from_labels("data.npz", "y", 2)
    ['0', '1', '2']
    """
    if high + 1 > MAX_CLASSES_FROM_LABELS:
        raise InputError(
            f"{what} in {file} must be class indices 0..C-1, got the label {high} instead, which "
            f"would make {high + 1} classes (at most {MAX_CLASSES_FROM_LABELS} without class_names); "
            "map the labels to 0..C-1."
        )
    return [str(c) for c in range(high + 1)]


def check_class_names(where: str, class_names: Any, y_train: Any = None) -> list[str]:
    """Class names must be distinct and at least two; the training labels must hold two classes.

    ``where`` names the data (a file, a data set) in the message.

    >>> check_class_names("data.npz", ["cat", "dog"], [0, 1, 1])
    ['cat', 'dog']
    >>> check_class_names("data.npz", ["cat", "cat"])
    Traceback (most recent call last):
    ...
    darkknowledge.errors.InputError: class_names of data.npz must be distinct, got 'cat' twice (classes 0 and 1) instead.
    """
    names = [str(n) for n in class_names]
    first: dict[str, int] = {}
    for k, name in enumerate(names):
        if name in first:
            raise InputError(
                f"class_names of {where} must be distinct, got {name!r} twice (classes {first[name]} "
                f"and {k}) instead."
            )
        first[name] = k
    if len(names) < 2:
        raise InputError(
            f"{where} must have at least 2 classes for classification, got {len(names)} "
            f"({', '.join(map(repr, names)) or 'none'}) instead."
        )
    if y_train is not None:
        present = np.unique(np.asarray(y_train))
        if present.size < 2:
            only = int(present[0]) if present.size else None
            label = f"class {only} ({names[only]!r})" if only is not None and 0 <= only < len(names) else "one class"
            raise InputError(
                f"the training labels of {where} must hold at least 2 classes for classification, "
                f"got only {label} instead."
            )
    return names


def check_npy_header(fp: Any, label: str, available: int, *, limit: int | None = None) -> tuple[tuple[int, ...], np.dtype, int]:
    """Read a ``.npy`` header from ``fp`` and check its shape fits the bytes there are.

    ``available`` is the number of bytes of the ``.npy`` data (header included) and ``limit``
    the most bytes the array may take in memory. Returns ``(shape, dtype, data bytes)``; raises
    :class:`DataError` naming ``label`` if the header is unreadable, promises more data than
    the file holds (a crafted shape ``(1e11, 4)``), or more memory than ``limit``. Nothing is
    allocated for the array.
    """
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(fp, max_header_size=1 << 16)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(fp, max_header_size=1 << 16)
        else:
            shape, _, dtype = fmt._read_array_header(fp, version, max_header_size=1 << 16)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as exc:
        raise DataError(f"{label} has an unreadable .npy header ({type(exc).__name__}: {exc}).") from None
    header = fp.tell()
    count = 1
    for d in shape:
        count *= int(d)
    nbytes = count * dtype.itemsize
    if dtype.hasobject:
        raise DataError(
            f"{label} is an object (pickled) array; only numeric arrays are read (pickles are never loaded)."
        )
    if nbytes > available - header:
        raise DataError(
            f"{label} is truncated or corrupt: its header promises shape {tuple(shape)} of {dtype} "
            f"({nbytes} bytes), but the file holds {max(available - header, 0)} bytes of data."
        )
    if limit is not None and nbytes > limit:
        raise DataError(
            f"{label} has shape {tuple(shape)} of {dtype}: {nbytes} bytes, more than this machine's "
            f"memory ({limit} bytes); expected an array that fits in memory."
        )
    return tuple(int(d) for d in shape), dtype, nbytes


def _where(source: str | None, row: int) -> str:
    return f"; the first bad row is row {row} of {source}" if source else ""


def validate_features(name: str, X: Any, *, source: str | None = None) -> np.ndarray:
    """Return ``X`` as a float32 array of shape ``(N, ...)``, or raise naming ``name``.

    Rejects non-arrays of non-numeric type, 0-d arrays, empty arrays and NaN / inf, checked
    **after** the cast to float32, so values beyond float32's range (``1e39``) are refused too
    rather than becoming inf later. ``source`` (a file name, a split) is named in the message
    with the first bad row.

    >>> validate_features("X_train", [[1, 2], [3, 4]]).dtype
    dtype('float32')
    """
    X = np.asarray(X)
    if X.dtype == np.bool_ or not np.issubdtype(X.dtype, np.number):
        raise InputTypeError(f"{name} must hold numbers, got dtype {X.dtype} instead.")
    if np.issubdtype(X.dtype, np.complexfloating):
        raise InputTypeError(f"{name} must hold real numbers, got dtype {X.dtype} instead.")
    if X.ndim < 1:
        raise InputError(f"{name} must have a sample axis (ndim >= 1), got a 0-d array instead.")
    if X.shape[0] == 0 or X.size == 0:
        raise InputError(f"{name} must not be empty, got shape {X.shape} instead.")
    if np.issubdtype(X.dtype, np.floating):
        bad = ~np.isfinite(X)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InputError(
                f"{name} must be finite, got {int(bad.sum())} NaN or inf values instead "
                f"(first at index {first}){_where(source, first[0])}."
            )
    with np.errstate(over="ignore"):
        X32 = X.astype(np.float32, copy=False)
    if np.issubdtype(X.dtype, np.floating) and X.dtype.itemsize > 4:
        bad = ~np.isfinite(X32)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            limit = float(np.finfo(np.float32).max)
            raise InputError(
                f"{name} must be finite as float32 (|x| <= {limit:.7g}), got {int(bad.sum())} values "
                f"beyond that range instead (first at index {first}: {X[first].item()!r})"
                f"{_where(source, first[0])}; rescale the features."
            )
    return X32


def validate_labels(name: str, y: Any, *, num_classes: int | None = None) -> np.ndarray:
    """Return ``y`` as an int64 array of shape ``(N,)`` with values in ``[0, num_classes)``.

    Float labels are accepted when every value is integral (``3.0``); anything else, a
    negative label, or a label ``>= num_classes`` raises ``ValueError`` naming ``name``.

    >>> validate_labels("y_train", [0.0, 2.0, 1.0], num_classes=3)
    array([0, 2, 1])
    """
    y = np.asarray(y)
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.number) or np.issubdtype(
        y.dtype, np.complexfloating
    ):
        raise InputTypeError(f"{name} must hold integer class labels, got dtype {y.dtype} instead.")
    if y.ndim != 1:
        raise InputError(f"{name} must be 1-d (one label per sample), got shape {y.shape} instead.")
    if y.size == 0:
        raise InputError(f"{name} must not be empty, got 0 labels instead.")
    if np.issubdtype(y.dtype, np.floating):
        finite = np.isfinite(y)
        if not finite.all():
            first = int(np.argmin(finite))
            raise InputError(
                f"{name} must be integer class labels, got NaN or inf instead ({y[first].item()!r} at "
                f"index {first})."
            )
        fractional = y != np.round(y)
        if fractional.any():
            first = int(np.argmax(fractional))
            raise InputError(
                f"{name} must be integer class labels, got the non-integer value "
                f"{y[first].item()!r} at index {first} instead."
            )
    low = y.min()
    if low < 0:  # before the cast: -1e30 would wrap around in int64
        shown = int(low) if low > -(2**62) else low.item()
        raise InputError(f"{name} must be class labels >= 0, got {shown} instead.")
    if y.max() >= 2**62:  # would wrap around (or lose integrality) in int64
        raise InputError(f"{name} must be class labels, got the value {y.max().item()!r} instead (too large).")
    y = y.astype(np.int64)
    low = int(y.min())
    if low < 0:
        raise InputError(f"{name} must be class labels >= 0, got {low} instead.")
    if num_classes is not None:
        high = int(y.max())
        if high >= num_classes:
            raise InputError(
                f"{name} must be class labels in [0, {num_classes - 1}] "
                f"({num_classes} classes), got {high} instead."
            )
    return y


def validate_pair(
    X_name: str, X: Any, y_name: str, y: Any, *, num_classes: int | None = None, source: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate features and labels together: also their lengths must agree.

    >>> X, y = validate_pair("X", [[0.5], [1.5]], "y", [1, 0])
    >>> X.shape, y.dtype
    ((2, 1), dtype('int64'))
    """
    X = validate_features(X_name, X, source=source)
    y = validate_labels(y_name, y, num_classes=num_classes)
    if X.shape[0] != y.shape[0]:
        raise InputError(
            f"{X_name} and {y_name} must have the same length, got {X.shape[0]} samples "
            f"and {y.shape[0]} labels instead."
        )
    return X, y
