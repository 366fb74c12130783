"""Reading IDX files, the format of MNIST and Fashion-MNIST, with errors that say what is wrong.

An IDX file is a header followed by a dense big-endian array::

    bytes 0-1   0x00 0x00                 magic, always zero
    byte  2     type code                 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                                          0x0D float32, 0x0E float64
    byte  3     ndim                      number of dimensions (>= 1)
    4 * ndim    dims                      big-endian uint32 sizes d_1, ..., d_ndim
    ...         data                      d_1 * ... * d_ndim values, big-endian, C order

Files may be gzipped (recognised by the gzip magic ``1f 8b``, whatever their name).

Reference: Y. LeCun, C. Cortes, C. J. C. Burges, *The MNIST database of handwritten
digits*, "File formats for the MNIST database".
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from darkknowledge._checks import memory_limit_bytes
from darkknowledge.errors import InputError, InputTypeError, MissingFileError

__all__ = ["read_idx", "gunzip_bounded", "IDX_TYPES"]

#: IDX type code -> big-endian NumPy dtype.
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _raw_bytes(source: str | os.PathLike | bytes | bytearray | memoryview) -> tuple[bytes, str]:
    """Return the (decompressed) bytes of ``source`` and a label naming it in messages."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, label = bytes(source), "<bytes>"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = str(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise MissingFileError(f"IDX file {label} does not exist.") from None
    else:
        raise InputTypeError(
            f"source must be a path or bytes, got {type(source).__name__} instead."
        )
    if data[:2] == _GZIP_MAGIC:
        data = gunzip_bounded(data, label)
    return data, label


def gunzip_bounded(data: bytes, label: str, *, limit: int | None = None) -> bytes:
    """Decompress gzip ``data`` (all members), refusing more than ``limit`` bytes of output.

    ``limit`` defaults to this machine's memory: a small "gzip bomb" is refused with a
    ``ValueError`` naming ``label`` instead of exhausting memory. A corrupt or truncated stream
    raises ``ValueError`` naming ``label`` too.

    >>> import gzip
    >>> gunzip_bounded(gzip.compress(b"abc"), "x")
    b'abc'
    >>> gunzip_bounded(gzip.compress(bytes(100)), "x.gz", limit=10)
    Traceback (most recent call last):
    ...
    darkknowledge.errors.InputError: IDX file x.gz decompresses to more than 10 bytes: expected a file that fits in memory.
    """
    limit = memory_limit_bytes() if limit is None else limit
    out = bytearray()
    rest = data
    try:
        while rest:
            if out:
                rest = rest.lstrip(b"\x00")  # zero padding after a member, as gzip allows
                if not rest:
                    break
                if rest[:2] != _GZIP_MAGIC:
                    raise EOFError(f"{len(rest)} bytes after the gzip data that are not gzip")
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            chunk = inflater.decompress(rest, limit + 1 - len(out))
            out += chunk
            if len(out) > limit or inflater.unconsumed_tail:
                raise InputError(
                    f"IDX file {label} decompresses to more than {limit} bytes: expected a file that "
                    "fits in memory."
                )
            if not inflater.eof:
                raise EOFError("Compressed file ended before the end-of-stream marker was reached")
            rest = inflater.unused_data
    except (EOFError, zlib.error) as exc:
        raise InputError(f"IDX file {label} is a corrupt or truncated gzip file ({exc}).") from None
    return bytes(out)


def read_idx(source: str | os.PathLike | bytes | bytearray | memoryview) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a native-endian NumPy array.

    The header is checked against the length of the file: the magic number must be
    ``00 00 <type> <ndim>`` with a known type code and ``ndim >= 1``, and the data must
    hold exactly ``prod(dims) * itemsize`` bytes.

    Args:
        source: a path to an IDX file (``.gz`` or not), or its bytes.

    Returns:
        An array of shape ``(d_1, ..., d_ndim)`` in the file's type (``uint8`` for MNIST),
        native byte order.

    Raises:
        ValueError: naming the file and what was expected vs found, for a bad magic number,
            an unknown type code, a header cut short, or data that is too short / too long.
        FileNotFoundError: if the path does not exist.

    Example:
        >>> import struct
        >>> raw = bytes([0, 0, 0x08, 2]) + struct.pack(">II", 2, 3) + bytes(range(6))
        >>> read_idx(raw)
        array([[0, 1, 2],
               [3, 4, 5]], dtype=uint8)
    """
    data, label = _raw_bytes(source)
    if len(data) < 4:
        raise InputError(
            f"IDX file {label} is truncated: expected a 4-byte magic number, "
            f"found {len(data)} bytes in all."
        )
    zero0, zero1, type_code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0:
        raise InputError(
            f"IDX file {label} has a bad magic number: expected it to start with 00 00, "
            f"found {data[:4].hex(' ')}."
        )
    if type_code not in IDX_TYPES:
        known = ", ".join(f"0x{code:02X}" for code in IDX_TYPES)
        raise InputError(
            f"IDX file {label} has an unknown type code: expected one of {known}, "
            f"found 0x{type_code:02X}."
        )
    if ndim < 1:
        raise InputError(f"IDX file {label} has 0 dimensions: expected at least 1.")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise InputError(
            f"IDX file {label} is truncated in its header: expected {ndim} dimensions "
            f"({header_len} header bytes), found {len(data)} bytes in all."
        )
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    dtype = IDX_TYPES[type_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(data) - header_len
    if found < expected:
        raise InputError(
            f"IDX file {label} is truncated: its header promises shape {tuple(dims)} "
            f"({expected} data bytes), found {found} data bytes."
        )
    if found > expected:
        raise InputError(
            f"IDX file {label} has {found - expected} bytes more than its header's shape "
            f"{tuple(dims)} allows: expected {expected} data bytes, found {found}."
        )
    array = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header_len)
    return array.reshape(dims).astype(dtype.newbyteorder("="), copy=True)
