"""The two containers that data flows through: a loaded ``Dataset`` and the ``Splits`` that training reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


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
    """

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    X_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    class_names: list[str] = field(default_factory=list)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.X_train.shape[1:])

    @property
    def num_classes(self) -> int:
        if self.class_names:
            return len(self.class_names)
        return int(self.y_train.max().item()) + 1
