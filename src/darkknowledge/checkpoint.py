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
import stat
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save
from torch import nn

from darkknowledge.errors import InputError, InputTypeError, MissingFileError
from darkknowledge.models import ModelSpec, build_model_from_spec

__all__ = [
    "MODEL_JSON",
    "MODEL_WEIGHTS",
    "CheckpointError",
    "NotARegularFileError",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "load_model",
    "load_training_state",
    "load_weights",
    "pack_tensors",
    "peek_training_state",
    "read_regular_bytes",
    "save_model",
    "save_training_state",
    "sha256_bytes",
    "unpack_tensors",
]

MODEL_WEIGHTS = "model.safetensors"
MODEL_JSON = "model.json"
_FORMAT = "darkknowledge.model"
_STATE_FORMAT = "darkknowledge.training_state"


class CheckpointError(InputError):
    """A training state (checkpoint) is corrupt, malformed or was written for another run (a ``ValueError``)."""


class NotARegularFileError(InputError):
    """A path to read is a FIFO, socket, device or folder, not a regular file (reading it could hang)."""


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
        raise InputTypeError(f"data must be bytes, got {type(data).__name__} instead.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        _chmod_fd(fd, tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; a file gets the user's umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.filename is None:  # a failed write names no file: name it
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    _fsync_dir(path.parent)
    return path


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (``/proc/self/status``).

    Elsewhere it is set and restored at once, under a lock (``os.umask`` has no read-only form).

    >>> 0 <= current_umask() <= 0o777
    True
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _chmod_fd(fd: int, path: str, mode: int) -> None:
    if hasattr(os, "fchmod"):
        os.fchmod(fd, mode)
    else:  # pragma: no cover - Windows
        os.chmod(path, mode)


def describe_file_type(mode: int) -> str:
    """``"a FIFO"``, ``"a folder"``, ... for an ``os.stat`` mode.

    >>> describe_file_type(stat.S_IFIFO), describe_file_type(stat.S_IFREG)
    ('a FIFO', 'a regular file')
    """
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symbolic link"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def read_regular_bytes(path: str | os.PathLike, *, what: str = "file") -> bytes:
    """The bytes of ``path``, refusing anything but a regular file (a FIFO would block forever).

    Opened with ``O_NONBLOCK`` and checked with ``fstat`` before a byte is read.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        NotARegularFileError: a FIFO, socket, device or folder (a ``ValueError`` naming it).
    """
    path = Path(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFileError(
                f"{path} is {describe_file_type(st.st_mode)}, not a regular {what}; remove it or point to the real file."
            )
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 24)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


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
        raise InputTypeError(f"text must be a str, got {type(text).__name__} instead.")
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
        raise InputTypeError(f"model must be a torch.nn.Module, got {type(model).__name__} instead.")
    if spec is None:
        spec = getattr(model, "spec", None)
    if spec is not None and not isinstance(spec, ModelSpec):
        spec = ModelSpec.from_dict(spec)
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InputTypeError(f"metadata must be a mapping or None, got {type(metadata).__name__} instead.")
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
        if not p.exists():
            raise MissingFileError(
                f"{p} not found: a model folder holds {MODEL_WEIGHTS} and {MODEL_JSON} (written by save_model)."
            )
    try:
        info = json.loads(read_regular_bytes(json_path).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{json_path} is not valid JSON ({e}); the file is corrupt.") from e
    if not isinstance(info, dict) or info.get("format") != _FORMAT:
        raise InputError(f"{json_path} is not a darkknowledge model file (expected format {_FORMAT!r}).")
    data = read_regular_bytes(weights_path)
    digest = sha256_bytes(data)
    if digest != info.get("sha256"):
        raise InputError(
            f"{weights_path} does not match the SHA-256 recorded in {json_path}: expected "
            f"{info.get('sha256')}, got {digest}; the file is corrupt, half-written or was altered."
        )
    try:
        tensors = _st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise InputError(f"{weights_path} is not a readable safetensors file ({e}).") from e
    return info, tensors, weights_path


def _load_into(model: nn.Module, tensors: dict[str, torch.Tensor], weights_path: Path) -> None:
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise InputError(f"{weights_path} does not fit the model: {e}") from e


def load_weights(path_dir: str | os.PathLike, model: nn.Module) -> nn.Module:
    """Load the verified weights of the model folder ``path_dir`` into ``model`` (strict) and return it.

    For models without a spec (custom modules); otherwise :func:`load_model` does everything.
    """
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module, got {type(model).__name__} instead.")
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
        raise InputError(
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
    raise InputTypeError(f"cannot store a {type(obj).__name__} in a training state (only tensors and JSON values).")


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


def _state_sha256(tensors: Mapping[str, torch.Tensor], text: str) -> str:
    """SHA-256 over the state's JSON and every tensor (name, dtype, shape, bytes), in name order."""
    h = hashlib.sha256()
    h.update(f"{_STATE_FORMAT}|{len(text)}|".encode())
    h.update(text.encode("utf-8"))
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def save_training_state(path: str | os.PathLike, *, tensors: Mapping[str, torch.Tensor], state: Any) -> Path:
    """Write ``tensors`` and the JSON-serialisable ``state`` to one safetensors file, atomically.

    The JSON goes into the safetensors header metadata, so the whole state is one file and
    one ``os.replace``: a crash leaves the previous complete state. The metadata also holds
    the SHA-256 of the JSON and of every tensor, checked by :func:`load_training_state`.
    """
    text = json.dumps(state, allow_nan=False)
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    metadata = {"format": _STATE_FORMAT, "state": text, "sha256": _state_sha256(cpu, text)}
    return atomic_write_bytes(path, _weights_bytes(cpu, metadata))


def _read_header(data: bytes) -> dict[str, Any]:
    if len(data) < 8:
        raise InputError("header too small")
    header_len = int.from_bytes(data[:8], "little")
    if header_len > len(data) - 8:
        raise InputError("header length past the end of the file")
    header = json.loads(data[8 : 8 + header_len])
    if not isinstance(header, dict):
        raise InputError("the header is not a JSON object")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or meta.get("format") != _STATE_FORMAT:
        raise InputError(f"format is {meta.get('format') if isinstance(meta, dict) else None!r}, expected {_STATE_FORMAT!r}")
    return meta


def load_training_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], Any]:
    """Read what :func:`save_training_state` wrote: ``(tensors, state)`` (CPU tensors), checksum verified.

    Raises:
        FileNotFoundError: no such file.
        NotARegularFileError: a FIFO, device or folder (never opened for reading).
        CheckpointError: unreadable, or its SHA-256 does not match (a flipped bit, a partial
            write, an edit): ``<path> is not a readable training state (...); the file is corrupt.``
    """
    path = Path(path)
    if not os.path.lexists(path):
        raise MissingFileError(f"{path} not found: no training state to resume from.")
    data = read_regular_bytes(path, what="training state file")
    try:
        tensors = _st_load(data)
        meta = _read_header(data)
        text = meta["state"]
        state = json.loads(text)
        recorded = meta.get("sha256")
    except (SafetensorError, ValueError, KeyError, RuntimeError, TypeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not a readable training state ({e}); the file is corrupt.") from e
    if recorded is None:
        raise CheckpointError(
            f"{path} is not a readable training state (it records no SHA-256, so it cannot be verified); "
            "the file is corrupt or was written by an older darkknowledge: start over (--force / force=True)."
        )
    digest = _state_sha256(tensors, text)
    if digest != recorded:
        raise CheckpointError(
            f"{path} is not a readable training state (its SHA-256 does not match the one recorded in it: expected "
            f"{recorded}, got {digest}); the file is corrupt, half-written or was altered."
        )
    return tensors, state


def peek_training_state(path: str | os.PathLike) -> tuple[int, int, bool]:
    """``(epochs done, epochs of the run, stopped early)`` of a training state, from its header only.

    Cheap (the tensors are not read); for messages such as "checkpoint at epoch 18 of 40".

    Raises:
        ValueError: the header cannot be read or lacks these fields.
    """
    path = Path(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFileError(f"{path} is {describe_file_type(st.st_mode)}, not a regular file")
        head = os.pread(fd, 8, 0)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 0 or n > min(st.st_size - 8, 1 << 28):
            raise InputError("header too small" if n < 0 else "header length past the end of the file")
        data = head + os.pread(fd, n, 8)
    finally:
        os.close(fd)
    try:
        state = json.loads(_read_header(data)["state"])
        done = len(state["history"])
        epochs = int(state["config"]["epochs"])
        stopped = bool(state.get("stopped_early", False))
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path} is not a readable training state ({e})") from e
    return done, epochs, stopped
