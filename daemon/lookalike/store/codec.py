"""Record encoding: a version header, a JSON document, raw numpy arrays. Never pickle.

    offset  size  field
    0       4     magic b"LKR\\x00"
    4       2     format version (little-endian)
    6       4     JSON length N
    10      N     JSON: {"doc": {...}, "arrays": [{"name", "dtype", "shape"}, ...]}
    10+N    ...   the arrays' bytes, in that order, C-contiguous

Reading a record can only ever produce dicts, strings, numbers and arrays of plain dtypes: a
context file cannot make lookalike run code.
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np

MAGIC = b"LKR\x00"
VERSION = 1
_HEAD = struct.Struct("<4sHI")
_DTYPES = {"uint8", "float32", "int32", "uint32", "int64", "uint64"}


class RecordError(ValueError):
    pass


def pack(doc: dict, arrays: dict[str, np.ndarray] | None = None) -> bytes:
    arrays = arrays or {}
    specs = []
    blobs = []
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        if array.dtype.name not in _DTYPES:
            raise RecordError(f"array {name!r} has unsupported dtype {array.dtype}")
        specs.append({"name": name, "dtype": array.dtype.name, "shape": list(array.shape)})
        blobs.append(array.tobytes())
    header = json.dumps({"doc": doc, "arrays": specs}, separators=(",", ":")).encode()
    return b"".join([_HEAD.pack(MAGIC, VERSION, len(header)), header, *blobs])


def unpack(data: bytes | memoryview) -> tuple[dict, dict[str, np.ndarray]]:
    data = bytes(data)
    if len(data) < _HEAD.size:
        raise RecordError("record shorter than its header")
    magic, version, length = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise RecordError("not a lookalike record")
    if version > VERSION:
        raise RecordError(f"record format {version} is newer than this lookalike reads ({VERSION})")
    try:
        header = json.loads(data[_HEAD.size:_HEAD.size + length])
    except ValueError as exc:
        raise RecordError(f"record header is not JSON: {exc}") from None
    arrays = {}
    offset = _HEAD.size + length
    for spec in header["arrays"]:
        if spec["dtype"] not in _DTYPES:
            raise RecordError(f"array {spec['name']!r} has unsupported dtype {spec['dtype']}")
        dtype = np.dtype(spec["dtype"])
        if not all(isinstance(side, int) and side >= 0 for side in spec["shape"]):
            raise RecordError(f"array {spec['name']!r} has an invalid shape {spec['shape']}")
        count = math.prod(spec["shape"])
        end = offset + count * dtype.itemsize
        if end > len(data):
            raise RecordError(f"array {spec['name']!r} runs past the end of the record")
        arrays[spec["name"]] = np.frombuffer(data, dtype, count, offset).reshape(spec["shape"])
        offset = end
    return header["doc"], arrays
