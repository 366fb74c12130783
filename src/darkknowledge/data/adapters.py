"""``as_splits``: the data people have, turned into the in-memory :class:`Splits` training reads.

Accepted (for ``data``, and for ``val`` / ``test`` the same kinds):

* a :class:`Splits` (returned as it is);
* a tuple ``(X, y)`` of NumPy arrays or torch tensors; ``X`` may be a dict of them
  (``{"input_ids": ..., "attention_mask": ...}``);
* a torch ``Dataset`` yielding ``(x, y)`` tuples or dict samples (``{"input_ids": ..., "label": ...}``);
* a torch ``DataLoader`` with a sequential sampler (``shuffle=False``);
* a Hugging Face ``datasets.Dataset`` (built in memory, or a folder saved by ``save_to_disk``: a
  ``DatasetDict`` folder gives its ``"train"`` part; ``pip install "darkknowledge[hf]"``): columns by name;
* a path: ``.npz`` / ``.csv`` (as :func:`~darkknowledge.data.load_dataset` reads them; a CSV with
  non-numeric columns is encoded, see below), ``.parquet`` (``pip install pyarrow``), a folder of
  ``.npy`` files (:func:`~darkknowledge.data.open_npy_folder`, memory-mapped) or an image folder in
  torchvision's ``ImageFolder`` layout (``root/<class>/<image>.png``, read with Pillow).

**Everything is read once and kept as tensors** (the fast path: whole-tensor minibatches, teacher
logits computed once). A ``Dataset`` / ``DataLoader`` is iterated a single time, so a random
transform in it (augmentation) is applied once and then *frozen*; a ``DataLoader`` that shuffles
is refused, because its rows would not come in a reproducible order (precomputed teacher logits
are aligned with the rows). darkknowledge reshuffles the rows itself every epoch.

**Features** become float32 (checked finite after the cast); in a dict, integer tensors (token
ids, masks) stay int64 and booleans become int64. **Labels** must be integer class ids ``>= 0`` or
strings; strings are mapped to ids in sorted order (``class_names`` records them).

**Tables** (CSV, parquet): a numeric column is one float feature; any other column is
*categorical*, one-hot encoded by default (``categorical="onehot"``: one 0/1 feature per category
seen in the training data, named ``"column=value"``; an unseen category in val / test / new data is
a row of zeros) or ordinal (``categorical="ordinal"``: the category's index in sorted order, -1 when
unseen). The categories are recorded in a :class:`TabularEncoder` on ``Splits.encoder`` and applied
unchanged to ``val`` / ``test`` and to new data (``splits.encoder.transform(rows)``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from darkknowledge._checks import check_in_range, check_one_of
from darkknowledge.errors import InputError, InputTypeError, MissingFileError

from ._types import Splits
from ._validate import names_from_labels, validate_features, validate_labels
from .batches import num_rows, take_rows
from .preprocessing import Standardizer

__all__ = ["TabularEncoder", "as_splits"]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_LABEL_KEYS = ("label", "labels")
_TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def _require(module: str, install: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(f"reading this data needs {module!r}, which is not installed: run {install}.") from None


# ----------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class TabularEncoder:
    """The column encoding of a table, fitted on its training rows and applied unchanged to any other rows.

    Attributes:
        columns: the feature columns, in order (the label column excluded).
        categories: for each categorical column, its categories (sorted strings) seen in training.
        mode: ``"onehot"`` or ``"ordinal"``.
        feature_names: one per output feature: the column name, or ``"column=category"`` (one-hot).

    Example:
        >>> enc = TabularEncoder.fit({"size": ["1.5", "2"], "colour": ["red", "blue"]})
        >>> enc.feature_names
        ['size', 'colour=blue', 'colour=red']
        >>> enc.transform({"size": [3.0], "colour": ["red"]}).tolist()
        [[3.0, 0.0, 1.0]]
    """

    columns: tuple[str, ...]
    categories: dict[str, tuple[str, ...]]
    mode: str = "onehot"

    @classmethod
    def fit(cls, columns: Mapping[str, Sequence[Any]], *, mode: str = "onehot") -> TabularEncoder:
        """Learn which columns are numeric and the categories of the others from ``{name: values}``."""
        mode = check_one_of("categorical", mode, ("onehot", "ordinal"))
        categories = {}
        for name, values in columns.items():
            if _numeric(values) is None:
                categories[name] = tuple(sorted({_category(v) for v in values}))
        return cls(columns=tuple(columns), categories=categories, mode=mode)

    @property
    def feature_names(self) -> list[str]:
        names: list[str] = []
        for col in self.columns:
            if col in self.categories and self.mode == "onehot":
                names.extend(f"{col}={c}" for c in self.categories[col])
            else:
                names.append(col)
        return names

    def transform(self, columns: Mapping[str, Sequence[Any]], *, source: str = "data") -> np.ndarray:
        """``(N, F)`` float32 features of the rows ``{name: values}`` (every fitted column needed)."""
        missing = [c for c in self.columns if c not in columns]
        if missing:
            raise InputError(f"{source} must have the columns {list(self.columns)}, got none named {missing} instead.")
        blocks = []
        for col in self.columns:
            values = columns[col]
            if col not in self.categories:
                numeric = _numeric(values)
                if numeric is None:
                    bad = next(v for v in values if _numeric([v]) is None)
                    raise InputError(
                        f"column {col!r} of {source} must hold numbers (it did in the training data), "
                        f"got {bad!r} instead."
                    )
                blocks.append(numeric[:, None])
                continue
            index = {c: k for k, c in enumerate(self.categories[col])}
            ids = np.asarray([index.get(_category(v), -1) for v in values], dtype=np.int64)  # (N,), -1 unseen
            if self.mode == "ordinal":
                blocks.append(ids[:, None].astype(np.float64))
            else:
                onehot = np.zeros((len(ids), len(index)), dtype=np.float64)  # (N, K)
                seen = ids >= 0
                onehot[np.nonzero(seen)[0], ids[seen]] = 1.0
                blocks.append(onehot)
        X = np.concatenate(blocks, axis=1) if blocks else np.zeros((0, 0))
        return validate_features(f"the features of {source}", X, source=source)


def _category(v: Any) -> str:
    return "" if v is None else str(v).strip()


def _numeric(values: Sequence[Any]) -> np.ndarray | None:
    """``values`` as float64, or ``None`` if one is not a number (a missing value is not)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "biuf":
        return arr.astype(np.float64)
    out = np.empty(len(arr), dtype=np.float64)
    for i, v in enumerate(arr.tolist()):
        if isinstance(v, bool):
            out[i] = float(v)
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            return None
    return out


