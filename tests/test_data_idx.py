"""IDX reader: round trips against files written here with struct, and every error it raises."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from darkknowledge.data import read_idx

CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    """The IDX encoding of ``array``, written independently of the reader."""
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("dtype", list(CODES))
@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 5, 6), (2, 1, 3, 3)])
def test_round_trip_every_type_and_rank(dtype, shape):
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    else:
        array = rng.normal(size=shape).astype(dtype)
    out = read_idx(idx_bytes(array, CODES[dtype]))
    assert out.shape == shape
    assert out.dtype == np.dtype(dtype)
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_multibyte_values_are_big_endian():
    raw = bytes([0, 0, 0x0B, 1]) + struct.pack(">I", 2) + b"\x01\x02\xff\xfe"
    np.testing.assert_array_equal(read_idx(raw), np.array([258, -2], dtype=np.int16))


def test_reads_plain_and_gzipped_files_from_disk(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    raw = idx_bytes(images, 0x08)
    plain, packed = tmp_path / "images-idx3-ubyte", tmp_path / "images.idx"
    plain.write_bytes(raw)
    packed.write_bytes(gzip.compress(raw))  # gzip recognised by content, not by name
    np.testing.assert_array_equal(read_idx(plain), images)
    np.testing.assert_array_equal(read_idx(str(packed)), images)
    np.testing.assert_array_equal(read_idx(gzip.compress(raw)), images)


def test_result_is_writable_copy():
    out = read_idx(idx_bytes(np.arange(4, dtype=np.uint8), 0x08))
    out[0] = 9  # frombuffer alone would be read-only
    assert out[0] == 9


def good() -> bytes:
    return idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4), 0x08)


def test_bad_magic_names_file_and_bytes(tmp_path):
    path = tmp_path / "bad.idx"
    path.write_bytes(b"\x01\x00" + good()[2:])
    with pytest.raises(ValueError, match=r"bad\.idx has a bad magic number: expected it to start with 00 00, found 01 00 08 02"):
        read_idx(path)


def test_unknown_type_code():
    with pytest.raises(ValueError, match=r"unknown type code: expected one of 0x08, .*0x0E, found 0x07"):
        read_idx(b"\x00\x00\x07" + good()[3:])


def test_zero_dimensions():
    with pytest.raises(ValueError, match="has 0 dimensions: expected at least 1"):
        read_idx(b"\x00\x00\x08\x00")


def test_shorter_than_magic():
    with pytest.raises(ValueError, match=r"truncated: expected a 4-byte magic number, found 2 bytes"):
        read_idx(b"\x00\x00")


def test_header_cut_short():
    with pytest.raises(ValueError, match=r"truncated in its header: expected 2 dimensions \(12 header bytes\), found 9 bytes"):
        read_idx(good()[:9])


def test_wrong_dims_truncated_data(tmp_path):
    path = tmp_path / "short-idx1-ubyte"
    path.write_bytes(good()[:-5])
    with pytest.raises(ValueError, match=r"short-idx1-ubyte is truncated: its header promises shape \(3, 4\) \(12 data bytes\), found 7 data bytes"):
        read_idx(path)


def test_wrong_dims_extra_data():
    with pytest.raises(ValueError, match=r"has 3 bytes more than its header's shape \(3, 4\) allows: expected 12 data bytes, found 15"):
        read_idx(good() + b"abc")


def test_wrong_dims_header_claims_more_than_file():
    raw = bytes([0, 0, 0x08, 2]) + struct.pack(">II", 60000, 784) + bytes(100)
    with pytest.raises(ValueError, match=r"promises shape \(60000, 784\) \(47040000 data bytes\), found 100"):
        read_idx(raw)


def test_truncated_gzip(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(good())[:-10])
    with pytest.raises(ValueError, match=r"cut\.gz is a corrupt or truncated gzip file"):
        read_idx(path)


def test_corrupt_gzip():
    data = bytearray(gzip.compress(good() * 20))
    data[12:20] = b"\xff" * 8
    with pytest.raises(ValueError, match="is a corrupt or truncated gzip file"):
        read_idx(bytes(data))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"IDX file .*nope\.idx does not exist"):
        read_idx(tmp_path / "nope.idx")


def test_wrong_source_type():
    with pytest.raises(TypeError, match="source must be a path or bytes, got int instead"):
        read_idx(3)
