"""In-memory minibatches: one epoch of shuffled index tensors.

The notes' recipe for stochastic gradient descent: *randomize the whole data set in terms
of order, segment it based on batch size, run SGD on batch i, till the end of all batches*;
*for a new epoch one often reshuffles the data*. Here that is one ``torch.randperm`` per
epoch, cut into ``torch.split`` views: there is no per-sample Python work, and the training
loop gathers its minibatch with ``X[idx], y[idx]`` on whatever device the data lives.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator

import numpy as np
import torch

from darkknowledge._checks import check_positive_int
from darkknowledge.errors import InputError, InputTypeError

__all__ = ["gather_rows", "minibatches", "num_batches", "num_rows", "take_rows"]


def num_batches(n: int, *, batch_size: int, drop_last: bool = False) -> int:
    """Number of minibatches :func:`minibatches` yields for ``n`` samples.

    ``ceil(n / batch_size)``, or ``floor(n / batch_size)`` with ``drop_last``.

    >>> num_batches(10, batch_size=4), num_batches(10, batch_size=4, drop_last=True)
    (3, 2)
    """
    check_positive_int("n", n)
    check_positive_int("batch_size", batch_size)
    return n // batch_size if drop_last else -(-n // batch_size)


def minibatches(
    n: int,
    *,
    batch_size: int,
    shuffle: bool = True,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[torch.Tensor]:
    """Yield the row indices of one epoch of minibatches over ``n`` samples.

    Each call is one epoch: with ``shuffle`` the order is a fresh ``torch.randperm(n)``
    drawn from ``generator`` (the global torch generator when ``None``), so calling again
    with the same generator reshuffles. Every index in ``[0, n)`` appears exactly once per
    epoch (except the ``n mod batch_size`` dropped ones with ``drop_last``).

    Args:
        n: number of samples (rows of ``X``).
        batch_size: rows per minibatch; the last one is smaller unless ``drop_last``.
        shuffle: draw a random order (``False``: ``0, 1, ..., n-1`` in order).
        generator: CPU ``torch.Generator`` for the permutation (seed it for reproducibility).
        drop_last: drop the final, incomplete minibatch.

    Yields:
        ``(B,)`` int64 CPU tensors of row indices, ``B <= batch_size``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> [idx.tolist() for idx in minibatches(5, batch_size=2, shuffle=False)]
        [[0, 1], [2, 3], [4]]
        >>> sorted(torch.cat(list(minibatches(5, batch_size=2, generator=g))).tolist())
        [0, 1, 2, 3, 4]
    """
    check_positive_int("n", n)
    check_positive_int("batch_size", batch_size)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InputTypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__} instead."
        )
    if shuffle:
        order = torch.randperm(n, generator=generator, dtype=torch.int64)  # (n,)
    else:
        order = torch.arange(n, dtype=torch.int64)  # (n,)
    stop = num_batches(n, batch_size=batch_size, drop_last=drop_last)
    for i, idx in enumerate(torch.split(order, batch_size)):  # views (B,) of the one permutation
        if i >= stop:
            break
        yield idx


def gather_rows(X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``X[rows]`` as a new C-contiguous array; a memory-mapped file is read without mapping pages.

    For a whole-file, C-ordered ``np.memmap`` (as ``np.load(path, mmap_mode="r")`` returns) the
    rows are read with ``os.pread`` into a fresh buffer: reading through the map would leave
    every touched page (and the kernel's read-around) in the process's resident set, which for
    a pass over a file larger than RAM is the size of the file. Other arrays are indexed as usual.
    Pass ``rows`` sorted for sequential reads.

    Args:
        X: ``(N, *row_shape)`` array or memmap.
        rows: ``(B,)`` int row indices in ``[0, N)``.

    Returns:
        ``(B, *row_shape)`` array of ``X``'s dtype.

    Example:
        >>> gather_rows(np.arange(6.0).reshape(3, 2), np.array([2, 0])).tolist()
        [[4.0, 5.0], [0.0, 1.0]]
    """
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    whole_file = (
        isinstance(X, np.memmap) and X.flags.c_contiguous and X.filename is not None and isinstance(X.base, mmap.mmap)
    )
    if not whole_file:
        return np.ascontiguousarray(X[rows])
    n = X.shape[0]
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        raise IndexError(f"rows must be in [0, {n}), got values from {rows.min()} to {rows.max()} instead.")
    row_bytes = int(np.prod(X.shape[1:], dtype=np.int64)) * X.dtype.itemsize
    fd = os.open(X.filename, os.O_RDONLY)
    try:
        data = b"".join(os.pread(fd, row_bytes, X.offset + int(r) * row_bytes) for r in rows)
    finally:
        os.close(fd)
    if len(data) != row_bytes * len(rows):
        raise InputError(f"{X.filename} is shorter than its header says (truncated?); write the file again.")
    return np.frombuffer(bytearray(data), dtype=X.dtype).reshape((len(rows), *X.shape[1:]))


def num_rows(X: torch.Tensor | np.ndarray | dict) -> int:
    """Number of rows (samples) of a tensor, array, memmap or ``dict`` of equal-length tensors.

    Example:
        >>> num_rows(torch.zeros(3, 2)), num_rows({"input_ids": torch.zeros(4, 7, dtype=torch.long)})
        (3, 4)
    """
    if isinstance(X, dict):
        if not X:
            raise InputError("X must be a non-empty dict of tensors, got an empty dict instead.")
        return int(len(next(iter(X.values()))))
    return int(X.shape[0])


def take_rows(X: torch.Tensor | np.ndarray | dict, idx: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray | dict:
    """Rows ``idx`` of ``X``: a tensor, a NumPy array or memmap, or a ``dict`` of equal-length tensors.

    The one way a training loop gathers a minibatch whatever the features are: a tensor gives
    ``X[idx]`` (``idx`` moved to ``X``'s device), a memmap is read with :func:`gather_rows` (no
    pages left mapped) and returned as an array, and a dict (text models: ``input_ids``,
    ``attention_mask``, ...) gives a new dict with every value indexed by the same rows, ready
    for ``model(**xb)``.

    Args:
        X: ``(N, ...)`` tensor / array / memmap, or ``{name: (N, ...) tensor}``.
        idx: ``(B,)`` int64 row indices in ``[0, N)`` (as :func:`minibatches` yields).

    Returns:
        Same kind as ``X`` with ``B`` rows: ``(B, ...)`` or ``{name: (B, ...)}``.

    Example:
        >>> X = {"input_ids": torch.arange(6).reshape(3, 2), "attention_mask": torch.ones(3, 2)}
        >>> xb = take_rows(X, torch.tensor([2, 0]))
        >>> xb["input_ids"].tolist(), xb["attention_mask"].shape
        ([[4, 5], [0, 1]], torch.Size([2, 2]))
        >>> take_rows(torch.arange(4.0), torch.tensor([1, 3])).tolist()
        [1.0, 3.0]
    """
    if isinstance(X, dict):
        return {k: take_rows(v, idx) for k, v in X.items()}
    if isinstance(X, torch.Tensor):
        if isinstance(idx, np.ndarray):
            idx = torch.from_numpy(np.asarray(idx, dtype=np.int64))
        if idx.device != X.device:
            idx = idx.to(X.device)
        return X[idx]
    if isinstance(X, np.ndarray):
        rows = idx.cpu().numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx)
        return gather_rows(X, rows)
    raise InputTypeError(
        f"X must be a torch.Tensor, a numpy array or a dict of tensors, got {type(X).__name__} instead."
    )
