"""Soft targets computed once: teacher logits cached on disk, keyed by content, and what they say.

Distillation reads the teacher's outputs on the transfer set at every epoch; computing them
once and storing them is the cheap part of the trick. This module:

* computes the teacher's **raw logits** once (so one cache serves every temperature ``T``:
  the soft targets are ``softmax(z / T)`` at training time);
* stores them as a safetensors file (arrays, never pickle) named by a **content fingerprint**
  -- SHA-256 over the teacher's architecture (``repr``) and weights (``state_dict`` tensors
  in name order, their bytes), the data ``X`` (bytes, dtype, shape), the split name, the
  storage dtype and ``top_k`` -- so a changed teacher or changed data is a cache miss, never
  a stale hit;
* verifies each file on load (safetensors parse, the fingerprint and a SHA-256 of the payload
  kept in its metadata) and, if the file is corrupt, warns with
  :class:`CacheCorruptionWarning` and rebuilds it;
* optionally keeps only the ``top_k`` logits per row (for many classes), see
  :func:`compress_top_k` / :func:`dense_logits`;
* under ``torchrun`` (a process group initialised, see :mod:`darkknowledge.distributed`)
  computes the logits in contiguous row shards, one per rank, all-gathers them, and lets
  rank 0 alone write the file (the others wait on a barrier); a hit is verified by rank 0
  and then read by every rank;
* analyses the soft targets -- *what the teacher knows*: entropy of the softened outputs per
  class, the "dark" probability mass on wrong classes, and which classes resemble which
  (:func:`analyse_soft_targets`).

Reference:
    Hinton, Vinyals & Dean, *Distilling the Knowledge in a Neural Network* (2015), sec. 2-3.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch

from darkknowledge._checks import check_one_of, check_positive_finite, check_positive_int
from darkknowledge.checkpoint import atomic_write_bytes
from darkknowledge.errors import InputError, InputTypeError
from darkknowledge.rundir import check_entries, check_path
from darkknowledge.distributed import (
    all_gather_rows,
    all_reduce_sum,
    barrier,
    get_world_size,
    is_main_process,
    shard_range,
)
from darkknowledge.teachers import as_teacher, teacher_logits

__all__ = [
    "CACHE_DTYPES",
    "CacheCorruptionWarning",
    "SoftTargetCache",
    "analyse_soft_targets",
    "cached_teacher_logits",
    "compress_top_k",
    "dense_logits",
    "examples",
    "fingerprint",
]

CACHE_DTYPES = ("float32", "float16")
_FORMAT = "darkknowledge-soft-targets"
_FORMAT_VERSION = "1"
_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16}
_LN2 = math.log(2.0)
_FLOAT16_MAX = float(torch.finfo(torch.float16).max)  # 65504


def check_storable(name: str, values: torch.Tensor, stored: torch.Tensor, dtype: str) -> None:
    """Refuse ``stored`` (``values`` cast to the storage ``dtype``) if the cast turned a finite value into inf.

    float16 holds at most 65504; a teacher whose logits go past it would be cached as inf.

    >>> z = torch.tensor([1.0, 7e4])
    >>> check_storable("logits", z, z.half(), "float16")
    Traceback (most recent call last):
    ...
    darkknowledge.errors.InputError: the teacher's logits reach |z| = 7e+04, above float16's largest value 65504, so a float16 soft-target cache would hold inf; store them as float32 (dtype='float32'; soft_targets.dtype: float32 in a run config).
    """
    lost = torch.isfinite(values) & ~torch.isfinite(stored)
    if bool(lost.any()):
        biggest = float(values[lost].abs().max())
        raise InputError(
            f"the teacher's {name} reach |z| = {biggest:.4g}, above {dtype}'s largest value {_FLOAT16_MAX:g}, so a "
            f"{dtype} soft-target cache would hold inf; store them as float32 (dtype='float32'; "
            "soft_targets.dtype: float32 in a run config)."
        )


class CacheCorruptionWarning(UserWarning):
    """A soft-target cache file could not be read or failed its checksum; it is being rebuilt."""


# --------------------------------------------------------------------------------------------
# fingerprints


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    """The raw bytes of a tensor (any dtype, bfloat16 included), in C order."""
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


def _update_with_tensor(h: Any, name: str, t: torch.Tensor) -> None:
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(_tensor_bytes(t))


def _update_with_array(h: Any, name: str, X: np.ndarray, block_rows: int) -> None:
    """As :func:`_update_with_tensor` (same bytes, same digest), reading ``X`` ``block_rows`` rows at a time.

    A memory-mapped ``X`` larger than RAM is hashed without ever being read whole.
    """
    dtype = torch.from_numpy(np.empty(0, dtype=X.dtype)).dtype  # torch's name for the dtype, as tensors hash it
    h.update(f"{name}|{dtype}|{tuple(X.shape)}|".encode())
    for start in range(0, len(X), block_rows):
        block = np.ascontiguousarray(X[start:start + block_rows])
        if block.size:
            h.update(memoryview(block.reshape(-1).view(np.uint8)))


def fingerprint(teacher: Any, X: torch.Tensor | np.ndarray, *, block_rows: int = 65536, **keys: Any) -> str:
    """The SHA-256 content key of "this teacher's outputs on this data" (64 hex digits).

    Hashes, in order: a format tag; the teacher's class name and ``repr`` (its architecture,
    and e.g. an :class:`~darkknowledge.teachers.Ensemble`'s ``combine``); every
    ``state_dict`` tensor sorted by name (name, dtype, shape, bytes); ``X`` (dtype, shape,
    bytes); the string of every submodule's ``content_fingerprint()`` method, if it has one
    (teachers whose content is not torch weights: an ONNX file's SHA-256, an estimator's parameters
    and fitted state); ``X`` (dtype, shape, bytes); then ``keys`` (e.g. ``split="train",
    dtype="float16", top_k=None``) as sorted JSON.
    Changing any weight, any input value, or any key changes the fingerprint.

    Args:
        teacher: anything :func:`~darkknowledge.teachers.as_teacher` accepts.
        X: ``(N, *input_shape)`` inputs, tensor or NumPy array (a memory map is read
            ``block_rows`` rows at a time; ``block_rows`` does not change the digest), or a dict of
            them (token inputs such as ``input_ids`` / ``attention_mask``: every key is hashed).
        **keys: JSON-serialisable values that also select the cached content.

    Example:
        >>> net = torch.nn.Linear(3, 2)
        >>> X = torch.zeros(4, 3)
        >>> a = fingerprint(net, X, split="train")
        >>> len(a), a == fingerprint(net, X, split="train"), a == fingerprint(net, X, split="test")
        (64, True, False)
    """
    module = as_teacher(teacher)
    parts = X if isinstance(X, dict) else {"": X}  # a dict of token tensors: each key, in sorted order
    for key, value in parts.items():
        if not isinstance(key, str) or not isinstance(value, (torch.Tensor, np.ndarray)):
            raise InputTypeError(f"X must be a torch.Tensor, a numpy.ndarray or a dict of them, got "
                                 f"{type(value).__name__ if key else type(X).__name__} instead.")
    check_positive_int("block_rows", block_rows)
    h = hashlib.sha256()
    h.update(f"{_FORMAT}/{_FORMAT_VERSION}|{type(module).__module__}.{type(module).__qualname__}|".encode())
    h.update(repr(module).encode())
    state = module.state_dict()
    for name in sorted(state):
        _update_with_tensor(h, f"param:{name}", state[name])
    for name, sub in module.named_modules():  # teachers without torch weights: ONNX bytes, estimator state
        content = getattr(sub, "content_fingerprint", None)
        if callable(content):
            h.update(f"content:{name}:{content()}|".encode())
    for key in sorted(parts):
        name = f"X[{key}]" if key else "X"  # a plain X hashes as before: its cache entries stay valid
        if isinstance(parts[key], np.ndarray):
            _update_with_array(h, name, parts[key], block_rows)
        else:
            _update_with_tensor(h, name, parts[key])
    h.update(json.dumps(keys, sort_keys=True, default=str).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# top-k compression


def compress_top_k(logits: torch.Tensor, *, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the ``k`` largest logits per row and the log of the remaining probability mass.

    Args:
        logits: ``(N, C)`` raw logits.
        k: how many classes to keep per row, ``1 <= k <= C``.

    Returns:
        ``values (N, k)`` the top-k logits (largest first), ``indices (N, k)`` int64 their
        classes, and ``rest_logsumexp (N,)`` ``= logsumexp`` of the other ``C - k`` logits
        (``-inf`` when ``k == C``). All at ``T = 1``, in the logits' dtype.

    Example:
        >>> v, i, r = compress_top_k(torch.tensor([[0.0, 2.0, 1.0]]), k=1)
        >>> v.tolist(), i.tolist(), round(r.item(), 4)
        ([[2.0]], [[1]], 1.3133)
    """
    logits = _as_2d_float("logits", logits)
    num_classes = logits.shape[1]
    check_positive_int("k", k)
    if k > num_classes:
        raise InputError(f"k must be at most the number of classes ({num_classes}), got {k} instead.")
    values, indices = torch.topk(logits, k, dim=1)  # (N, k), (N, k) largest first
    rest = logits.scatter(1, indices, float("-inf"))  # (N, C) with the top-k masked out
    rest_logsumexp = torch.logsumexp(rest, dim=1)  # (N,)  -inf when k == C
    return values, indices, rest_logsumexp


