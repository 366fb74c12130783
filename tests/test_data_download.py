"""MNIST / Fashion-MNIST: search order, the system (Debian) folder, and the real download path
against a local HTTP server serving small IDX files generated here."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from darkknowledge.data import DataError, load_dataset
from darkknowledge.data import mnist as mnist_mod

ROLES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def idx(array: np.ndarray) -> bytes:
    """uint8 IDX bytes, written with struct, independently of the reader."""
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def make_arrays(seed=0, n_train=12, n_test=5, side=28, n_classes=10):
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, size=(n_train, side, side), dtype=np.uint8),
        "train_labels": rng.integers(0, n_classes, size=n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, size=(n_test, side, side), dtype=np.uint8),
        "test_labels": rng.integers(0, n_classes, size=n_test, dtype=np.uint8),
    }


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A clean environment: no data variables, cache and system folder under tmp_path."""
    for var in ("DARKKNOWLEDGE_DATA", "DARKKNOWLEDGE_OFFLINE", "DARKKNOWLEDGE_MNIST_MIRROR",
                "DARKKNOWLEDGE_FASHION_MNIST_MIRROR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(mnist_mod, "SYSTEM_DATA_DIR", tmp_path / "system")
    return tmp_path


@pytest.fixture
def fake(monkeypatch):
    """Small MNIST-format files whose checksums are patched into the registry for both names.

    Returns ``(arrays, gz_bytes)``; ``gz_bytes`` maps file names to their gzipped bytes.
    """
    arrays = make_arrays()
    gz = {ROLES[r]: gzip.compress(idx(a), mtime=0) for r, a in arrays.items()}
    for name in ("mnist", "fashion-mnist"):
        source = mnist_mod.SOURCES[name]
        files = {
            role: mnist_mod.RemoteFile(
                fname, "sha256", hashlib.sha256(gz[fname]).hexdigest(),
                hashlib.sha256(idx(arrays[role])).hexdigest(),
            )
            for role, fname in ROLES.items()
        }
        monkeypatch.setitem(mnist_mod.SOURCES, name, dataclasses.replace(source, files=files))
    return arrays, gz


def put(folder: Path, gz: dict[str, bytes], *, compressed=True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for fname, data in gz.items():
        if compressed:
            (folder / fname).write_bytes(data)
        else:
            (folder / fname.removesuffix(".gz")).write_bytes(gzip.decompress(data))
    return folder


def check_values(ds, arrays):
    assert ds.X_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.X_train.shape == (12, 1, 28, 28) and ds.X_test.shape == (5, 1, 28, 28)
    np.testing.assert_allclose(ds.X_train[:, 0], arrays["train_images"].astype(np.float64) / 255.0, rtol=1e-6)
    np.testing.assert_allclose(ds.X_test[:, 0], arrays["test_images"].astype(np.float64) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_train, arrays["train_labels"])
    np.testing.assert_array_equal(ds.y_test, arrays["test_labels"])


# --------------------------------------------------------------------------- search order


def test_data_dir_beats_env_beats_cache(env, fake, monkeypatch):
    arrays, gz = fake
    data_dir = put(env / "mine", gz)
    env_dir = put(env / "shared" / "mnist", gz)
    cache = put(env / "cache" / "darkknowledge" / "mnist", gz)
    system = put(env / "system" / "mnist", gz)
    monkeypatch.setenv("DARKKNOWLEDGE_DATA", str(env / "shared"))
    ds = load_dataset("mnist", data_dir=data_dir, download=False)
    assert ds.metadata["source"] == str(data_dir)
    check_values(ds, arrays)
    assert load_dataset("mnist", download=False).metadata["source"] == str(env_dir)
    monkeypatch.delenv("DARKKNOWLEDGE_DATA")
    assert load_dataset("mnist", download=False).metadata["source"] == str(cache)
    for f in cache.iterdir():
        f.unlink()
    assert load_dataset("mnist", download=False).metadata["source"] == str(system)


def test_name_subfolder_before_folder_itself(env, fake, monkeypatch):
    _, gz = fake
    put(env / "d", gz)
    sub = put(env / "d" / "fashion-mnist", gz)
    monkeypatch.setenv("DARKKNOWLEDGE_DATA", str(env / "d"))
    assert load_dataset("fashion-mnist", download=False).metadata["source"] == str(sub)
    assert load_dataset("fashion-mnist", data_dir=env / "d", download=False).metadata["source"] == str(sub)


def test_env_folder_itself_is_searched(env, fake, monkeypatch):
    arrays, gz = fake
    folder = put(env / "flat", gz)
    monkeypatch.setenv("DARKKNOWLEDGE_DATA", str(folder))
    ds = load_dataset("mnist", download=False)
    assert ds.metadata["source"] == str(folder)
    check_values(ds, arrays)


def test_uncompressed_files_are_accepted(env, fake):
    arrays, gz = fake
    folder = put(env / "raw", gz, compressed=False)
    ds = load_dataset("mnist", data_dir=folder, download=False)
    check_values(ds, arrays)
    assert ds.metadata["files"]["train_images"]["path"].endswith("train-images-idx3-ubyte")


def test_folder_missing_one_file_is_skipped(env, fake):
    _, gz = fake
    partial = put(env / "partial", gz)
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    cache = put(env / "cache" / "darkknowledge" / "mnist", gz)
    assert load_dataset("mnist", data_dir=partial, download=False).metadata["source"] == str(cache)


def test_debian_system_location_used_when_present(env, fake):
    arrays, gz = fake
    system = put(env / "system" / "fashion-mnist", gz)
    ds = load_dataset("fashion-mnist", download=False)
    assert ds.metadata["source"] == str(system)
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    check_values(ds, arrays)


def test_xdg_cache_home_default_is_home_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert mnist_mod.cache_dir("mnist") == tmp_path / ".cache" / "darkknowledge" / "mnist"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert mnist_mod.cache_dir("mnist") == tmp_path / "xdg" / "darkknowledge" / "mnist"


def test_not_found_lists_places_and_remedies(env, fake):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("fashion-mnist", data_dir=env / "nowhere", download=False)
    message = str(info.value)
    for place in (env / "nowhere" / "fashion-mnist", env / "nowhere",
                  env / "cache" / "darkknowledge" / "fashion-mnist", env / "system" / "fashion-mnist"):
        assert f"{place}," in message or f"{place} for" in message
    assert "\n" not in message  # one line, as the command line prints it
    assert "apt-get install dataset-fashion-mnist" in message
    assert "DARKKNOWLEDGE_DATA" in message
    assert "did not download them (download=False was passed)" in message
    assert "--data-dir on the command line, dataset.data_dir in a config, data_dir= in Python" in message
    with pytest.raises(FileNotFoundError, match=r"Fashion-MNIST files not found\. Looked in:"):
        load_dataset("fashion-mnist", download=False)


def test_offline_env_turns_download_off(env, fake, monkeypatch):
    monkeypatch.setenv("DARKKNOWLEDGE_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"(?s)MNIST files not found.*DARKKNOWLEDGE_OFFLINE is set, which turns downloads off"):
        load_dataset("mnist")


def test_local_file_with_wrong_checksum_is_rejected(env, fake):
    _, gz = fake
    folder = put(env / "bad", gz)
    other = gzip.compress(idx(make_arrays(seed=1)["train_images"]))
    (folder / "train-images-idx3-ubyte.gz").write_bytes(other)
    expected = mnist_mod.SOURCES["mnist"].files["train_images"].content_sha256
    got = hashlib.sha256(gzip.decompress(other)).hexdigest()
    with pytest.raises(DataError, match=rf"train-images-idx3-ubyte\.gz is not the official train-images-idx3-ubyte\.gz: expected sha256 {expected} .*got {got}"):
        load_dataset("mnist", data_dir=folder, download=False)


def patch_registry(monkeypatch, name, arrays):
    """Register arbitrary arrays as the official files of ``name``; return their gz bytes."""
    gz = {ROLES[r]: gzip.compress(idx(a), mtime=0) for r, a in arrays.items()}
    files = {
        role: mnist_mod.RemoteFile(fname, "sha256", hashlib.sha256(gz[fname]).hexdigest(),
                                   hashlib.sha256(idx(arrays[role])).hexdigest())
        for role, fname in ROLES.items()
    }
    monkeypatch.setitem(mnist_mod.SOURCES, name, dataclasses.replace(mnist_mod.SOURCES[name], files=files))
    return gz


def test_images_of_wrong_size_are_rejected(env, monkeypatch):
    gz = patch_registry(monkeypatch, "mnist", make_arrays(side=27))
    folder = put(env / "d", gz)
    with pytest.raises(ValueError, match=r"must hold uint8 images of shape \(N, 28, 28\), got uint8 of shape \(12, 27, 27\)"):
        load_dataset("mnist", data_dir=folder, download=False)


def test_label_count_mismatch_is_rejected(env, monkeypatch):
    arrays = make_arrays()
    arrays["train_labels"] = arrays["train_labels"][:-1]
    folder = put(env / "d", patch_registry(monkeypatch, "mnist", arrays))
    with pytest.raises(ValueError, match="has 11 labels, but its images file has 12 images"):
        load_dataset("mnist", data_dir=folder, download=False)


def test_label_out_of_range_is_rejected(env, monkeypatch):
    arrays = make_arrays()
    arrays["test_labels"][2] = 10
    folder = put(env / "d", patch_registry(monkeypatch, "mnist", arrays))
    with pytest.raises(ValueError, match=r"must hold labels in \[0, 9\], got 10"):
        load_dataset("mnist", data_dir=folder, download=False)


# --------------------------------------------------------------------------- downloads


def cache_files(env, name="mnist"):
    folder = env / "cache" / "darkknowledge" / name
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_good_then_found_in_cache(env, fake, local_http_server):
    arrays, gz = fake
    with local_http_server(gz) as server:
        ds = load_dataset("mnist", mirror=server.url)
    check_values(ds, arrays)
    assert ds.metadata["source"] == server.url
    assert len(server.requests) == 4
    assert cache_files(env) == sorted(gz)  # nothing else (no .part files)
    for fname, data in gz.items():
        assert (env / "cache" / "darkknowledge" / "mnist" / fname).read_bytes() == data
    again = load_dataset("mnist", download=False)  # no server now: from the cache
    assert again.metadata["source"] == str(env / "cache" / "darkknowledge" / "mnist")
    check_values(again, arrays)


def test_download_mirror_from_env_var(env, fake, monkeypatch, local_http_server):
    arrays, gz = fake
    with local_http_server(gz) as server:
        monkeypatch.setenv("DARKKNOWLEDGE_FASHION_MNIST_MIRROR", server.url.rstrip("/"))
        ds = load_dataset("fashion-mnist", download=True)
    check_values(ds, arrays)
    assert server.requests[0] == "/files/train-images-idx3-ubyte.gz"
    assert cache_files(env, "fashion-mnist") == sorted(gz)


def test_download_true_overrides_offline_env(env, fake, monkeypatch, local_http_server):
    arrays, gz = fake
    monkeypatch.setenv("DARKKNOWLEDGE_OFFLINE", "1")
    with local_http_server(gz) as server:
        check_values(load_dataset("mnist", mirror=server.url, download=True), arrays)


def test_corrupted_download_names_file_and_checksums(env, fake, local_http_server):
    _, gz = fake
    bad = dict(gz)
    flipped = bytearray(gz["t10k-images-idx3-ubyte.gz"])
    flipped[len(flipped) // 2] ^= 0xFF  # same length, different bytes
    bad["t10k-images-idx3-ubyte.gz"] = bytes(flipped)
    expected = hashlib.sha256(gz["t10k-images-idx3-ubyte.gz"]).hexdigest()
    got = hashlib.sha256(bad["t10k-images-idx3-ubyte.gz"]).hexdigest()
    with local_http_server(bad) as server:
        with pytest.raises(DataError, match=rf"Checksum mismatch for t10k-images-idx3-ubyte\.gz downloaded from {server.url}t10k-images-idx3-ubyte\.gz: expected sha256 {expected}, got {got}\. The file was not kept\."):
            load_dataset("mnist", mirror=server.url)
    # the two files before it were verified and kept; the bad one and no temporary file remain
    assert cache_files(env) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]


def test_truncated_download_leaves_nothing(env, fake, local_http_server):
    _, gz = fake
    n = len(gz["train-images-idx3-ubyte.gz"])
    with local_http_server(gz) as server:
        server.truncate.add("train-images-idx3-ubyte.gz")
        with pytest.raises(DataError, match=rf"Download of train-images-idx3-ubyte\.gz from .* was truncated: expected {n} bytes.*got {n // 2}\. Nothing was kept"):
            load_dataset("mnist", mirror=server.url)
    assert cache_files(env) == []


def test_md5_recorded_algorithm_is_used(env, fake, monkeypatch, local_http_server):
    arrays, gz = fake
    source = mnist_mod.SOURCES["mnist"]
    files = {
        role: dataclasses.replace(f, algorithm="md5", checksum=hashlib.md5(gz[f.filename]).hexdigest())
        for role, f in source.files.items()
    }
    monkeypatch.setitem(mnist_mod.SOURCES, "mnist", dataclasses.replace(source, files=files))
    with local_http_server(gz) as server:
        ds = load_dataset("mnist", mirror=server.url)
    check_values(ds, arrays)
    assert ds.metadata["files"]["train_labels"]["md5"] == hashlib.md5(gz["train-labels-idx1-ubyte.gz"]).hexdigest()
    wrong = dict(files, train_images=dataclasses.replace(files["train_images"], checksum="0" * 32))
    monkeypatch.setitem(mnist_mod.SOURCES, "fashion-mnist",
                        dataclasses.replace(mnist_mod.SOURCES["fashion-mnist"], files=wrong))
    with local_http_server(gz) as server:
        with pytest.raises(DataError, match=f"expected md5 {'0' * 32}, got {hashlib.md5(gz['train-images-idx3-ubyte.gz']).hexdigest()}"):
            load_dataset("fashion-mnist", mirror=server.url)
    assert cache_files(env, "fashion-mnist") == []


def test_http_error_is_reported(env, fake, local_http_server):
    _, gz = fake
    with local_http_server({}) as server:
        with pytest.raises(OSError, match=rf"Could not download train-images-idx3-ubyte\.gz from {server.url}train-images-idx3-ubyte\.gz: HTTP Error 404"):
            load_dataset("mnist", mirror=server.url)
    assert cache_files(env) == []


def test_download_argument_must_be_bool(env, fake, local_http_server):
    with pytest.raises(TypeError, match=r"download must be True, False or None, got 'yes' instead"):
        load_dataset("mnist", download="yes")


# --------------------------------------------------------------------------- real files

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
# SHA-256 of the uncompressed official Fashion-MNIST IDX files, as published independently.
FASHION_CONTENT_SHA256 = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


@pytest.mark.skipif(
    not all((DEBIAN / f).is_file() for f in FASHION_CONTENT_SHA256),
    reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)",
)
def test_debian_fashion_mnist_files(monkeypatch, tmp_path):
    for var in ("DARKKNOWLEDGE_DATA", "DARKKNOWLEDGE_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(mnist_mod, "SYSTEM_DATA_DIR", DEBIAN.parent)
    for fname, digest in FASHION_CONTENT_SHA256.items():
        assert hashlib.sha256(gzip.decompress((DEBIAN / fname).read_bytes())).hexdigest() == digest
    ds = load_dataset("fashion-mnist", download=False)
    assert ds.metadata["source"] == str(DEBIAN)
    assert ds.X_train.shape == (60000, 1, 28, 28) and ds.X_test.shape == (10000, 1, 28, 28)
    assert ds.X_train.dtype == np.float32 and 0.0 <= ds.X_train.min() and ds.X_train.max() == 1.0
    np.testing.assert_array_equal(np.bincount(ds.y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(ds.y_test), [1000] * 10)
