"""Fuzzing the file readers: random and mutated bytes get only the documented errors.

Each reader is fed random bytes and valid files mutated by hypothesis (bytes flipped, the file
truncated, bytes inserted, deleted or appended). What may come out:

=========================== ================================================================
reader                      documented outcome for a bad file
=========================== ================================================================
``read_idx``                ``ValueError`` naming the file and what was expected
``load_dataset(.npz)``      ``ValueError`` (``DataError`` for an unreadable archive or an
                            object array) or ``TypeError`` (an array of non-numbers)
``load_dataset(.csv)``      ``ValueError`` (``DataError`` for undecodable text)
``SoftTargetCache.get``     a ``CacheCorruptionWarning`` and a rebuild: the right logits anyway
``load_model``              ``ValueError`` (checksum, JSON, safetensors, spec, shapes)
``load_training_state``     ``ValueError``
=========================== ================================================================

Any other exception type is a crash and fails the test; a generous per-example deadline
catches a hang. A mutation that happens to leave a valid file must load as one.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import struct
import tempfile
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from darkknowledge.checkpoint import load_model, load_training_state, save_model, save_training_state
from darkknowledge.data import load_dataset, read_idx
from darkknowledge.models import build_model
from darkknowledge.soft_targets import CacheCorruptionWarning, SoftTargetCache

FUZZ = settings(
    max_examples=150,
    deadline=timedelta(seconds=5),  # a hang, not a slow shared CPU
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def mutated(draw, original: bytes) -> bytes:
    """``original`` with 1-4 mutations; flips favour the first 256 bytes, where the headers are."""
    data = bytearray(original)
    for op in draw(st.lists(st.sampled_from(["flip", "flip", "truncate", "insert", "delete", "append"]), min_size=1, max_size=4)):
        n = len(data)
        if op == "flip" and n:
            i = draw(st.one_of(st.integers(0, min(n, 256) - 1), st.integers(0, n - 1)))
            data[i] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del data[draw(st.integers(0, n)):]
        elif op == "insert":
            i = draw(st.integers(0, n))
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete" and n:
            i = draw(st.integers(0, n - 1))
            del data[i : i + draw(st.integers(1, 16))]
        elif op == "append":
            data += draw(st.binary(min_size=1, max_size=64))
    return bytes(data)


def _bytes_or_mutation(valid: list[bytes]):
    return st.one_of(st.binary(max_size=300), st.sampled_from(valid).flatmap(mutated))


# --------------------------------------------------------------------------------------------
# IDX


def _idx(array: np.ndarray, code: int) -> bytes:
    return bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(array.dtype.newbyteorder(">")).tobytes()


_IDX_VALID = [
    _idx(np.arange(24, dtype=np.uint8).reshape(2, 3, 4), 0x08),
    _idx(np.arange(6, dtype=np.int16).reshape(3, 2), 0x0B),
    _idx(np.linspace(0, 1, 5).astype(np.float32), 0x0D),
]
_IDX_VALID += [gzip.compress(b, mtime=0) for b in _IDX_VALID]


@FUZZ
@given(data=_bytes_or_mutation(_IDX_VALID))
def test_read_idx_fuzz(data):
    try:
        array = read_idx(data)
    except ValueError as exc:
        assert str(exc).startswith("IDX file <bytes>")  # names the source
        return
    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    ndim = raw[3]
    assert array.shape == struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])  # what the header promised


def test_read_idx_fuzz_from_disk(tmp_path):
    # the path-based entry reads the same bytes: one mutated file through the path, named in the message
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(_IDX_VALID[0][:-1])
    with pytest.raises(ValueError, match=r"IDX file .*images-idx3-ubyte is truncated"):
        read_idx(path)


# --------------------------------------------------------------------------------------------
# user .npz / .csv through load_dataset


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


_rng = np.random.default_rng(0)
_NPZ_VALID = [
    _npz_bytes(X=_rng.normal(size=(6, 3)), y=np.array([0, 1, 2, 0, 1, 2])),
    _npz_bytes(X=_rng.normal(size=(4, 2, 2)).astype(np.float32), y=np.array([0, 1, 1, 0]),
               X_test=np.ones((2, 2, 2)), y_test=np.array([1, 0]), class_names=np.array(["a", "b"])),
]


@FUZZ
@given(data=_bytes_or_mutation(_NPZ_VALID))
def test_load_npz_fuzz(tmp_path, data):
    path = tmp_path / "fuzz.npz"
    path.write_bytes(data)
    try:
        ds = load_dataset(path)
    except (ValueError, TypeError) as exc:
        assert str(exc), "an error must say what is wrong"
        return
    assert ds.X_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert np.isfinite(ds.X_train).all() and len(ds.X_train) == len(ds.y_train) > 0
    assert 0 <= ds.y_train.min() and ds.y_train.max() < len(ds.class_names)


_CSV_VALID = [
    b"a,b,label\n1.5,2,0\n-3,4e1,1\n0,0,2\n",
    b"weight,species\n4.1,cat\n30.5,dog\n3.9,cat\n",
]


@FUZZ
@given(data=st.one_of(_bytes_or_mutation(_CSV_VALID), st.text(alphabet=",\n\r\"0123456789.-eabnlif \x00", max_size=120).map(str.encode)))
def test_load_csv_fuzz(tmp_path, data):
    path = tmp_path / "fuzz.csv"
    path.write_bytes(data)
    label_column = "species" if b"species" in data else None
    try:
        ds = load_dataset(path, label_column=label_column)
    except ValueError as exc:
        assert str(exc), "an error must say what is wrong"
        return
    assert ds.X_train.dtype == np.float32 and np.isfinite(ds.X_train).all()
    assert 0 <= ds.y_train.min() and ds.y_train.max() < len(ds.class_names)


# --------------------------------------------------------------------------------------------
# the soft-target cache


_TEACHER = torch.nn.Linear(3, 4)
torch.nn.init.normal_(_TEACHER.weight, generator=torch.Generator().manual_seed(0))
_X = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    _WANT = _TEACHER(_X)


def _cache_file(folder: Path) -> tuple[Path, bytes]:
    cache = SoftTargetCache(folder)
    cache.get(_TEACHER, _X)
    (path,) = list(folder.glob("*.safetensors"))
    return path, path.read_bytes()


@FUZZ
@given(data=st.data())
def test_soft_target_cache_fuzz(tmp_path, data):
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    path, valid = _cache_file(folder)
    path.write_bytes(data.draw(_bytes_or_mutation([valid])))
    cache = SoftTargetCache(folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = cache.get(_TEACHER, _X)
    assert torch.equal(got, _WANT)  # the right logits, from disk or rebuilt
    kinds = {w.category for w in caught}
    assert kinds <= {CacheCorruptionWarning}
    assert (cache.hits, cache.rebuilt) in ((1, 0), (0, 1))
    assert (cache.rebuilt == 1) == (CacheCorruptionWarning in kinds)


# --------------------------------------------------------------------------------------------
# checkpoints


_MODEL = build_model("mlp", input_shape=(5,), num_classes=3, hidden=[4], seed=0)
with tempfile.TemporaryDirectory() as _d:
    save_model(_d, _MODEL)
    _MODEL_JSON = (Path(_d) / "model.json").read_bytes()
    _MODEL_WEIGHTS = (Path(_d) / "model.safetensors").read_bytes()


@FUZZ
@given(part=st.sampled_from(["json", "weights", "weights_resummed"]), data=st.data())
def test_load_model_fuzz(tmp_path, part, data):
    """model.json mutated; the weights mutated (caught by the checksum); the weights mutated *and* the
    checksum updated to match, so that the safetensors parser and the shape checks are reached."""
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    info, weights = _MODEL_JSON, _MODEL_WEIGHTS
    if part == "json":
        info = data.draw(_bytes_or_mutation([_MODEL_JSON]))
    else:
        weights = data.draw(_bytes_or_mutation([_MODEL_WEIGHTS]))
        if part == "weights_resummed":
            doc = json.loads(_MODEL_JSON)
            doc["sha256"] = hashlib.sha256(weights).hexdigest()
            info = json.dumps(doc).encode()
    (folder / "model.json").write_bytes(info)
    (folder / "model.safetensors").write_bytes(weights)
    try:
        model = load_model(folder)
    except ValueError as exc:
        assert str(exc), "an error must say what is wrong"
        return
    out = model(torch.zeros(2, *model.spec.input_shape, dtype=next(model.parameters()).dtype))
    assert out.shape == (2, model.spec.num_classes)


with tempfile.TemporaryDirectory() as _d:
    _STATE_BYTES = save_training_state(
        Path(_d) / "last.safetensors",
        tensors={"model.w": torch.arange(6.0).reshape(2, 3), "rng": torch.zeros(4, dtype=torch.uint8)},
        state={"history": [{"epoch": 1, "loss": 0.5}], "config": {"lr": 0.1}},
    ).read_bytes()


@FUZZ
@given(data=_bytes_or_mutation([_STATE_BYTES]))
def test_load_training_state_fuzz(tmp_path, data):
    path = tmp_path / "last.safetensors"
    path.write_bytes(data)
    try:
        tensors, state = load_training_state(path)
    except ValueError as exc:
        assert "is not a readable training state" in str(exc) and str(path) in str(exc)
        return
    assert isinstance(tensors, dict) and all(isinstance(t, torch.Tensor) for t in tensors.values())


# --------------------------------------------------------------------------------------------
# the training state's *structure*: mutated JSON state and tensors, saved with a valid checksum,
# so that they reach fit's validation. Only CheckpointError (a ValueError naming the file) may
# come out, or a resume that runs to its end; never KeyError / IndexError / RuntimeError.

from darkknowledge.checkpoint import CheckpointError  # noqa: E402
from darkknowledge.data._types import Splits  # noqa: E402
from darkknowledge.models import build_model  # noqa: E402
from darkknowledge.rundir import claim_run_dir  # noqa: E402
from darkknowledge.train import fit  # noqa: E402

_FIT = dict(epochs=3, batch_size=16, lr=0.1, momentum=0.9, seed=1, progress=False)


class _Stop(BaseException):
    pass


def _fuzz_splits():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(48, 4, generator=g)
    y = (X[:, 0] > 0).long() + (X[:, 1] > 0.5).long()
    return Splits(X[:32], y[:32], X[32:], y[32:], class_names=["a", "b", "c"])


def _fuzz_model():
    return build_model("mlp", input_shape=(4,), num_classes=3, hidden=[5], dropout=0.1, seed=0)


def _stop_after_1(epoch, metrics):
    if epoch == 1:
        raise _Stop()


with tempfile.TemporaryDirectory() as _d:
    try:
        fit(_fuzz_model(), _fuzz_splits(), out_dir=Path(_d) / "run", on_epoch_end=_stop_after_1, **_FIT)
    except _Stop:
        pass
    _RUN_TENSORS, _RUN_STATE = load_training_state(Path(_d) / "run" / "checkpoint" / "last.safetensors")


def _json_paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _json_paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _json_paths(v, prefix + (i,))


_PATHS = [p for p in _json_paths(_RUN_STATE) if p]
_ODD_VALUES = [None, -1, 0, 1, 10**6, 1.5, -2.5, "x", "", [], {}, True, False, [1, 2], {"__tensor__": "nope"},
               {"__items__": 3}]


@st.composite
def _state_mutation(draw):
    state = json.loads(json.dumps(_RUN_STATE))
    tensors = {k: v.clone() for k, v in _RUN_TENSORS.items()}
    for _ in range(draw(st.integers(1, 2))):
        if draw(st.booleans()):  # the JSON state
            path = draw(st.sampled_from(_PATHS))
            parent = state
            try:
                for k in path[:-1]:
                    parent = parent[k]
                op = draw(st.sampled_from(["delete", "replace", "append", "truncate"]))
                key = path[-1]
                if op == "delete":
                    del parent[key]
                elif op == "replace":
                    parent[key] = draw(st.sampled_from(_ODD_VALUES))
                elif op == "append" and isinstance(parent[key], list):
                    parent[key].append(parent[key][-1] if parent[key] else 0)
                elif op == "truncate" and isinstance(parent[key], list) and parent[key]:
                    parent[key].pop()
            except (KeyError, IndexError, TypeError):
                pass  # an earlier mutation removed the path
        elif tensors:  # the tensors
            name = draw(st.sampled_from(sorted(tensors)))
            op = draw(st.sampled_from(["delete", "truncate", "dtype", "flatten", "extra"]))
            t = tensors[name]
            if op == "delete":
                del tensors[name]
            elif op == "truncate" and t.numel() > 1:
                tensors[name] = t.reshape(-1)[:-1].clone()
            elif op == "dtype":
                tensors[name] = t.to(torch.float64 if t.dtype != torch.float64 else torch.float32)
            elif op == "flatten":
                tensors[name] = t.reshape(-1).clone()
            elif op == "extra":
                tensors[name] = torch.cat([t.reshape(-1), t.reshape(-1)[:1]]).clone()
    return tensors, state


@settings(max_examples=100, deadline=timedelta(seconds=10), database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(mutation=_state_mutation())
def test_training_state_structure_fuzz(tmp_path_factory, mutation):
    tensors, state = mutation
    out = tmp_path_factory.mktemp("run")
    claim_run_dir(out, kind="fit").release()  # a darkknowledge run folder (its marker)
    try:
        save_training_state(out / "checkpoint" / "last.safetensors", tensors=tensors, state=state)
    except (TypeError, ValueError):
        return  # not storable at all (e.g. a non-JSON value): nothing to load
    model = _fuzz_model()
    try:
        result = fit(model, _fuzz_splits(), out_dir=out, resume=True, force=False, **_FIT)
    except CheckpointError as exc:
        assert str(out / "checkpoint" / "last.safetensors") in str(exc)
        return
    assert result.epochs_run <= 3 and all(torch.isfinite(p).all() for p in model.parameters())