def dense_logits(
    values: torch.Tensor, indices: torch.Tensor, rest_logsumexp: torch.Tensor, *, num_classes: int
) -> torch.Tensor:
    """Rebuild ``(N, C)`` logits from :func:`compress_top_k` output.

    The kept classes get their logits back; each of the ``C - k`` other classes gets
    ``rest_logsumexp - log(C - k)``. So at ``T = 1`` the softmax keeps every top-k probability
    exactly and spreads the remaining mass **uniformly** over the other classes:

    .. math:: \\hat p_j = p_j \\ (j \\in \\text{top-}k), \\qquad
              \\hat p_j = \\frac{1 - \\sum_{i \\in \\text{top-}k} p_i}{C - k} \\ (\\text{otherwise}).

    At another temperature the tail is an approximation (its shape is lost); with
    ``k == C`` the reconstruction is exact at every temperature.

    Args:
        values: ``(N, k)`` kept logits; indices: ``(N, k)`` their class ids;
        rest_logsumexp: ``(N,)`` logsumexp of the other logits; num_classes: ``C >= k``.

    Returns:
        ``(N, C)`` float32 logits.

    Example:
        >>> z = torch.tensor([[0.0, 2.0, 1.0, -1.0]])
        >>> d = dense_logits(*compress_top_k(z, k=2), num_classes=4)
        >>> torch.allclose(d.softmax(1)[0, [1, 2]], z.softmax(1)[0, [1, 2]])
        True
        >>> d[0, 0] == d[0, 3]
        tensor(True)
    """
    check_positive_int("num_classes", num_classes)
    if values.ndim != 2 or indices.shape != values.shape or rest_logsumexp.shape != values.shape[:1]:
        raise InputError(
            "values, indices and rest_logsumexp must have shapes (N, k), (N, k) and (N,), "
            f"got {tuple(values.shape)}, {tuple(indices.shape)} and {tuple(rest_logsumexp.shape)} instead."
        )
    n, k = values.shape
    if k > num_classes:
        raise InputError(f"num_classes must be at least k={k}, got {num_classes} instead.")
    values = values.to(torch.float32)
    if k == num_classes:
        fill = torch.zeros(n, 1)  # every entry is overwritten by the scatter below
    else:
        fill = (rest_logsumexp.to(torch.float32) - math.log(num_classes - k)).unsqueeze(1)  # (N, 1)
    out = fill.expand(n, num_classes).clone()  # (N, C) uniform tail
    return out.scatter(1, indices.to(torch.int64), values)  # (N, C) with the top-k restored


