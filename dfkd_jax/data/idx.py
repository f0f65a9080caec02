"""Read and write IDX files, the format of the MNIST and Fashion-MNIST distributions.

An IDX file is: two zero bytes, a type code (0x08 = uint8), the number of
dimensions ``d``, then ``d`` big-endian uint32 sizes, then the payload in C order.
Files may be gzipped (``.gz``); reading detects this from the gzip magic bytes,
not from the name.
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

_UINT8 = 0x08
_GZIP_MAGIC = b"\x1f\x8b"


def _decode(raw: bytes, path: os.PathLike | str) -> np.ndarray:
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != _UINT8:
        raise ValueError(f"{path}: unsupported IDX type 0x{dtype_code:02x} (only uint8)")
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: payload has {data.size} bytes, header says shape {shape}")
    return data.reshape(shape)


def read_idx(path: os.PathLike | str) -> np.ndarray:
    """Returns the uint8 array stored in the IDX file ``path`` (gzipped or not)."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == _GZIP_MAGIC:
        raw = gzip.decompress(raw)
    return _decode(raw, path)


def write_idx(path: os.PathLike | str, array: np.ndarray, *, compress: bool | None = None) -> None:
    """Writes a uint8 array as an IDX file; gzipped if ``compress`` (default: name ends in .gz)."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"write_idx supports uint8 arrays only, got {array.dtype}")
    if compress is None:
        compress = os.fspath(path).endswith(".gz")
    header = bytes([0, 0, _UINT8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array).tobytes()
    if compress:
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    with open(path, "wb") as f:
        f.write(payload)