def _read_csv_columns(path: Path) -> dict[str, list[str]]:
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = [row for row in csv.reader(handle) if row]
    except UnicodeDecodeError as exc:
        raise InputError(f"{path.name} must be UTF-8 text, got a byte it cannot decode ({exc}).") from None
    if len(rows) < 2:
        raise InputError(f"{path.name} must have a header row and data rows, got {len(rows)} rows instead.")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header):
        raise InputError(f"the columns of {path.name} must have distinct names, got {header} instead.")
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise InputError(f"{path.name} line {line} has {len(row)} fields: expected {len(header)} like the header.")
    return {h: [row[i] for row in rows[1:]] for i, h in enumerate(header)}


def _read_parquet_columns(path: Path) -> dict[str, list[Any]]:
    pq = _require("pyarrow.parquet", 'pip install pyarrow (or pip install "darkknowledge[tabular]")')
    table = pq.read_table(path)
    return {name: table.column(name).to_pylist() for name in table.column_names}


def _table_part(columns: dict[str, list[Any]], label: str | None, source: str) -> tuple[dict[str, list[Any]], list[Any]]:
    label = "label" if label is None else label
    if label not in columns:
        raise InputError(f"label must be one of the columns of {source}, {list(columns)}; got {label!r} instead.")
    features = {k: v for k, v in columns.items() if k != label}
    if not features:
        raise InputError(f"{source} must have at least one feature column besides the label {label!r}.")
    return features, columns[label]


# ----------------------------------------------------------------------------- labels and features


