"""Data sets, preprocessing and splits: everything between the disk and a training loop.

The usual path is two calls::

    ds = load_dataset("digits")          # NumPy arrays as loaded (Dataset)
    splits = prepare_splits(ds)          # torch tensors, standardised, train/val/test (Splits)

Modules: :mod:`~.load` (names -> loaders), :mod:`~.digits`, :mod:`~.mnist` (MNIST and
Fashion-MNIST: find, download, verify), :mod:`~.idx` (IDX reader), :mod:`~.challenger`,
:mod:`~.user` (``.npz`` / ``.csv``), :mod:`~.preprocessing` (``Standardizer``),
:mod:`~.splits`, :mod:`~.batches` (in-memory minibatches), :mod:`~.npy` (a folder of ``.npy``
files opened as memory maps, every file checked).
"""

from ._types import Dataset, Splits
from ._validate import DataError, DatasetUnavailableError
from .idx import read_idx
from .load import DATASETS, load_dataset
from .preprocessing import NotFittedError, Standardizer
from .splits import prepare_splits, train_val_split
from .batches import minibatches
from .npy import open_npy_folder

__all__ = [
    "DATASETS",
    "DataError",
    "Dataset",
    "DatasetUnavailableError",
    "NotFittedError",
    "Splits",
    "Standardizer",
    "load_dataset",
    "minibatches",
    "open_npy_folder",
    "prepare_splits",
    "read_idx",
    "train_val_split",
]
