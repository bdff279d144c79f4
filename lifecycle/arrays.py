"""A deterministic byte format for named numpy arrays.

``np.savez`` stamps zip entries with the current time, so the same arrays
would get a new digest every time; content addressing wants equal bytes for
equal content.
"""

from __future__ import annotations

import json
import struct

import numpy as np

MAGIC = b"LCA1"


def pack(arrays: dict[str, np.ndarray]) -> bytes:
    header, buffers, offset = [], [], 0
    for name in sorted(arrays):
        arr = np.asarray(arrays[name])
        if arr.dtype.hasobject:
            raise TypeError(f"array {name!r} has dtype object; only plain dtypes can be stored")
        raw = arr.tobytes(order="C")
        header.append({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape), "offset": offset,
                       "nbytes": len(raw)})
        buffers.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode()
    return MAGIC + struct.pack("<Q", len(head)) + head + b"".join(buffers)


def unpack(data: bytes) -> dict[str, np.ndarray]:
    if data[:4] != MAGIC:
        raise ValueError("not a lifecycle array bundle")
    (head_len,) = struct.unpack("<Q", data[4:12])
    header = json.loads(data[12 : 12 + head_len])
    body = memoryview(data)[12 + head_len :]
    out = {}
    for item in header:
        raw = body[item["offset"] : item["offset"] + item["nbytes"]]
        out[item["name"]] = np.frombuffer(raw, dtype=np.dtype(item["dtype"])).reshape(item["shape"]).copy()
    return out