class _Labels:
    """Maps raw labels (ints or strings) to class ids; the string mapping is learnt from the training part."""

    def __init__(self, class_names: Sequence[str] | None) -> None:
        self.names = None if class_names is None else [str(c) for c in class_names]
        self.strings = False

    def __call__(self, name: str, y: Any, *, train: bool) -> np.ndarray:
        if isinstance(y, torch.Tensor):
            y = y.detach().cpu().numpy()
        arr = np.asarray(y)
        if arr.dtype.kind in "USO" and arr.size and all(isinstance(v, str) for v in arr.reshape(-1).tolist()):
            if train and self.names is None:
                self.names = sorted({str(v) for v in arr.tolist()})
                self.strings = True
            if self.names is None:
                raise InputError(f"{name} must be integer class ids like the training labels, got strings instead.")
            index = {c: k for k, c in enumerate(self.names)}
            unknown = sorted({str(v) for v in arr.tolist()} - set(index))
            if unknown:
                raise InputError(
                    f"{name} must hold the classes {self.names}, got the unknown label {unknown[0]!r} instead."
                )
            return np.asarray([index[str(v)] for v in arr.tolist()], dtype=np.int64)
        return validate_labels(name, arr, num_classes=None if self.names is None or not self.strings else len(self.names))


def _features(name: str, X: Any) -> torch.Tensor | dict[str, torch.Tensor]:
    """Float32 tensor (checked finite), or a dict whose integer / bool values stay int64."""
    if isinstance(X, Mapping):
        if not X:
            raise InputError(f"{name} must be a non-empty dict of arrays, got an empty dict instead.")
        out = {}
        for key, value in X.items():
            if isinstance(value, torch.Tensor):
                value = value.detach().cpu().numpy()
            value = np.asarray(value)
            if value.dtype == np.bool_ or value.dtype.kind in "iu":
                if value.ndim < 1 or value.shape[0] == 0:
                    raise InputError(f"{name}[{key!r}] must have shape (N, ...) with N >= 1, got {value.shape} instead.")
                out[str(key)] = torch.from_numpy(np.ascontiguousarray(value.astype(np.int64)))
            else:
                out[str(key)] = torch.from_numpy(np.ascontiguousarray(validate_features(f"{name}[{key!r}]", value)))
        lengths = {k: int(v.shape[0]) for k, v in out.items()}
        if len(set(lengths.values())) != 1:
            raise InputError(f"{name} must hold arrays of one length (rows), got lengths {lengths} instead.")
        return out
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    return torch.from_numpy(np.ascontiguousarray(validate_features(name, X)))


def _stack(name: str, items: list[Any]) -> Any:
    first = items[0]
    if isinstance(first, Mapping):
        return {k: _stack(f"{name}[{k!r}]", [it[k] for it in items]) for k in first}
    try:
        return np.stack([v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for v in items])
    except ValueError as exc:
        raise InputError(f"{name} must have one shape in every sample, got samples that differ ({exc}).") from None


def _concat(name: str, batches: list[Any]) -> Any:
    first = batches[0]
    if isinstance(first, Mapping):
        return {k: _concat(f"{name}[{k!r}]", [b[k] for b in batches]) for k in first}
    arrays = [b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else np.asarray(b) for b in batches]
    try:
        return np.concatenate(arrays)
    except ValueError as exc:
        raise InputError(f"{name} must have one shape in every batch, got batches that differ ({exc}).") from None


def _split_sample(name: str, sample: Any, label_key: str | None) -> tuple[Any, Any]:
    """``(x, y)`` of one sample or batch: a 2-tuple / list, or a dict holding the label under ``label_key``."""
    if isinstance(sample, Mapping):
        keys = (label_key,) if label_key is not None else _LABEL_KEYS
        key = next((k for k in keys if k in sample), None)
        if key is None:
            raise InputError(
                f"{name} must yield dicts with a label under {' or '.join(map(repr, keys))}, got the keys "
                f"{sorted(sample)} instead; pass label=<key>."
            )
        return {k: v for k, v in sample.items() if k != key}, sample[key]
    if isinstance(sample, (tuple, list)) and len(sample) == 2:
        return sample[0], sample[1]
    raise InputTypeError(
        f"{name} must yield (x, y) pairs or dicts with a label, got {type(sample).__name__}"
        f"{f' of length {len(sample)}' if isinstance(sample, (tuple, list)) else ''} instead."
    )


# ----------------------------------------------------------------------------- readers: one part -> (X, y)


