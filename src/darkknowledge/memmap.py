"""Soft targets larger than memory: teacher logits streamed to memory-mapped ``.npy`` files.

For a transfer set of millions of rows and thousands of classes the dense ``(N, C)`` logits do
not fit in RAM (2 M x 1000 in float16 is 4 GB). :func:`stream_teacher_logits` runs the teacher
over ``X`` in row blocks (``X`` itself may be a ``np.memmap``) and appends each block of logits
to a ``.npy`` file, so memory holds one block at a time:

* the folder ``<cache_dir>/<fingerprint>.npyset/`` holds ``logits.npy`` ``(N, C)`` -- or, with
  ``top_k``, ``topk_values.npy`` ``(N, k)``, ``topk_indices.npy`` ``(N, k)`` int64 and
  ``rest_logsumexp.npy`` ``(N,)`` (see :func:`darkknowledge.soft_targets.compress_top_k`) -- in
  float16 or float32, and ``meta.json``: the content fingerprint (the same SHA-256 as
  :func:`darkknowledge.soft_targets.fingerprint`, computed block by block), shapes, dtypes and
  the SHA-256 of every array's bytes, computed in the same streaming pass;
* it is written under a temporary name and renamed when complete, so a crash never leaves a
  folder that looks finished;
* :func:`open_npy_splits` opens a user's data set stored as ``.npy`` files (``X_train.npy``,
  ``y_train.npy``, ...) with ``mmap_mode="r"``: :func:`darkknowledge.train.fit` gathers each
  minibatch from the memory map and never copies the whole of ``X``;
* :class:`MemmapSoftTargets` reads it: ``reader[index]`` gathers the rows of a ``(B,)`` index
  tensor from the memory map (in sorted order, for sequential reads) and returns ``(B, C)``
  float32 logits. It has ``shape`` and ``__getitem__(LongTensor) -> Tensor``, the contract
  the distillation loss uses for ``soft[index]``. Rows are read with ``os.pread``
  (:func:`darkknowledge.data.batches.gather_rows`), not through the map, so a pass over a file
  larger than RAM does not accumulate mapped pages in the process's resident set; it also
  unmaps its files every ``release_every`` gathers.

The ``.npy`` files are plain NumPy: ``np.load(path, mmap_mode="r")`` opens them.

Reference: Hinton, Vinyals & Dean, *Distilling the Knowledge in a Neural Network* (2015).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from darkknowledge._checks import check_one_of, check_positive_int
from darkknowledge.data.batches import gather_rows
from darkknowledge.checkpoint import NotARegularFileError, describe_file_type, read_regular_bytes
from darkknowledge.rundir import check_entries, check_path
from darkknowledge.soft_targets import CACHE_DTYPES, check_storable, compress_top_k, dense_logits
from darkknowledge.teachers import as_teacher
from darkknowledge.errors import InputError, InputTypeError, MissingFileError

__all__ = [
    "MemmapSoftTargets",
    "open_npy_splits",
    "iter_row_blocks",
    "stream_fingerprint",
    "stream_teacher_logits",
]

_FORMAT = "darkknowledge-soft-targets-npy"
_VERSION = "1"
_SUFFIX = ".npyset"
_NP_DTYPES = {"float32": np.float32, "float16": np.float16}


def _load_npy(path: Path, **kwargs: Any) -> np.ndarray:
    """``np.load(path, allow_pickle=False, ...)`` of a regular file only: a FIFO would block forever."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MissingFileError(f"{path} does not exist.") from None
    if not stat.S_ISREG(st.st_mode):
        raise NotARegularFileError(f"{path} is {describe_file_type(st.st_mode)}, not a regular .npy file.")
    return np.load(path, allow_pickle=False, **kwargs)


def _check_rows(name: str, X: Any) -> None:
    if not isinstance(X, (np.ndarray, torch.Tensor)):
        raise InputTypeError(f"{name} must be a numpy.ndarray (or memmap) or torch.Tensor, got {type(X).__name__} instead.")
    if X.ndim < 1 or len(X) == 0:
        raise InputError(f"{name} must have shape (N, ...) with N >= 1, got {tuple(X.shape)} instead.")


