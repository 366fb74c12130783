"""Data sets, preprocessing and splits: everything between the disk and a training loop.

The usual path is two calls::

    ds = load_dataset("digits")          # NumPy arrays as loaded (Dataset)
    splits = prepare_splits(ds)          # torch tensors, standardised, train/val/test (Splits)

Modules: :mod:`~.load` (names -> loaders), :mod:`~.digits`, :mod:`~.mnist` (MNIST and
Fashion-MNIST: find, download, verify), :mod:`~.idx` (IDX reader), :mod:`~.challenger`,
:mod:`~.user` (``.npz`` / ``.csv``), :mod:`~.preprocessing` (``Standardizer``),
:mod:`~.splits`, :mod:`~.batches` (in-memory minibatches; ``take_rows`` for tensors, memory maps
and dicts), :mod:`~.npy` (a folder of ``.npy`` files opened as memory maps, every file checked),
:mod:`~.adapters` (``as_splits``: tuples, torch datasets / loaders, Hugging Face datasets, tables,
image folders -> ``Splits``).
"""

from ._types import Dataset, Splits
from ._validate import DataError, DatasetUnavailableError
from .idx import read_idx
from .load import DATASETS, load_dataset
from .preprocessing import NotFittedError, Standardizer
from .splits import prepare_splits, train_val_split
from .batches import minibatches, num_rows, take_rows
from .npy import open_npy_folder
from .adapters import TabularEncoder, as_splits

__all__ = [
    "DATASETS",
    "DataError",
    "Dataset",
    "DatasetUnavailableError",
    "NotFittedError",
    "Splits",
    "Standardizer",
    "TabularEncoder",
    "as_splits",
    "load_dataset",
    "minibatches",
    "num_rows",
    "open_npy_folder",
    "prepare_splits",
    "read_idx",
    "take_rows",
    "train_val_split",
]
