"""The digest of a request's payload, which idempotency keys are compared by."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np


def payload_sha(**fields: Any) -> str:
    """Digest of a request's payload, for idempotency comparisons."""
    h = hashlib.sha256()
    for k in sorted(fields):
        v = fields[k]
        h.update(k.encode() + b"\0")
        if isinstance(v, np.ndarray):
            h.update(f"{v.dtype.str}{v.shape}".encode() + v.tobytes())
        elif isinstance(v, list) and v and isinstance(v[0], np.ndarray):
            for a in v:
                h.update(f"{a.dtype.str}{a.shape}".encode() + a.tobytes())
        else:
            h.update(json.dumps(v, sort_keys=True).encode())
        h.update(b"\1")
    return h.hexdigest()
