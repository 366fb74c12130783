"""Atomic files, model weights as safetensors with a checksummed spec, and training state for resume.

Three layers, each usable alone:

* ``atomic_write_bytes`` / ``atomic_write_text`` / ``atomic_write_json``: write a temporary
  file in the target's folder, ``fsync`` it, then ``os.replace`` it over the target. A crash
  at any point leaves either the old file or the new one, never half of one.
* ``save_model`` / ``load_model`` / ``load_weights``: a model folder holds
  ``model.safetensors`` (the weights) and ``model.json`` (the :class:`~darkknowledge.models.ModelSpec`,
  the SHA-256 of the weights file, user metadata). ``load_model`` rebuilds the architecture
  from the spec and loads the weights strictly; a missing, half-written, altered or
  mismatched file gets an error naming it. A ``fit(out_dir=...)`` run folder has the same
  two files, so ``load_model(run_dir)`` works on it.
* ``save_training_state`` / ``load_training_state``: one safetensors file holding every tensor
  of a training run's state (weights, optimizer buffers, RNG states) with the rest of the
  state as JSON in the file's header metadata; one file, so one atomic write.
  ``pack_tensors`` / ``unpack_tensors`` move the tensors out of a nested ``state_dict``
  (an optimizer's) into a flat name -> tensor map and back.

Nothing is pickled: tensors go through safetensors, everything else through JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save
from torch import nn

from darkknowledge.models import ModelSpec, build_model_from_spec

__all__ = [
    "MODEL_JSON",
    "MODEL_WEIGHTS",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "load_model",
    "load_training_state",
    "load_weights",
    "pack_tensors",
    "save_model",
    "save_training_state",
    "sha256_bytes",
    "unpack_tensors",
]

MODEL_WEIGHTS = "model.safetensors"
MODEL_JSON = "model.json"
_FORMAT = "darkknowledge.model"
_STATE_FORMAT = "darkknowledge.training_state"


# ----------------------------------------------------------------------------- atomic files


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, ``os.replace``).

    The parent folder is created if needed. On any error the temporary file is removed and
    the previous content of ``path`` (if any) is left intact.

    >>> import tempfile, pathlib
    >>> p = atomic_write_bytes(pathlib.Path(tempfile.mkdtemp()) / "a.bin", b"abc")
    >>> p.read_bytes()
    b'abc'
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__} instead.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    # Make the rename itself durable where the OS allows opening a directory.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__} instead.")
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as strict JSON (no NaN / Infinity) to ``path`` atomically.

    >>> import tempfile, pathlib, json
    >>> p = atomic_write_json(pathlib.Path(tempfile.mkdtemp()) / "c.json", {"lr": 0.1})
    >>> json.loads(p.read_text())
    {'lr': 0.1}
    """
    return atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``.

    >>> sha256_bytes(b"")[:16]
    'e3b0c44298fc1c14'
    """
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- model folders


def _weights_bytes(state: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    return _st_save(tensors, metadata=metadata)


def save_model(
    path_dir: str | os.PathLike,
    model: nn.Module,
    *,
    spec: ModelSpec | Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Save ``model`` into the folder ``path_dir``: ``model.safetensors`` + ``model.json``.

    ``model.json`` = ``{"format", "version", "spec", "weights", "sha256", "num_parameters",
    "metadata"}``. The weights file is written first, then the JSON holding its checksum,
    each atomically; a crash between the two is detected by :func:`load_model` as a checksum
    mismatch.

    Args:
        path_dir: the folder (created if needed).
        model: the module whose ``state_dict()`` is saved.
        spec: how to rebuild the architecture; defaults to ``model.spec`` (set by
            :func:`~darkknowledge.models.build_model`). ``None`` and no ``model.spec``: the
            weights are saved but only :func:`load_weights` can read them back.
        metadata: extra JSON-serialisable information (metrics, data hash, ...).

    Returns:
        ``Path(path_dir)``.

    Example:
        >>> import tempfile
        >>> from darkknowledge.models import build_model
        >>> m = build_model("mlp", input_shape=(4,), num_classes=3, hidden=[5], seed=0)
        >>> d = save_model(tempfile.mkdtemp(), m)
        >>> m2 = load_model(d)
        >>> bool(torch.equal(m2(torch.ones(1, 4)), m(torch.ones(1, 4))))
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__} instead.")
    if spec is None:
        spec = getattr(model, "spec", None)
    if spec is not None and not isinstance(spec, ModelSpec):
        spec = ModelSpec.from_dict(spec)
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping or None, got {type(metadata).__name__} instead.")
    folder = Path(path_dir)
    data = _weights_bytes(model.state_dict())
    atomic_write_bytes(folder / MODEL_WEIGHTS, data)
    info = {
        "format": _FORMAT,
        "version": 1,
        "spec": spec.to_dict() if spec is not None else None,
        "weights": MODEL_WEIGHTS,
        "sha256": sha256_bytes(data),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "metadata": dict(metadata or {}),
    }
    atomic_write_json(folder / MODEL_JSON, info)
    return folder


def _read_model_folder(path_dir: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor], Path]:
    folder = Path(path_dir)
    json_path, weights_path = folder / MODEL_JSON, folder / MODEL_WEIGHTS
    for p in (json_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(
                f"{p} not found: a model folder holds {MODEL_WEIGHTS} and {MODEL_JSON} (written by save_model)."
            )
    try:
        info = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{json_path} is not valid JSON ({e}); the file is corrupt.") from e
    if not isinstance(info, dict) or info.get("format") != _FORMAT:
        raise ValueError(f"{json_path} is not a darkknowledge model file (expected format {_FORMAT!r}).")
    data = weights_path.read_bytes()
    digest = sha256_bytes(data)
    if digest != info.get("sha256"):
        raise ValueError(
            f"{weights_path} does not match the SHA-256 recorded in {json_path}: expected "
            f"{info.get('sha256')}, got {digest}; the file is corrupt, half-written or was altered."
        )
    try:
        tensors = _st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise ValueError(f"{weights_path} is not a readable safetensors file ({e}).") from e
    return info, tensors, weights_path


def _load_into(model: nn.Module, tensors: dict[str, torch.Tensor], weights_path: Path) -> None:
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{weights_path} does not fit the model: {e}") from e


def load_weights(path_dir: str | os.PathLike, model: nn.Module) -> nn.Module:
    """Load the verified weights of the model folder ``path_dir`` into ``model`` (strict) and return it.

    For models without a spec (custom modules); otherwise :func:`load_model` does everything.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__} instead.")
    _, tensors, weights_path = _read_model_folder(path_dir)
    _load_into(model, tensors, weights_path)
    return model