def _from_torch_dataset(name: str, ds: Any, label: str | None) -> tuple[Any, Any]:
    try:
        n = len(ds)
    except TypeError:
        samples = list(ds)  # an IterableDataset: read once
    else:
        samples = [ds[i] for i in range(n)]
    if not samples:
        raise InputError(f"{name} must hold at least one sample, got an empty dataset instead.")
    pairs = [_split_sample(name, s, label) for s in samples]
    return _stack(f"{name} features", [p[0] for p in pairs]), _stack(f"{name} labels", [p[1] for p in pairs]).reshape(-1)


def _from_loader(name: str, loader: Any, label: str | None) -> tuple[Any, Any]:
    from torch.utils.data import SequentialSampler
    from torch.utils.data.dataloader import _InfiniteConstantSampler

    from torch.utils.data import BatchSampler

    batches = loader.batch_sampler
    sampler = batches.sampler if isinstance(batches, BatchSampler) else loader.sampler
    if (batches is not None and not isinstance(batches, BatchSampler)) or not isinstance(
        sampler, (SequentialSampler, _InfiniteConstantSampler)
    ):
        used = type(batches if batches is not None and not isinstance(batches, BatchSampler) else sampler).__name__
        raise InputError(
            f"{name} must be a DataLoader that reads its rows in order (shuffle=False): its rows are read once and "
            f"kept in order, and darkknowledge reshuffles them every epoch; got a {used} instead."
        )
    if isinstance(batches, BatchSampler) and batches.drop_last:
        raise InputError(f"{name} must be a DataLoader with drop_last=False (every row is read once), got drop_last=True.")
    pairs = [_split_sample(name, batch, label) for batch in loader]
    if not pairs:
        raise InputError(f"{name} must yield at least one batch, got none instead.")
    return _concat(f"{name} features", [p[0] for p in pairs]), _concat(f"{name} labels", [p[1] for p in pairs]).reshape(-1)


def _from_hf(name: str, ds: Any, label: str | None, features: Sequence[str] | None, text: str | None, tokenizer: Any) -> tuple[Any, Any, list[str] | None]:
    columns = list(ds.column_names)
    key = label if label is not None else next((k for k in _LABEL_KEYS if k in columns), None)
    if key is None or key not in columns:
        raise InputError(f"label must be one of the columns of {name}, {columns}; got {label!r} instead.")
    names = None
    feature = ds.features.get(key) if hasattr(ds, "features") else None
    if feature is not None and hasattr(feature, "names"):  # a ClassLabel column
        names = list(feature.names)
    y = np.asarray(ds[key])
    if text is not None:
        if text not in columns:
            raise InputError(f"text must be one of the columns of {name}, {columns}; got {text!r} instead.")
        if tokenizer is None:
            raise InputError(
                f"text={text!r} needs tokenizer=<callable>: a text column must be turned into token ids "
                "(e.g. a Hugging Face tokenizer), got tokenizer=None instead."
            )
        enc = tokenizer(list(ds[text]), padding=True, truncation=True)
        X = {k: np.asarray(v) for k, v in dict(enc).items()}
        return X, y, names
    if features is None:
        tokens = [k for k in _TOKEN_KEYS if k in columns]
        features = tokens if tokens else [c for c in columns if c != key]
        as_dict = bool(tokens)
    else:
        unknown = [c for c in features if c not in columns]
        if unknown:
            raise InputError(f"features must be columns of {name}, {columns}; got {unknown} instead.")
        as_dict = False
    numpy_ds = ds.with_format("numpy")
    arrays = {c: np.asarray(numpy_ds[c]) for c in features}
    if as_dict:
        return arrays, y, names
    if len(arrays) == 1:
        return next(iter(arrays.values())), y, names
    bad = [c for c, a in arrays.items() if a.ndim != 1]
    if bad:
        raise InputError(f"features of {name} must be scalar columns to be put side by side, got {bad} with arrays instead.")
    return np.stack(list(arrays.values()), axis=1), y, names


