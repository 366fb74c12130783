"""The two containers that data flows through: a loaded ``Dataset`` and the ``Splits`` that training reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from darkknowledge.errors import InputError, InputTypeError


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: NumPy arrays as they come from disk or from scikit-learn.

    Attributes:
        name: the dataset's name (``"digits"``, ``"fashion-mnist"``, a file stem, ...).
        X_train: ``(N, *input_shape)`` float32 features.
        y_train: ``(N,)`` int64 class ids in ``[0, num_classes)`` (or float targets for regression).
        X_test, y_test: the official test split, same layout (``None`` when the data has none).
        class_names: one name per class (empty for regression data).
        metadata: where it came from: ``source``, ``sha256`` of the files, ``shape``, ...
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray | None
    y_test: np.ndarray | None
    class_names: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. ``(1, 28, 28)`` or ``(64,)``."""
        return tuple(self.X_train.shape[1:])

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(class_names)``)."""
        return len(self.class_names)


@dataclass(frozen=True)
class Splits:
    """What a training loop reads: float32 feature tensors and int64 label tensors, already preprocessed.

    Shapes: ``X_* (N_*, *input_shape)``, ``y_* (N_*,)``. ``X_val`` / ``X_test`` may be ``None``.
    ``X_*`` may also be a ``dict`` of equal-length tensors (text models: ``{"input_ids": (N, T)
    int64, "attention_mask": (N, T)}``), which a model receives as keyword arguments; gather rows
    of either kind with :func:`darkknowledge.data.batches.take_rows` and count them with
    :func:`~darkknowledge.data.batches.num_rows` (``len`` of a dict counts its keys).

    Optional, recorded by :func:`darkknowledge.data.as_splits` so new data can be prepared the same
    way: ``feature_names`` (one per feature column, ``"colour=red"`` for a one-hot column) and
    ``encoder`` (a :class:`~darkknowledge.data.adapters.TabularEncoder`, ``None`` for other data).

    Example:
        >>> s = Splits(X_train={"input_ids": torch.zeros(3, 5, dtype=torch.long)}, y_train=torch.tensor([0, 1, 0]))
        >>> s.input_shape, s.num_classes
        ({'input_ids': (5,)}, 2)
    """

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    X_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    class_names: list[str] = field(default_factory=list)
    feature_names: list[str] | None = None
    encoder: Any = None

    def __post_init__(self) -> None:
        for part in ("train", "val", "test"):
            X, y = getattr(self, f"X_{part}"), getattr(self, f"y_{part}")
            if not isinstance(X, dict):
                continue  # tensors and memory maps are checked where they are read, as before
            if not X:
                raise InputError(f"X_{part} must be a non-empty dict of tensors, got an empty dict instead.")
            lengths = {}
            for key, value in X.items():
                if not isinstance(key, str) or not isinstance(value, (torch.Tensor, np.ndarray)) or value.ndim < 1:
                    raise InputTypeError(
                        f"X_{part} must map names to (N, ...) tensors, got {key!r}: "
                        f"{type(value).__name__} instead."
                    )
                lengths[key] = int(value.shape[0])
            if len(set(lengths.values())) != 1:
                raise InputError(f"X_{part} must hold tensors of one length (rows), got lengths {lengths} instead.")
            n = next(iter(lengths.values()))
            if y is not None and len(y) != n:
                raise InputError(
                    f"X_{part} and y_{part} must have the same number of rows, got {n} and {len(y)} instead."
                )

    @property
    def input_shape(self) -> tuple[int, ...] | dict[str, tuple[int, ...]]:
        """Shape of one sample, e.g. ``(64,)``; for dict features one shape per key, ``{"input_ids": (T,)}``."""
        if isinstance(self.X_train, dict):
            return {k: tuple(v.shape[1:]) for k, v in self.X_train.items()}
        return tuple(self.X_train.shape[1:])

    @property
    def num_classes(self) -> int:
        if self.class_names:
            return len(self.class_names)
        return int(self.y_train.max().item()) + 1
