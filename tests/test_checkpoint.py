"""Atomic files, checksummed model folders and training state: round trips and every failure named."""

import hashlib
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from darkknowledge import checkpoint as ckpt
from darkknowledge.checkpoint import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    load_model,
    load_training_state,
    load_weights,
    pack_tensors,
    save_model,
    save_training_state,
    unpack_tensors,
)
from darkknowledge.models import build_model


def _mlp(seed=0, hidden=(5,)):
    return build_model("mlp", input_shape=(4,), num_classes=3, hidden=hidden, seed=seed)


# ----------------------------------------------------------------------------- atomic writes


def test_atomic_writes_round_trip(tmp_path):
    atomic_write_bytes(tmp_path / "sub" / "a.bin", b"\x00\x01")
    assert (tmp_path / "sub" / "a.bin").read_bytes() == b"\x00\x01"
    atomic_write_text(tmp_path / "b.txt", "héllo")
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo"
    atomic_write_json(tmp_path / "c.json", {"x": [1, 2.5, None]})
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": [1, 2.5, None]}
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.bin", "b.txt", "c.json", "sub"]  # no temp files left


def test_crash_mid_write_leaves_previous_file_intact(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    atomic_write_json(target, {"epoch": 1})

    def crash(src, dst):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(ckpt.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        atomic_write_json(target, {"epoch": 2})
    assert json.loads(target.read_text()) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # the temp file was removed


def test_crash_during_write_itself(tmp_path, monkeypatch):
    target = tmp_path / "w.bin"
    atomic_write_bytes(target, b"old")
    real_fsync = os.fsync

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new" * 1000)
    monkeypatch.setattr(ckpt.os, "fsync", real_fsync)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["w.bin"]


def test_atomic_write_errors(tmp_path):
    with pytest.raises(TypeError, match=r"data must be bytes, got str instead"):
        atomic_write_bytes(tmp_path / "x", "text")
    with pytest.raises(TypeError, match=r"text must be a str, got bytes instead"):
        atomic_write_text(tmp_path / "x", b"bytes")
    with pytest.raises(ValueError, match=r"Out of range float values are not JSON compliant"):
        atomic_write_json(tmp_path / "x.json", {"loss": float("nan")})
    assert not (tmp_path / "x.json").exists()


# ----------------------------------------------------------------------------- model folders


def test_save_and_load_model_round_trip(tmp_path):
    m = _mlp()
    save_model(tmp_path, m, metadata={"val_accuracy": 0.9})
    info = json.loads((tmp_path / "model.json").read_text())
    data = (tmp_path / "model.safetensors").read_bytes()
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    assert info["spec"] == m.spec.to_dict()
    assert info["num_parameters"] == 4 * 5 + 5 + 5 * 3 + 3
    # the weights file is plain safetensors, readable by safetensors itself
    raw = load_file(tmp_path / "model.safetensors")
    assert set(raw) == set(m.state_dict())
    m2 = load_model(tmp_path)
    assert not m2.training
    assert m2.spec == m.spec
    assert m2.metadata == {"val_accuracy": 0.9}
    for k, v in m.state_dict().items():
        assert torch.equal(m2.state_dict()[k], v), k


def test_float64_model_comes_back_float64(tmp_path):
    m = build_model("linear", input_shape=(3,), num_classes=1, seed=0).double()
    save_model(tmp_path, m)
    m2 = load_model(tmp_path)
    assert m2.out.weight.dtype == torch.float64
    assert torch.equal(m2.out.weight, m.out.weight)


def test_explicit_spec_and_custom_model(tmp_path):
    custom = torch.nn.Sequential(torch.nn.Linear(4, 2))
    save_model(tmp_path, custom)  # no spec: weights only
    with pytest.raises(ValueError, match=r"has no model spec, so the architecture cannot be rebuilt"):
        load_model(tmp_path)
    other = torch.nn.Sequential(torch.nn.Linear(4, 2))
    load_weights(tmp_path, other)
    assert torch.equal(other[0].weight, custom[0].weight)


def test_flipped_byte_detected_by_checksum(tmp_path):
    save_model(tmp_path, _mlp())
    path = tmp_path / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # alter one weight byte
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model.safetensors does not match the SHA-256 recorded in .*model.json"):
        load_model(tmp_path)


def test_half_written_file_detected(tmp_path):
    save_model(tmp_path, _mlp())
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match=r"corrupt, half-written or was altered"):
        load_model(tmp_path)


def test_unreadable_safetensors_with_matching_checksum(tmp_path):
    save_model(tmp_path, _mlp())
    junk = b"this is not safetensors"
    (tmp_path / "model.safetensors").write_bytes(junk)
    info = json.loads((tmp_path / "model.json").read_text())
    info["sha256"] = hashlib.sha256(junk).hexdigest()
    (tmp_path / "model.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match=r"model.safetensors is not a readable safetensors file"):
        load_model(tmp_path)


def test_shape_mismatch_names_the_file(tmp_path):
    save_model(tmp_path, _mlp(hidden=(5,)))
    info = json.loads((tmp_path / "model.json").read_text())
    info["spec"]["options"]["hidden"] = [6]
    (tmp_path / "model.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match=r"(?s)model.safetensors does not fit the model: .*size mismatch"):
        load_model(tmp_path)
    with pytest.raises(ValueError, match=r"(?s)does not fit the model: .*Missing key"):
        load_weights(tmp_path, torch.nn.Linear(4, 3))


def test_missing_files_and_bad_json(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model.json not found: a model folder holds model.safetensors and model.json"):
        load_model(tmp_path)
    save_model(tmp_path, _mlp())
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"model.safetensors not found"):
        load_model(tmp_path)
    save_model(tmp_path, _mlp())
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"model.json is not valid JSON"):
        load_model(tmp_path)
    (tmp_path / "model.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match=r"is not a darkknowledge model file"):
        load_model(tmp_path)


def test_crash_between_weights_and_json_is_detected(tmp_path, monkeypatch):
    save_model(tmp_path, _mlp(seed=0))
    real_replace = os.replace
    calls = []

    def replace_then_crash(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the weights were replaced, model.json was not
            raise OSError("crash")
        real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", replace_then_crash)
    with pytest.raises(OSError, match="crash"):
        save_model(tmp_path, _mlp(seed=1))
    monkeypatch.setattr(ckpt.os, "replace", real_replace)
    with pytest.raises(ValueError, match=r"does not match the SHA-256"):
        load_model(tmp_path)


def test_save_model_errors(tmp_path):
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module, got dict instead"):
        save_model(tmp_path, {})
    with pytest.raises(TypeError, match=r"metadata must be a mapping or None, got list instead"):
        save_model(tmp_path, _mlp(), metadata=[1])
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module, got str instead"):
        load_weights(tmp_path, "model")


# ----------------------------------------------------------------------------- training state


def test_optimizer_state_round_trip(tmp_path):
    m = _mlp()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        opt.zero_grad()
        m(torch.randn(6, 4)).logsumexp(1).mean().backward()
        opt.step()
    tensors = {"rng": torch.get_rng_state()}
    packed = pack_tensors(opt.state_dict(), "optimizer", tensors)
    save_training_state(tmp_path / "s.safetensors", tensors=tensors, state={"optimizer": packed, "epoch": 3})
    t2, state = load_training_state(tmp_path / "s.safetensors")
    assert state["epoch"] == 3
    assert torch.equal(t2["rng"], tensors["rng"])
    opt2 = torch.optim.SGD(_mlp().parameters(), lr=0.5, momentum=0.0)
    opt2.load_state_dict(unpack_tensors(state["optimizer"], t2))
    sd1, sd2 = opt.state_dict(), opt2.state_dict()
    assert sd1["param_groups"] == sd2["param_groups"]
    assert sd1["state"].keys() == sd2["state"].keys()
    for k in sd1["state"]:
        assert torch.equal(sd1["state"][k]["momentum_buffer"], sd2["state"][k]["momentum_buffer"])


def test_training_state_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"s.safetensors not found: no training state to resume from"):
        load_training_state(tmp_path / "s.safetensors")
    save_model(tmp_path, _mlp())  # a model file is not a training state
    with pytest.raises(ValueError, match=r"is not a readable training state"):
        load_training_state(tmp_path / "model.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match=r"bad.safetensors is not a readable training state"):
        load_training_state(tmp_path / "bad.safetensors")
    with pytest.raises(TypeError, match=r"cannot store a set in a training state"):
        pack_tensors({"x": {1, 2}}, "p", {})
