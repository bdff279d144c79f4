"""Data keys for crypto-shredding, kept apart from the artifacts they open.

Every artifact is encrypted (see ``lifecycle.vault``); its keys live here, one
file per artifact holding one 32-byte key per record. Erasing records
overwrites their keys in place and syncs the file; erasing an artifact
overwrites and unlinks its key file. A copy of the artifact store taken
before an erasure is then useless for what was erased, as long as this
folder is not copied with it: keep it on other storage, out of the artifact
store's backups.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from lifecycle.store.errors import ArtifactMissing
from lifecycle.store.files import digest_path, write_durably

KEY_BYTES = 32
ZERO = bytes(KEY_BYTES)


class KeyStore:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def _path(self, digest: str) -> Path:
        return digest_path(self.root, digest)

    def create(self, digest: str, keys: bytes) -> None:
        if len(keys) % KEY_BYTES:
            raise ValueError("keys must be a whole number of 32-byte keys")
        write_durably(self._path(digest), keys)

    def read(self, digest: str) -> bytes:
        try:
            return self._path(digest).read_bytes()
        except FileNotFoundError:
            raise ArtifactMissing(f"the keys of artifact {digest} are not in the key store at {self.root} "
                                  "(erased, or the key store is not the one this ledger uses)") from None

    def exists(self, digest: str) -> bool:
        return self._path(digest).exists()

    def shred(self, digest: str, records: Iterable[int]) -> None:
        """Overwrite the keys of ``records`` in place (idempotent)."""
        try:
            fd = os.open(self._path(digest), os.O_RDWR)
        except FileNotFoundError:
            return  # the whole artifact was destroyed already
        try:
            size = os.fstat(fd).st_size
            for i in sorted(set(records)):
                if (i + 1) * KEY_BYTES > size:
                    raise ValueError(f"artifact {digest} has no record {i}")
                os.pwrite(fd, ZERO, i * KEY_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)

    def destroy(self, digest: str) -> None:
        """Overwrite every key of the artifact, then remove the file (idempotent)."""
        path = self._path(digest)
        try:
            _overwrite(path)
        except FileNotFoundError:
            return
        path.unlink(missing_ok=True)

    def remove_stale_temporaries(self, older_than_seconds: float, now: float) -> int:
        """Overwrite and remove the temporary files writes a crash cut short left, untouched for
        ``older_than_seconds`` or longer; returns how many. They hold keys: left in place, one
        would outlive the shredding of the keys it copies, and the data they open."""
        removed = 0
        for path in self.root.glob("??/.tmp-*") if self.root.exists() else ():
            try:
                if now - path.stat().st_mtime < older_than_seconds:
                    continue
                _overwrite(path)
                path.unlink()
                removed += 1
            except FileNotFoundError:
                pass  # renamed into place or removed by another sweep meanwhile
        return removed

    def digests(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.parent.name + p.name for p in self.root.glob("??/*") if not p.name.startswith(".tmp-"))

    def age_seconds(self, digest: str, now: float) -> float:
        try:
            return now - self._path(digest).stat().st_mtime
        except FileNotFoundError:
            return 0.0


def _overwrite(path: Path) -> None:
    """Overwrite the whole file with zeros, durably."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, bytes(os.fstat(fd).st_size), 0)
        os.fsync(fd)
    finally:
        os.close(fd)