# --------------------------------------------------------------------------------------------
# the on-disk cache


def _as_2d_float(name: str, a: Any) -> torch.Tensor:
    if isinstance(a, np.ndarray):
        a = torch.from_numpy(np.ascontiguousarray(a))
    if not isinstance(a, torch.Tensor):
        raise InputTypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(a).__name__} instead.")
    if a.ndim != 2 or a.shape[1] < 1:
        raise InputError(f"{name} must have shape (N, C), got {tuple(a.shape)} instead.")
    if not a.is_floating_point():
        raise InputTypeError(f"{name} must be floating point, got {a.dtype} instead.")
    return a


def _payload_sha256(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        _update_with_tensor(h, name, tensors[name])
    return h.hexdigest()


class SoftTargetCache:
    """Teacher logits on disk under ``root``, one safetensors file per content fingerprint.

    Each file ``<root>/<fingerprint>.safetensors`` holds either ``logits (N, C)`` or, with
    ``top_k``, ``topk_values (N, k)``, ``topk_indices (N, k)`` and ``rest_logsumexp (N,)``,
    in the storage dtype (``float32`` or ``float16``; indices int64). Its metadata records the
    format, the fingerprint, the payload's SHA-256, the split, dtype, ``top_k`` and ``C``.

    Attributes:
        root: the cache folder (created on first write).
        hits, misses: how many :meth:`get` calls were served from disk / computed.
        rebuilt: how many corrupt files were detected and rebuilt.

    Example:
        >>> import tempfile
        >>> net = torch.nn.Linear(3, 2)
        >>> X = torch.randn(5, 3)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     cache = SoftTargetCache(d)
        ...     first = cache.get(net, X)
        ...     again = cache.get(net, X)
        >>> torch.equal(first, again), cache.hits, cache.misses
        (True, 1, 1)
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        if not isinstance(root, (str, os.PathLike)):
            raise InputTypeError(f"root must be a path (str or os.PathLike), got {type(root).__name__} instead.")
        # a cache folder is shared by design (not claimed like a run folder): only "" is refused here,
        # and links or special files at an entry's path when it is read or written
        self.root = check_path(root, name="cache_dir")
        self.hits = 0
        self.misses = 0
        self.rebuilt = 0

    def __repr__(self) -> str:
        return f"SoftTargetCache(root={str(self.root)!r}, hits={self.hits}, misses={self.misses})"

    def path_for(self, key: str) -> Path:
        """The file that holds the entry with fingerprint ``key``."""
        return self.root / f"{key}.safetensors"

    def get(
        self,
        teacher: Any,
        X: torch.Tensor | np.ndarray,
        *,
        dtype: str = "float32",
        top_k: int | None = None,
        batch_size: int = 1024,
        split: str = "train",
    ) -> torch.Tensor:
        """Return the teacher's ``(N, C)`` float32 logits on ``X``, computing them only on a miss.

        See :func:`cached_teacher_logits` for the arguments.
        """
        check_one_of("dtype", dtype, CACHE_DTYPES)
        if top_k is not None:
            check_positive_int("top_k", top_k)
        check_positive_int("batch_size", batch_size)
        if not isinstance(split, str) or not split:
            raise InputTypeError(f"split must be a non-empty string, got {split!r} instead.")
        module = as_teacher(teacher)
        key = fingerprint(module, X, split=split, dtype=dtype, top_k=top_k)
        path = self.path_for(key)
        check_entries(self.root, [path.name])  # never read a FIFO (it blocks) nor write through a link
        world = get_world_size()
        # rank 0 verifies an existing file; with several ranks it tells the others what it found
        stored = self._load(path, key) if path.exists() and is_main_process() else None
        found = path.exists() and (stored is not None if is_main_process() else True)
        if world > 1:
            found = bool(all_reduce_sum([1.0 if stored is not None else 0.0])[0] > 0)
            if found:
                if not is_main_process():
                    stored = self._load(path, key)  # rank 0 verified this file just now
                # only a file changed in between could fail here; then every rank recomputes
                found = bool(all_reduce_sum([1.0 if stored is None else 0.0])[0] == 0)
        if found and stored is not None:
            self.hits += 1
            return stored
        if path.exists():
            self.rebuilt += 1
        self.misses += 1
        logits = self._compute(module, X, batch_size=batch_size)  # (N, C) float32
        tensors = self._encode(logits, dtype=dtype, top_k=top_k)
        metadata = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "fingerprint": key,
            "payload_sha256": _payload_sha256(tensors),
            "split": split,
            "dtype": dtype,
            "top_k": "none" if top_k is None else str(top_k),
            "num_classes": str(logits.shape[1]),
        }
        if is_main_process():
            atomic_write_bytes(path, safetensors.torch.save(tensors, metadata=metadata))
        barrier()  # the file exists before any rank returns
        return self._decode(tensors, num_classes=logits.shape[1])

    @staticmethod
    def _compute(module: torch.nn.Module, X: torch.Tensor | np.ndarray, *, batch_size: int) -> torch.Tensor:
        """All ``(N, C)`` teacher logits; with several ranks each computes its contiguous shard, then all-gather."""
        world = get_world_size()
        if world == 1:
            return teacher_logits(module, X, batch_size=batch_size)  # (N, C) float32
        n = len(X)
        start, stop = shard_range(n)
        if stop > start:
            local = teacher_logits(module, X[start:stop], batch_size=batch_size)  # (n_r, C)
        else:  # fewer rows than ranks: an empty shard of the right width
            local = teacher_logits(module, X[:1], batch_size=batch_size)[:0]  # (0, C)
        return all_gather_rows(local.to(torch.float32), n_total=n)  # (N, C) in row order

    @staticmethod
    def _encode(logits: torch.Tensor, *, dtype: str, top_k: int | None) -> dict[str, torch.Tensor]:
        store = _TORCH_DTYPES[dtype]
        if top_k is None:
            stored = logits.to(store).contiguous()
            check_storable("logits", logits, stored, dtype)
            return {"logits": stored}
        if top_k > logits.shape[1]:
            raise InputError(
                f"top_k must be at most the number of classes ({logits.shape[1]}), got {top_k} instead."
            )
        values, indices, rest = compress_top_k(logits, k=top_k)
        stored_values, stored_rest = values.to(store).contiguous(), rest.to(store).contiguous()
        check_storable("logits", values, stored_values, dtype)
        check_storable("logits' log-sum-exp", rest, stored_rest, dtype)
        return {
            "topk_values": stored_values,
            "topk_indices": indices.contiguous(),
            "rest_logsumexp": stored_rest,
        }

    @staticmethod
    def _decode(tensors: dict[str, torch.Tensor], *, num_classes: int) -> torch.Tensor:
        if "logits" in tensors:
            return tensors["logits"].to(torch.float32)  # float16 stored -> upcast
        return dense_logits(
            tensors["topk_values"], tensors["topk_indices"], tensors["rest_logsumexp"], num_classes=num_classes
        )

    def _load(self, path: Path, key: str) -> torch.Tensor | None:
        """Read and verify one entry; on any defect warn and return ``None`` (the caller rebuilds)."""
        try:
            with safetensors.safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}
            if metadata.get("format") != _FORMAT or metadata.get("fingerprint") != key:
                raise InputError("its metadata does not match its name")
            if metadata.get("payload_sha256") != _payload_sha256(tensors):
                raise InputError("its payload checksum does not match")
            num_classes = int(metadata["num_classes"])
            dense = self._decode(tensors, num_classes=num_classes)
            if dense.ndim != 2 or dense.shape[1] != num_classes:
                raise InputError("its arrays have inconsistent shapes")
            return dense
        except Exception as err:  # noqa: BLE001 -- any unreadable file is rebuilt, never trusted
            warnings.warn(
                f"soft-target cache file {path.name} is corrupt ({type(err).__name__}: {err}); "
                "recomputing the teacher's logits.",
                CacheCorruptionWarning,
                stacklevel=3,
            )
            return None


def cached_teacher_logits(
    teacher: Any,
    X: torch.Tensor | np.ndarray,
    *,
    cache_dir: str | os.PathLike[str],
    dtype: str = "float32",
    top_k: int | None = None,
    batch_size: int = 1024,
    split: str = "train",
) -> torch.Tensor:
    """The teacher's logits on the transfer set, computed once and cached on disk by content.

    Args:
        teacher: anything :func:`~darkknowledge.teachers.as_teacher` accepts.
        X: ``(N, *input_shape)`` transfer-set inputs.
        cache_dir: the cache folder (created if missing).
        dtype: storage dtype, ``"float32"`` or ``"float16"`` (half the disk; values rounded
            to float16, i.e. a relative error ``<= 2**-11``; logits beyond float16's 65504 are
            refused with a clear error rather than stored as inf); always returned as float32.
        top_k: ``None`` to store all ``C`` logits, or keep the ``k`` largest per row (for many
            classes) and rebuild with :func:`dense_logits` (top-k probabilities exact at
            ``T = 1``, the rest spread uniformly).
        batch_size: rows per teacher forward pass on a miss.
        split: the name of the split (``"train"``, ``"val"``, ...), part of the key.

    Returns:
        ``(N, C)`` float32 raw logits (temperature is applied later, by the loss); the
        distiller gathers rows with ``logits[index]``.

    Example:
        >>> import tempfile
        >>> net = torch.nn.Linear(3, 4)
        >>> X = torch.randn(6, 3)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     z = cached_teacher_logits(net, X, cache_dir=d, dtype="float16")
        >>> z.shape, z.dtype
        (torch.Size([6, 4]), torch.float32)
    """
    return SoftTargetCache(cache_dir).get(
        teacher, X, dtype=dtype, top_k=top_k, batch_size=batch_size, split=split
    )


# --------------------------------------------------------------------------------------------
# what the teacher knows


def _temperature_keys(temperatures: Sequence[float]) -> list[tuple[str, float]]:
    if isinstance(temperatures, (str, bytes)) or not isinstance(temperatures, Sequence) or not temperatures:
        raise InputTypeError(f"temperatures must be a non-empty sequence of numbers, got {temperatures!r} instead.")
    out = []
    for t in temperatures:
        value = check_positive_finite("temperature", t)
        out.append((f"{value:g}", value))
    keys = [k for k, _ in out]
    if len(set(keys)) != len(keys):
        raise InputError(f"temperatures must be distinct, got {list(temperatures)} instead.")
    return out


def _logits_and_labels(teacher_logits: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    z = _as_2d_float("teacher_logits", teacher_logits).to(torch.float64)  # (N, C)
    if isinstance(y, np.ndarray):
        y = torch.from_numpy(np.ascontiguousarray(y))
    if not isinstance(y, torch.Tensor):
        raise InputTypeError(f"y must be a torch.Tensor or numpy.ndarray, got {type(y).__name__} instead.")
    if y.ndim != 1 or y.shape[0] != z.shape[0] or y.is_floating_point():
        raise InputError(
            f"y must be (N,) integer class ids with N={z.shape[0]}, "
            f"got shape {tuple(y.shape)} and dtype {y.dtype} instead."
        )
    y = y.to(torch.int64)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= z.shape[1]):
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        raise InputError(f"y must hold class ids in [0, {z.shape[1]}), got {bad} instead.")
    return z, y


def _class_names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    if class_names is None:
        return [str(c) for c in range(num_classes)]
    names = [str(c) for c in class_names]
    if len(names) != num_classes:
        raise InputError(f"class_names must have {num_classes} entries, got {len(names)} instead.")
    return names


def examples(
    teacher_logits: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    *,
    indices: Sequence[int],
    temperatures: Sequence[float] = (1, 4, 20),
    class_names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The teacher's softened probabilities ``softmax(z / T)`` for a few samples, at several ``T``.

    Args:
        teacher_logits: ``(N, C)`` raw logits; y: ``(N,)`` true class ids.
        indices: which rows to show (each in ``[0, N)``).
        temperatures: the ``T`` values (> 0); keys are formatted with ``"{T:g}"`` (``4.0 -> "4"``).
        class_names: ``C`` names (default ``"0" .. "C-1"``).

    Returns:
        A list of ``{"index", "label", "label_name", "probs": {"T": [C floats]}}`` (plain
        Python numbers, ready for JSON).

    Example:
        >>> ex = examples(torch.tensor([[2.0, 0.0]]), torch.tensor([0]), indices=[0], temperatures=(1,))
        >>> ex[0]["label"], [round(p, 4) for p in ex[0]["probs"]["1"]]
        (0, [0.8808, 0.1192])
    """
    z, y = _logits_and_labels(teacher_logits, y)
    temps = _temperature_keys(temperatures)
    names = _class_names(class_names, z.shape[1])
    out = []
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= int(i) < z.shape[0]:
            raise InputError(f"indices must be integers in [0, {z.shape[0]}), got {i!r} instead.")
        i = int(i)
        label = int(y[i])
        out.append(
            {
                "index": i,
                "label": label,
                "label_name": names[label],
                "probs": {key: (z[i] / t).softmax(dim=0).tolist() for key, t in temps},
            }
        )
    return out


def analyse_soft_targets(
    teacher_logits: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    *,
    temperatures: Sequence[float] = (1, 4, 20),
    class_names: Sequence[str] | None = None,
    similarity_temperature: float = 4.0,
    example_indices: Sequence[int] | None = None,
) -> dict[str, Any]:
    """What the teacher knows: per-class entropy, dark mass and class similarity of its soft targets.

    With ``p = softmax(z / T)`` per sample (computed in float64):

    * ``per_class_entropy_bits[T][c]`` -- mean over samples of true class ``c`` of
      ``H(p) = -sum_j p_j log2 p_j`` (bits, ``0 log 0 = 0``);
    * ``dark_mass[T][c]`` -- mean over samples of class ``c`` of ``1 - p_c``, the probability
      the teacher puts on the wrong classes (Hinton et al.'s "dark knowledge");
    * ``similar_classes`` -- for each class ``c`` present in ``y``: ``[c, [j, ...]]`` the other
      classes ranked by the mean probability given to them on samples of ``c`` at
      ``similarity_temperature`` (most similar first; ties by class id);
    * ``examples`` -- :func:`examples` for ``example_indices`` (default: the first sample of
      each of the first five classes present).

    Classes with no sample in ``y`` get ``None`` (JSON ``null``) in the per-class lists.

    Args:
        teacher_logits: ``(N, C)`` raw teacher logits; y: ``(N,)`` int class ids.
        temperatures: ``T`` values (> 0), keys ``"{T:g}"``.
        class_names: ``C`` names for the examples (default ``"0" .. "C-1"``).
        similarity_temperature: ``T`` used to rank similar classes (> 0).
        example_indices: rows for ``examples``.

    Returns:
        The ``"soft_targets"`` part of ``results.json``: ``{"examples", "per_class_entropy_bits",
        "dark_mass", "similar_classes"}``, plain Python numbers.

    Example:
        >>> z = torch.tensor([[4.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
        >>> out = analyse_soft_targets(z, torch.tensor([0, 1]), temperatures=(1,))
        >>> [round(h, 3) for h in out["per_class_entropy_bits"]["1"][:2]], out["per_class_entropy_bits"]["1"][2]
        ([0.396, 0.756], None)
        >>> out["similar_classes"]
        [[0, [1, 2]], [1, [2, 0]]]

    Reference: Hinton, Vinyals & Dean (2015), sec. 2 (why the small probabilities matter).
    """
    z, y = _logits_and_labels(teacher_logits, y)
    temps = _temperature_keys(temperatures)
    sim_t = check_positive_finite("similarity_temperature", similarity_temperature)
    num_classes = z.shape[1]
    names = _class_names(class_names, num_classes)
    present = sorted(int(c) for c in torch.unique(y))
    counts = torch.bincount(y, minlength=num_classes).to(torch.float64)  # (C,)

    def per_class_mean(v: torch.Tensor) -> list[float | None]:  # (N,) -> C means over true class
        sums = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, y, v)
        return [float(sums[c] / counts[c]) if counts[c] > 0 else None for c in range(num_classes)]

    entropy: dict[str, list[float | None]] = {}
    dark: dict[str, list[float | None]] = {}
    for key, t in temps:
        logp = (z / t).log_softmax(dim=1)  # (N, C) log-probabilities at T
        p = logp.exp()
        h_bits = -torch.special.xlogy(p, p).sum(dim=1) / _LN2  # (N,) bits
        entropy[key] = per_class_mean(h_bits)
        dark[key] = per_class_mean(1.0 - p.gather(1, y.unsqueeze(1)).squeeze(1))  # (N,)

    p_sim = (z / sim_t).softmax(dim=1)  # (N, C)
    mean_p = torch.zeros(num_classes, num_classes, dtype=torch.float64).index_add_(0, y, p_sim)  # (C, C) sums
    similar = []
    for c in present:
        others = [j for j in range(num_classes) if j != c]
        others.sort(key=lambda j: (-float(mean_p[c, j]), j))
        similar.append([c, others])

    if example_indices is None:
        first = {}
        for i, label in enumerate(y.tolist()):
            first.setdefault(label, i)
        example_indices = [first[c] for c in present[:5]]
    return {
        "examples": examples(z, y, indices=example_indices, temperatures=temperatures, class_names=names),
        "per_class_entropy_bits": entropy,
        "dark_mass": dark,
        "similar_classes": similar,
    }
