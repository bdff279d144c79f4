"""Writing a file so that a crash never leaves a partial one under its name."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_durably(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, sync it, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def digest_name(digest: str) -> str:
    """The relative name a file named by its sha256 is filed under: ``ab/cdef…``."""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return f"{digest[:2]}/{digest[2:]}"


def digest_path(root: Path, digest: str) -> Path:
    """Where a file named by its sha256 lives under ``root``."""
    return root / digest_name(digest)
