"""Content-addressed artifact store: bytes filed under their sha256."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from lifecycle.store.errors import ArtifactCorrupt, ArtifactMissing
from lifecycle.store.files import digest_path, write_durably


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArtifactStore:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def _path(self, digest: str) -> Path:
        return digest_path(self.root, digest)

    def put(self, data: bytes) -> str:
        digest = sha256(data)
        path = self._path(digest)
        if not path.exists():
            write_durably(path, data)
        return digest

    def get(self, digest: str) -> bytes:
        path = self._path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactMissing(f"artifact {digest} is missing (no file {path})") from None
        if sha256(data) != digest:
            raise ArtifactCorrupt(f"artifact {digest} does not match its digest: the file {path} was altered or "
                                  "damaged")
        return data

    def exists(self, digest: str) -> bool:
        return self._path(digest).exists()

    def delete(self, digest: str) -> None:
        self._path(digest).unlink(missing_ok=True)

    def age_seconds(self, digest: str, now: float) -> float:
        try:
            return now - self._path(digest).stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def digests(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.parent.name + p.name for p in self.root.glob("??/*") if not p.name.startswith(".tmp-"))