def iter_row_blocks(X: np.ndarray | torch.Tensor, *, block_rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, X[start:start + block_rows])`` as C-contiguous NumPy arrays, block by block.

    A C-ordered ``np.memmap`` is read with ordinary file reads (``np.fromfile``), not through
    the memory map, so the blocks already read do not stay in the process's resident memory.

    >>> [(s, b.tolist()) for s, b in iter_row_blocks(np.arange(5.0), block_rows=2)]
    [(0, [0.0, 1.0]), (2, [2.0, 3.0]), (4, [4.0])]
    """
    _check_rows("X", X)
    check_positive_int("block_rows", block_rows)
    n = len(X)
    # only a whole-file map (not a view of one, whose .offset is stale) is read by file offset
    if isinstance(X, np.memmap) and X.flags.c_contiguous and X.filename is not None and isinstance(X.base, mmap.mmap):
        row_items = int(np.prod(X.shape[1:], dtype=np.int64))
        row_bytes = row_items * X.dtype.itemsize
        with open(X.filename, "rb") as f:
            for start in range(0, n, block_rows):
                rows = min(block_rows, n - start)
                f.seek(X.offset + start * row_bytes)
                block = np.fromfile(f, dtype=X.dtype, count=rows * row_items)
                yield start, block.reshape((rows, *X.shape[1:]))  # (rows, *input_shape)
        return
    for start in range(0, n, block_rows):
        block = X[start : start + block_rows]
        if isinstance(block, torch.Tensor):
            block = block.detach().cpu().numpy()
        yield start, np.ascontiguousarray(block)


def stream_fingerprint(teacher: Any, X: np.ndarray | torch.Tensor, *, block_rows: int = 65536, **keys: Any) -> str:
    """:func:`darkknowledge.soft_targets.fingerprint`, with ``X`` hashed block by block (same digest).

    >>> net = torch.nn.Linear(3, 2)
    >>> X = np.random.default_rng(0).standard_normal((10, 3)).astype(np.float32)
    >>> from darkknowledge.soft_targets import fingerprint
    >>> stream_fingerprint(net, X, block_rows=3, split="train") == fingerprint(net, X, split="train")
    True
    """
    from darkknowledge.soft_targets import fingerprint

    _check_rows("X", X)
    return fingerprint(teacher, X, block_rows=block_rows, **keys)


class _NpyWriter:
    """Append row blocks to a ``.npy`` file whose header states the final shape; SHA-256 of the data."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.shape, self.dtype = path, shape, np.dtype(dtype)
        self.sha = hashlib.sha256()
        self.rows = 0
        self.f = open(path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_2_0(self.f, header)

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.shape[1:]:
            raise InputError(f"block of shape {block.shape} does not fit {self.path.name} of shape {self.shape}.")
        data = memoryview(block.reshape(-1).view(np.uint8))
        self.f.write(data)
        self.sha.update(data)
        self.rows += len(block)

    def close(self) -> dict[str, Any]:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        if self.rows != self.shape[0]:
            raise RuntimeError(f"{self.path.name}: wrote {self.rows} rows, expected {self.shape[0]}.")
        return {"shape": list(self.shape), "dtype": self.dtype.str, "sha256": self.sha.hexdigest()}


def stream_teacher_logits(
    teacher: Any,
    X: np.ndarray | torch.Tensor,
    *,
    cache_dir: str | os.PathLike[str],
    dtype: str = "float16",
    top_k: int | None = None,
    block_rows: int = 65536,
    split: str = "train",
    verify: bool = True,
    release_every: int = 64,
) -> MemmapSoftTargets:
    """Compute the teacher's logits on ``X`` in one streaming pass into memory-mapped ``.npy`` files.

    On a cache hit (a complete folder with this content fingerprint) nothing is computed; with
    ``verify`` its checksums are re-read block by block first, and a folder that fails is
    removed and rebuilt.

    Args:
        teacher: anything :func:`~darkknowledge.teachers.as_teacher` accepts (run in ``eval()``
            under ``no_grad`` on its own device).
        X: ``(N, *input_shape)`` inputs: a tensor, an array or a read-only ``np.memmap``.
        cache_dir: the folder that holds ``<fingerprint>.npyset/`` (created if missing).
        dtype: ``"float16"`` (2 bytes per logit; relative rounding ``<= 2**-11``) or ``"float32"``.
        top_k: keep only the ``k`` largest logits per row plus the log of the rest's mass.
        block_rows: rows per teacher forward pass and per write (memory ~ ``block_rows * C``).
        split: the split name, part of the fingerprint.
        verify: re-check the SHA-256 of every array on a hit.
        release_every: passed to :class:`MemmapSoftTargets`.

    Returns:
        A :class:`MemmapSoftTargets` over the folder.

    Example:
        >>> import tempfile
        >>> net = torch.nn.Linear(4, 3)
        >>> X = torch.randn(10, 4)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     soft = stream_teacher_logits(net, X, cache_dir=d, dtype="float32", block_rows=4)
        ...     rows = soft[torch.tensor([7, 2])]
        >>> soft.shape, torch.allclose(rows, net(X[[7, 2]]).detach())
        ((10, 3), True)
    """
    check_one_of("dtype", dtype, CACHE_DTYPES)
    if top_k is not None:
        check_positive_int("top_k", top_k)
    check_positive_int("block_rows", block_rows)
    if not isinstance(split, str) or not split:
        raise InputTypeError(f"split must be a non-empty string, got {split!r} instead.")
    _check_rows("X", X)
    root = check_path(cache_dir, name="cache_dir")  # "" is refused; the folder is shared, not claimed
    module = as_teacher(teacher)
    key = stream_fingerprint(module, X, block_rows=block_rows, split=split, dtype=dtype, top_k=top_k, layout="npy")
    final = root / f"{key}{_SUFFIX}"
    check_entries(root, [f"{final.name}/"])  # a link or a FIFO there is refused, never followed or replaced
    if final.is_dir():
        try:
            reader = MemmapSoftTargets(final, release_every=release_every)
            if reader.fingerprint != key:
                raise InputError("its fingerprint does not match its name")
            if verify:
                reader.verify()
            return reader
        except (ValueError, OSError, KeyError):
            shutil.rmtree(final, ignore_errors=True)  # never trust a folder that fails its checks

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{key[:16]}.", suffix=".tmp"))
    store = _NP_DTYPES[dtype]
    param = next(module.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    writers: dict[str, _NpyWriter] = {}
    n = len(X)
    num_classes = None
    try:
        module_was_training = module.training
        module.eval()
        with torch.no_grad():
            for start, block in iter_row_blocks(X, block_rows=block_rows):
                z = module(torch.from_numpy(block).to(device)).float().cpu()  # (b, C) raw logits
                if num_classes is None:
                    num_classes = z.shape[1]
                    if top_k is not None and top_k > num_classes:
                        raise InputError(f"top_k must be at most the number of classes ({num_classes}), got {top_k} instead.")
                    if top_k is None:
                        writers["logits"] = _NpyWriter(tmp / "logits.npy", (n, num_classes), store)
                    else:
                        writers["topk_values"] = _NpyWriter(tmp / "topk_values.npy", (n, top_k), store)
                        writers["topk_indices"] = _NpyWriter(tmp / "topk_indices.npy", (n, top_k), np.int64)
                        writers["rest_logsumexp"] = _NpyWriter(tmp / "rest_logsumexp.npy", (n,), store)
                if top_k is None:
                    if dtype == "float16":
                        check_storable("logits", z, z.half(), dtype)
                    writers["logits"].write(z.numpy())
                else:
                    values, indices, rest = compress_top_k(z, k=top_k)  # (b, k), (b, k), (b,)
                    if dtype == "float16":
                        check_storable("logits", values, values.half(), dtype)
                        check_storable("logits' log-sum-exp", rest, rest.half(), dtype)
                    writers["topk_values"].write(values.numpy())
                    writers["topk_indices"].write(indices.numpy())
                    writers["rest_logsumexp"].write(rest.numpy())
        module.train(module_was_training)
        arrays = {name: w.close() for name, w in writers.items()}
        meta = {"format": _FORMAT, "version": _VERSION, "fingerprint": key, "rows": n,
                "num_classes": num_classes, "dtype": dtype, "top_k": top_k, "split": split, "arrays": arrays}
        with open(tmp / "meta.json", "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)  # complete, so visible under its final name
    except BaseException:
        for w in writers.values():
            if not w.f.closed:
                w.f.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return MemmapSoftTargets(final, release_every=release_every)


class MemmapSoftTargets:
    """Teacher logits on disk, gathered by row: ``reader[index] -> (B, C)`` float32 tensor.

    Args:
        folder: a ``<fingerprint>.npyset`` folder written by :func:`stream_teacher_logits`.
        release_every: unmap the files after this many gathers (the next gather maps them
            again), which bounds the resident memory of a pass over a file larger than RAM.

    Attributes:
        shape: ``(N, C)``; ``fingerprint``, ``dtype`` (storage), ``top_k``: from ``meta.json``.

    Example:
        >>> import tempfile
        >>> net = torch.nn.Linear(2, 5)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     soft = stream_teacher_logits(net, torch.randn(6, 2), cache_dir=d, top_k=2)
        ...     z = soft[torch.arange(6)]
        >>> z.shape, z.dtype, soft.top_k
        (torch.Size([6, 5]), torch.float32, 2)
    """

    def __init__(self, folder: str | os.PathLike[str], *, release_every: int = 64) -> None:
        self.folder = Path(folder)
        check_positive_int("release_every", release_every)
        self.release_every = release_every
        meta_path = self.folder / "meta.json"
        if not os.path.lexists(meta_path):
            raise MissingFileError(f"folder {str(self.folder)!r} holds no meta.json (not a soft-target .npyset).")
        self.meta = json.loads(read_regular_bytes(meta_path).decode("utf-8"))
        if self.meta.get("format") != _FORMAT:
            raise InputError(f"{meta_path} is not a {_FORMAT} file.")
        self.fingerprint: str = self.meta["fingerprint"]
        self.dtype: str = self.meta["dtype"]
        self.top_k: int | None = self.meta["top_k"]
        self.shape = (int(self.meta["rows"]), int(self.meta["num_classes"]))
        self._maps: dict[str, np.ndarray] | None = None
        self._gathers = 0
        check_entries(self.folder, ["meta.json", *(f"{name}.npy" for name in self.meta["arrays"])])  # no links, no FIFOs
        for name, info in self.meta["arrays"].items():  # cheap structural check
            arr = _load_npy(self.folder / f"{name}.npy", mmap_mode="r")
            if list(arr.shape) != info["shape"] or arr.dtype.str != info["dtype"]:
                raise InputError(f"{name}.npy has shape {arr.shape} and dtype {arr.dtype.str}, "
                                 f"meta.json says {info['shape']} and {info['dtype']}.")
            del arr

    def __repr__(self) -> str:
        return f"MemmapSoftTargets({str(self.folder)!r}, shape={self.shape}, dtype={self.dtype!r}, top_k={self.top_k})"

    def __len__(self) -> int:
        return self.shape[0]

    def _arrays(self) -> dict[str, np.ndarray]:
        if self._maps is None:
            self._maps = {name: np.load(self.folder / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in self.meta["arrays"]}
        return self._maps

    def release(self) -> None:
        """Unmap the files now (their pages leave this process's resident set)."""
        self._maps = None

    def __getitem__(self, index: torch.Tensor | np.ndarray | slice | int) -> torch.Tensor:
        """Rows ``index`` (a ``(B,)`` int tensor / array, a slice or an int) as float32 logits ``(B, C)``."""
        n = self.shape[0]
        if isinstance(index, slice):
            rows = np.arange(n)[index]
        elif isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            return self[np.array([index])][0]
        elif isinstance(index, torch.Tensor) and not index.is_floating_point() and index.ndim == 1:
            rows = index.detach().cpu().numpy().astype(np.int64, copy=False)
        elif isinstance(index, np.ndarray) and index.dtype.kind in "iu" and index.ndim == 1:
            rows = index.astype(np.int64, copy=False)
        else:
            raise InputTypeError(f"index must be a 1-d integer tensor or array, a slice or an int, got {index!r} instead.")
        if rows.size and (rows.min() < -n or rows.max() >= n):
            raise IndexError(f"index must hold rows in [-{n}, {n}), got values from {rows.min()} to {rows.max()} instead.")
        rows = np.where(rows < 0, rows + n, rows)
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]  # sequential reads from the files
        maps = self._arrays()
        parts = {name: torch.from_numpy(gather_rows(a, sorted_rows)) for name, a in maps.items()}  # (B, ...) each
        inverse = torch.from_numpy(np.argsort(order, kind="stable"))  # back to the caller's order
        self._gathers += 1
        if self._gathers % self.release_every == 0:
            self.release()
        if self.top_k is None:
            return parts["logits"][inverse].to(torch.float32)  # (B, C)
        return dense_logits(parts["topk_values"][inverse], parts["topk_indices"][inverse],
                            parts["rest_logsumexp"][inverse], num_classes=self.shape[1])  # (B, C)

    def subset(self, rows: torch.Tensor | np.ndarray) -> _RowSubset:
        """A reader of the rows ``rows (M,)`` of this one: ``subset(rows)[i] == self[rows[i]]``."""
        return _RowSubset(self, rows)

    def verify(self, *, block_rows: int = 65536) -> None:
        """Re-read every array block by block and compare its SHA-256 with ``meta.json``.

        Raises:
            ValueError: a checksum differs (the file was changed or truncated).
        """
        for name, info in self.meta["arrays"].items():
            arr = np.load(self.folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            h = hashlib.sha256()
            for _, block in iter_row_blocks(arr, block_rows=block_rows):
                h.update(memoryview(block.reshape(-1).view(np.uint8)))
            del arr
            if h.hexdigest() != info["sha256"]:
                raise InputError(f"{name}.npy in {str(self.folder)!r} fails its SHA-256 checksum (changed or corrupt).")


class _RowSubset:
    """Rows ``rows`` of a :class:`MemmapSoftTargets` (e.g. the transfer subset of the training rows)."""

    def __init__(self, parent: MemmapSoftTargets, rows: torch.Tensor | np.ndarray) -> None:
        self.parent = parent
        self.rows = torch.as_tensor(np.asarray(rows), dtype=torch.int64).reshape(-1)  # (M,)
        self.shape = (len(self.rows), parent.shape[1])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        return self.parent[self.rows[torch.as_tensor(index)]]  # (B, C) float32


def open_npy_splits(folder: str | os.PathLike[str], *, class_names: list[str] | None = None) -> Any:
    """Open ``X_train.npy`` / ``y_train.npy`` (and optional ``X_val``/``y_val``, ``X_test``/``y_test``) from ``folder``.

    The features are opened read-only with ``np.load(..., mmap_mode="r")`` and stay on disk:
    :func:`darkknowledge.train.fit` reads only each minibatch's rows. The labels (one integer a
    row) are loaded into int64 tensors. The files must already be preprocessed (e.g.
    standardised) float32 features; nothing here reads the whole of ``X``.

    Args:
        folder: holds ``X_train.npy`` and ``y_train.npy``, optionally the val / test pairs.
        class_names: default ``["0", ..., str(C - 1)]`` from the largest training label.

    Returns:
        A :class:`~darkknowledge.data._types.Splits` whose ``X_*`` are ``np.memmap`` s.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> np.save(f"{d}/X_train.npy", np.zeros((4, 3), np.float32)); np.save(f"{d}/y_train.npy", np.array([0, 1, 1, 0]))
        >>> s = open_npy_splits(d)
        >>> type(s.X_train).__name__, s.input_shape, s.num_classes
        ('memmap', (3,), 2)
    """
    from darkknowledge.data import open_npy_folder

    return open_npy_folder(folder, class_names=class_names)  # one reader, every file checked