def load_model(path_dir: str | os.PathLike) -> nn.Module:
    """Rebuild the model saved by :func:`save_model` (or by ``fit(out_dir=...)``) in ``path_dir``.

    Reads ``model.json``, checks the SHA-256 of ``model.safetensors``, rebuilds the
    architecture with :func:`~darkknowledge.models.build_model_from_spec` and loads the
    weights strictly. Returns the model in ``eval()`` mode, on the CPU, with ``model.spec``
    and ``model.metadata`` (the saved metadata) attached.

    Raises:
        FileNotFoundError: a file is missing (named).
        ValueError: invalid JSON, checksum mismatch, unreadable safetensors, no spec, or
            weights whose names or shapes do not fit the spec (the file is named).
    """
    info, tensors, weights_path = _read_model_folder(path_dir)
    if info.get("spec") is None:
        raise ValueError(
            f"{Path(path_dir) / MODEL_JSON} has no model spec, so the architecture cannot be rebuilt; "
            "build the model yourself and call load_weights(path_dir, model)."
        )
    model = build_model_from_spec(info["spec"])
    dtypes = {t.dtype for t in tensors.values() if t.is_floating_point()}
    if len(dtypes) == 1:
        model = model.to(dtypes.pop())  # a float64 model comes back as float64
    _load_into(model, tensors, weights_path)
    model.metadata = info.get("metadata", {})
    return model.eval()


# ----------------------------------------------------------------------------- training state


def pack_tensors(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in the nested ``obj`` by ``{"__tensor__": name}``, storing it in ``tensors``.

    Dicts with non-string keys (an optimizer's ``state`` is keyed by int) become
    ``{"__items__": [[key, value], ...]}`` so that JSON keeps the key types.
    :func:`unpack_tensors` is the inverse.

    >>> t = {}
    >>> packed = pack_tensors({"state": {0: {"buf": torch.ones(2)}}, "lr": 0.1}, "opt", t)
    >>> list(t), unpack_tensors(packed, t)["state"][0]["buf"].tolist()
    (['opt.state.0.buf'], [1.0, 1.0])
    """
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": prefix}
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) for k in obj):
            return {k: pack_tensors(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
        return {"__items__": [[k, pack_tensors(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [pack_tensors(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a training state (only tensors and JSON values).")


def unpack_tensors(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of :func:`pack_tensors`."""
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__items__"}:
            return {k: unpack_tensors(v, tensors) for k, v in obj["__items__"]}
        return {k: unpack_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unpack_tensors(v, tensors) for v in obj]
    return obj


def save_training_state(path: str | os.PathLike, *, tensors: Mapping[str, torch.Tensor], state: Any) -> Path:
    """Write ``tensors`` and the JSON-serialisable ``state`` to one safetensors file, atomically.

    The JSON goes into the safetensors header metadata, so the whole state is one file and
    one ``os.replace``: a crash leaves the previous complete state.
    """
    text = json.dumps(state, allow_nan=False)
    return atomic_write_bytes(path, _weights_bytes(tensors, {"format": _STATE_FORMAT, "state": text}))


def load_training_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], Any]:
    """Read what :func:`save_training_state` wrote: ``(tensors, state)`` (CPU tensors)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: no training state to resume from.")
    data = path.read_bytes()
    try:
        tensors = _st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + header_len]).get("__metadata__", {})
        if meta.get("format") != _STATE_FORMAT:
            raise ValueError(f"format is {meta.get('format')!r}, expected {_STATE_FORMAT!r}")
        state = json.loads(meta["state"])
    except (SafetensorError, ValueError, KeyError, RuntimeError) as e:
        raise ValueError(f"{path} is not a readable training state ({e}); the file is corrupt.") from e
    return tensors, state
