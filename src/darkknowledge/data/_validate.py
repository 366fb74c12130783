"""Checks that every loaded dataset passes: finite features, integer labels in range, matching lengths."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["DataError", "validate_features", "validate_labels", "validate_pair"]


class DataError(ValueError):
    """Data on disk or from a download is not what was expected (checksum, size, contents)."""


def validate_features(name: str, X: Any) -> np.ndarray:
    """Return ``X`` as a float32 array of shape ``(N, ...)``, or raise naming ``name``.

    Rejects non-arrays of non-numeric type, 0-d arrays, empty arrays and NaN / inf.

    >>> validate_features("X_train", [[1, 2], [3, 4]]).dtype
    dtype('float32')
    """
    X = np.asarray(X)
    if X.dtype == np.bool_ or not np.issubdtype(X.dtype, np.number):
        raise TypeError(f"{name} must hold numbers, got dtype {X.dtype} instead.")
    if np.issubdtype(X.dtype, np.complexfloating):
        raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype} instead.")
    if X.ndim < 1:
        raise ValueError(f"{name} must have a sample axis (ndim >= 1), got a 0-d array instead.")
    if X.shape[0] == 0 or X.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {X.shape} instead.")
    if np.issubdtype(X.dtype, np.floating):
        bad = ~np.isfinite(X)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{name} must be finite, got {int(bad.sum())} NaN or inf values instead "
                f"(first at index {first})."
            )
    return X.astype(np.float32, copy=False)


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
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype} instead.")
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-d (one label per sample), got shape {y.shape} instead.")
    if y.size == 0:
        raise ValueError(f"{name} must not be empty, got 0 labels instead.")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all():
            raise ValueError(f"{name} must be integer class labels, got NaN or inf instead.")
        fractional = y != np.round(y)
        if fractional.any():
            first = int(np.argmax(fractional))
            raise ValueError(
                f"{name} must be integer class labels, got the non-integer value "
                f"{y[first].item()!r} at index {first} instead."
            )
    if y.max() >= 2**62:  # would wrap around (or lose integrality) in int64
        raise ValueError(f"{name} must be class labels, got the value {y.max().item()!r} instead (too large).")
    y = y.astype(np.int64)
    low = int(y.min())
    if low < 0:
        raise ValueError(f"{name} must be class labels >= 0, got {low} instead.")
    if num_classes is not None:
        high = int(y.max())
        if high >= num_classes:
            raise ValueError(
                f"{name} must be class labels in [0, {num_classes - 1}] "
                f"({num_classes} classes), got {high} instead."
            )
    return y


def validate_pair(
    X_name: str, X: Any, y_name: str, y: Any, *, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate features and labels together: also their lengths must agree.

    >>> X, y = validate_pair("X", [[0.5], [1.5]], "y", [1, 0])
    >>> X.shape, y.dtype
    ((2, 1), dtype('int64'))
    """
    X = validate_features(X_name, X)
    y = validate_labels(y_name, y, num_classes=num_classes)
    if X.shape[0] != y.shape[0]:
        raise ValueError(
            f"{X_name} and {y_name} must have the same length, got {X.shape[0]} samples "
            f"and {y.shape[0]} labels instead."
        )
    return X, y