def _is_hf_dataset(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "datasets" and hasattr(obj, "column_names")


def _load_image(path: Path, size: tuple[int, int] | None) -> Any:
    Image = _require("PIL.Image", 'pip install pillow')
    try:
        with Image.open(path) as img:
            img.load()
            out = img if img.mode in ("L", "RGB") else img.convert("RGB")
            if size is not None and out.size != (size[1], size[0]):
                out = out.resize((size[1], size[0]), Image.BILINEAR)
            return out.copy()
    except OSError as exc:
        raise InputError(f"{path} must be a readable PNG or JPEG image, got an error reading it ({exc}).") from None


def _from_image_folder(root: Path, image_size: Any, class_names: list[str] | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes = folders if class_names is None else list(class_names)  # val / test: the training classes
    unknown = sorted(set(folders) - set(classes))
    if unknown:
        raise InputError(f"the class folders of {root} must be among the classes {classes}, got {unknown} instead.")
    files, labels = [], []
    for k, c in enumerate(classes):
        if c not in folders:
            continue
        found = sorted(p for p in (root / c).iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        files += found
        labels += [k] * len(found)
    if not files:
        raise InputError(f"{root} must hold class folders of .png / .jpg images (ImageFolder layout), got none instead.")
    size = None
    if image_size is not None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(size) != 2 or not all(isinstance(s, int) and s >= 1 for s in size):
            raise InputError(f"image_size must be an int or (height, width) of positive ints, got {image_size!r} instead.")
    images = [_load_image(f, size) for f in files]
    shapes = {(im.size[1], im.size[0]) for im in images}
    if len(shapes) > 1:
        raise InputError(
            f"the images of {root} must all have one size, got {len(shapes)} sizes (e.g. {sorted(shapes)[:3]}) "
            "instead; pass image_size=(height, width) to resize them."
        )
    gray = all(im.mode == "L" for im in images)
    arrays = [np.asarray(im if gray or im.mode == "RGB" else im.convert("RGB")) for im in images]
    if not gray:
        arrays = [np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    X = np.stack(arrays).astype(np.float32) / 255.0  # (N, H, W) or (N, H, W, 3), in [0, 1]
    X = X[:, None] if gray else X.transpose(0, 3, 1, 2)  # (N, C, H, W)
    return np.ascontiguousarray(X), np.asarray(labels, dtype=np.int64), classes


# ----------------------------------------------------------------------------- as_splits


def _read_part(
    name: str, data: Any, *, label: str | None, features: Sequence[str] | None, text: str | None, tokenizer: Any,
    encoder: TabularEncoder | None, categorical: str, image_size: Any, class_names: list[str] | None,
) -> dict[str, Any]:
    """One part (train, val or test) as ``{"X", "y", "class_names", "encoder", "splits"}``."""
    from torch.utils.data import DataLoader
    from torch.utils.data import Dataset as TorchDataset
    from torch.utils.data import IterableDataset

    out: dict[str, Any] = {"class_names": None, "encoder": encoder, "splits": None}
    if isinstance(data, tuple):
        if len(data) != 2:
            raise InputError(f"{name} as a tuple must be (X, y), got a tuple of length {len(data)} instead.")
        out["X"], out["y"] = data
    elif isinstance(data, DataLoader):
        out["X"], out["y"] = _from_loader(name, data, label)
    elif isinstance(data, (TorchDataset, IterableDataset)):
        out["X"], out["y"] = _from_torch_dataset(name, data, label)
    elif _is_hf_dataset(data):
        out["X"], out["y"], out["class_names"] = _from_hf(name, data, label, features, text, tokenizer)
    elif isinstance(data, (str, os.PathLike)):
        if not str(data).strip():  # Path("") is ".": never read the current folder for an empty path
            raise InputError(f"{name} must be a path to a data file or folder, got an empty path {str(data)!r} instead.")
        path = Path(data)
        if not path.exists():
            raise MissingFileError(f"{name} {str(path)!r} does not exist (expected a data file or folder).")
        suffix = path.suffix.lower()
        if path.is_dir():
            if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
                hf = _require("datasets", 'pip install "darkknowledge[hf]"')
                loaded = hf.load_from_disk(str(path))
                if isinstance(loaded, Mapping):  # a DatasetDict: its "train" part (val / test: pass path/<part>)
                    if "train" not in loaded:
                        raise InputError(f"{name} {str(path)!r} must hold a 'train' part, got {sorted(loaded)} instead.")
                    loaded = loaded["train"]
                out["X"], out["y"], out["class_names"] = _from_hf(name, loaded, label, features, text, tokenizer)
                return out
            if (path / "X_train.npy").exists():
                from .npy import open_npy_folder

                out["splits"] = open_npy_folder(path, class_names=class_names)
                return out
            out["X"], out["y"], out["class_names"] = _from_image_folder(path, image_size, class_names)
        elif suffix in (".csv", ".parquet"):
            columns = _read_csv_columns(path) if suffix == ".csv" else _read_parquet_columns(path)
            feats, y = _table_part(columns, label, path.name)
            if encoder is None:
                encoder = TabularEncoder.fit(feats, mode=categorical)
            out["X"], out["y"], out["encoder"] = encoder.transform(feats, source=path.name), y, encoder
        elif suffix == ".npz":
            from .load import load_dataset

            ds = load_dataset(path)
            out["X"], out["y"], out["class_names"] = ds.X_train, ds.y_train, list(ds.class_names)
            if ds.X_test is not None:
                out["test"] = (ds.X_test, ds.y_test)
        else:
            raise InputError(
                f"{name} must be a .npz, .csv or .parquet file, a folder of .npy files or an image folder, "
                f"got {str(path)!r} instead."
            )
    else:
        raise InputTypeError(
            f"{name} must be a Splits, a tuple (X, y), a torch Dataset or DataLoader, a Hugging Face Dataset or a "
            f"path, got {type(data).__name__} instead."
        )
    return out


def as_splits(
    data: Any,
    *,
    val: Any = None,
    test: Any = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    stratify: bool = True,
    label: str | None = None,
    features: Sequence[str] | None = None,
    text: str | None = None,
    tokenizer: Any = None,
    class_names: Sequence[str] | None = None,
    categorical: str = "onehot",
    image_size: int | tuple[int, int] | None = None,
    standardize: bool = False,
) -> Splits:
    """Turn the data people have into the in-memory :class:`Splits` a training loop reads (see the module doc).

    Args:
        data: the training data: a :class:`Splits`, ``(X, y)``, a torch ``Dataset`` or ``DataLoader``,
            a Hugging Face ``datasets.Dataset`` or a path (``.npz``, ``.csv``, ``.parquet``, a folder
            of ``.npy`` files, an image folder).
        val, test: optional held-out parts, of any kind ``data`` may be (a table is encoded with
            the training part's categories; string labels mapped with the training part's classes).
        val_fraction: without ``val``: the share of ``data`` held out for validation by a seeded,
            stratified split (:func:`~darkknowledge.data.train_val_split`); ``0`` keeps every row
            for training (``X_val = None``).
        seed, stratify: of that split.
        label: the label column (tables, Hugging Face) or dict key (dict samples); default
            ``"label"`` (``"label"`` or ``"labels"`` for dicts and Hugging Face).
        features: Hugging Face only: the feature columns (default: the token columns
            ``input_ids`` / ``attention_mask`` / ``token_type_ids`` if present, as a dict, else all
            columns but the label, side by side).
        text, tokenizer: Hugging Face only: a text column and a callable ``tokenizer(list_of_str,
            padding=True, truncation=True) -> {"input_ids": ..., ...}`` turning it into token ids.
        class_names: one name per class (default: sorted string labels, a ``ClassLabel``'s names,
            the image folders' names, or ``"0" .. "C-1"``).
        categorical: tables only: ``"onehot"`` (default) or ``"ordinal"``.
        image_size: image folders only: resize every image to ``(height, width)`` (an int: square);
            without it all images must have one size.
        standardize: fit a :class:`~darkknowledge.data.Standardizer` on the training part and apply it
            to every part (tensor features only; not dicts, not memory maps).

    Returns:
        :class:`Splits`: ``X_* (N, ...)`` float32 tensors (or dicts of tensors), ``y_* (N,)`` int64,
        ``class_names``, and for tables ``feature_names`` and ``encoder``.

    Raises:
        InputError / InputTypeError: naming the argument, for mismatched lengths, labels that are not
            class ids, features not finite as float32, unknown columns, a shuffling DataLoader, ...
        MissingFileError: a path that does not exist.

    Example:
        >>> X, y = np.random.default_rng(0).normal(size=(20, 3)), np.array([0, 1] * 10)
        >>> s = as_splits((X, y), val_fraction=0.2)
        >>> tuple(s.X_train.shape), tuple(s.X_val.shape), s.X_train.dtype, s.class_names
        ((16, 3), (4, 3), torch.float32, ['0', '1'])
        >>> as_splits(s) is s
        True
    """
    if isinstance(data, Splits):
        if val is not None or test is not None:
            raise InputError("val and test apply when data is not a Splits (a Splits holds its own parts), got them both.")
        return data
    val_fraction = check_in_range("val_fraction", val_fraction, 0.0, 1.0)
    if val_fraction >= 1.0:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction!r} instead.")
    if not isinstance(standardize, bool):
        raise InputTypeError(f"standardize must be True or False, got {standardize!r} instead.")
    categorical = check_one_of("categorical", categorical, ("onehot", "ordinal"))
    names = None if class_names is None else [str(c) for c in class_names]
    common = dict(label=label, features=features, text=text, tokenizer=tokenizer, categorical=categorical,
                  image_size=image_size, class_names=names)

    train = _read_part("data", data, encoder=None, **common)
    if train["splits"] is not None:  # a folder of .npy files: memory-mapped, as open_npy_folder opens it
        if val is not None or test is not None:
            raise InputError("val and test apply when data is not a folder of .npy files (it holds its own parts).")
        return train["splits"]
    labels = _Labels(names if names is not None else train["class_names"])
    X_train = _features("data features", train["X"])
    y_train = labels("data labels", train["y"], train=True)
    _check_rows("data", X_train, y_train)

    parts: dict[str, tuple[Any, np.ndarray] | None] = {"val": None, "test": None}
    for part, given in (("val", val), ("test", test if test is not None else train.get("test"))):
        if given is None:
            continue
        known = labels.names if labels.names is not None else names  # classes fixed by the training part
        got = _read_part(part, given, encoder=train["encoder"], **dict(common, class_names=known))
        if got["splits"] is not None:
            raise InputError(f"{part} must not be a folder of .npy files; pass it as data instead.")
        Xp, yp = _features(f"{part} features", got["X"]), labels(f"{part} labels", got["y"], train=False)
        _check_rows(part, Xp, yp)
        parts[part] = (Xp, yp)

    if labels.names is None:
        high = max(int(y.max()) for y in [y_train] + [p[1] for p in parts.values() if p is not None])
        labels.names = names_from_labels("data", "labels", high)
    num_classes = len(labels.names)
    for part, y in [("data", y_train)] + [(k, p[1]) for k, p in parts.items() if p is not None]:
        if int(y.max()) >= num_classes:
            raise InputError(
                f"{part} labels must be class ids in [0, {num_classes}) ({num_classes} classes), got {int(y.max())} instead."
            )

    y_train_t = torch.from_numpy(y_train)
    if parts["val"] is None and val_fraction > 0.0:
        from .splits import train_val_split

        tr, va, _, _ = train_val_split(np.arange(len(y_train)), y_train, val_fraction=val_fraction, seed=seed, stratify=stratify)
        tr_t, va_t = torch.from_numpy(tr), torch.from_numpy(va)
        parts["val"] = (take_rows(X_train, va_t), y_train[va])
        X_train, y_train_t = take_rows(X_train, tr_t), y_train_t[tr_t]

    X_val, y_val = parts["val"] if parts["val"] is not None else (None, None)
    X_test, y_test = parts["test"] if parts["test"] is not None else (None, None)
    if standardize:
        if isinstance(X_train, dict):
            raise InputError("standardize=True applies to tensor features, got a dict of tensors instead.")
        flat = X_train.numpy().astype(np.float64).reshape(len(X_train), -1)
        scaler = Standardizer(eps=max(0.01 * float(flat.var(axis=0).mean()), 1e-8)).fit(X_train.numpy())  # as prepare_splits
        X_train, X_val, X_test = (
            None if X is None else torch.from_numpy(np.ascontiguousarray(scaler.transform(X.numpy()), dtype=np.float32))
            for X in (X_train, X_val, X_test)
        )
    encoder = train["encoder"]
    return Splits(
        X_train=X_train,
        y_train=y_train_t,
        X_val=X_val,
        y_val=None if y_val is None else torch.as_tensor(y_val),
        X_test=X_test,
        y_test=None if y_test is None else torch.as_tensor(y_test),
        class_names=list(labels.names),
        feature_names=None if encoder is None else encoder.feature_names,
        encoder=encoder,
    )


def _check_rows(name: str, X: Any, y: np.ndarray) -> None:
    n = num_rows(X)
    if n != len(y):
        raise InputError(f"the features and labels of {name} must have the same length, got {n} rows and {len(y)} labels instead.")

