"""Small builders shared by the run-folder, checkpoint and optimizer tests (importable: conftest puts tests/ on sys.path)."""

from __future__ import annotations

import torch

from darkknowledge.data import Splits
from darkknowledge.models import build_model


class SimulatedKill(BaseException):
    """Stands for the process dying: nothing catches it on the way up."""


def die_after(epoch: int):
    """An ``on_epoch_end`` hook that "kills" the run when ``epoch`` ends."""

    def hook(e, metrics):
        if e == epoch:
            raise SimulatedKill()

    return hook


def three_class_splits(n: int, n_train: int, *, seed: int = 0, val: bool = True) -> Splits:
    """``n`` rows of 5 Gaussian features, 3 classes from two linear rules; the first ``n_train`` rows train."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 5, generator=g)
    y = (X[:, 0] + X[:, 1] > 0).long() + (X[:, 2] > 0.8).long()
    if not val:
        return Splits(X[:n_train], y[:n_train], class_names=["a", "b", "c"])
    return Splits(X[:n_train], y[:n_train], X[n_train:], y[n_train:], class_names=["a", "b", "c"])


def small_mlp(hidden: int, *, dropout: float = 0.0, seed: int = 0):
    """A 5 -> hidden -> 3 MLP."""
    return build_model("mlp", input_shape=(5,), num_classes=3, hidden=[hidden], dropout=dropout, seed=seed)


def run_data(seed: int = 0) -> Splits:
    """The run-folder tests' data: 48 training and 24 validation rows."""
    return three_class_splits(72, 48, seed=seed)


def run_model(seed: int = 0):
    """The run-folder tests' model: 5 -> 6 -> 3 with dropout (so resuming must restore RNG states)."""
    return small_mlp(6, dropout=0.2, seed=seed)
