"""Encode a mapping of arrays as a safetensors file in memory.

The format: an 8-byte little-endian header length, a JSON header giving each
tensor's dtype, shape and byte range, then the raw little-endian data.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Mapping

import numpy as np

_DTYPE_NAMES = {
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(np.float64): "F64",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
    np.dtype(np.int8): "I8",
    np.dtype(np.uint8): "U8",
    np.dtype(np.bool_): "BOOL",
}


def encode(tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> bytes:
    """The safetensors bytes of tensors (arrays, or anything np.asarray takes).

    Raises TypeError for a name that is not a string or a dtype the format
    (as the library reads it) has no name for, and ValueError for a name or
    metadata text holding a NUL character, which the library refuses.
    """
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
        for key, text in header["__metadata__"].items():
            if "\0" in key or "\0" in text:
                raise ValueError(f"metadata {key!r} contains a NUL character")
    blobs = []
    offset = 0
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be strings, got {name!r}")
        if "\0" in name:
            raise ValueError(f"tensor name {name!r} contains a NUL character")
        array = np.asarray(value)
        dtype_name = _DTYPE_NAMES.get(array.dtype.newbyteorder("="))
        if dtype_name is None:
            raise TypeError(f"tensor '{name}': dtype {array.dtype} cannot be stored (convert it to float32)")
        data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype_name, "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode("utf-8")
    text += b" " * (-len(text) % 8)  # keeps the data 8-byte aligned
    return b"".join([struct.pack("<Q", len(text)), text, *blobs])
