"""Content-addressed artifact store: bytes filed under their sha256."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

from lifecycle.store.errors import ArtifactCorrupt, ArtifactMissing
from lifecycle.store.files import digest_path, write_durably

# a staged file older than this was left by a crashed submit (its keys were never written): removed
STALE_STAGING_SECONDS = 24 * 3600.0


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

    def stage(self) -> StagedFile:
        """A file written a piece at a time and filed under its digest by ``commit`` (see ``StagedFile``)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._remove_stale_staging()
        return StagedFile(self)

    def _remove_stale_staging(self) -> None:
        now = time.time()
        for path in self.root.glob(".tmp-stage-*"):
            try:
                if now - path.stat().st_mtime > STALE_STAGING_SECONDS:
                    path.unlink(missing_ok=True)
            except FileNotFoundError:
                pass

    def open(self, digest: str) -> VerifiedReader:
        """Read an artifact a piece at a time; ``VerifiedReader.finish`` checks its digest."""
        path = self._path(digest)
        try:
            return VerifiedReader(open(path, "rb"), digest, path)
        except FileNotFoundError:
            raise ArtifactMissing(f"artifact {digest} is missing (no file {path})") from None

    def size(self, digest: str) -> int:
        try:
            return self._path(digest).stat().st_size
        except FileNotFoundError:
            return 0

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


class StagedFile:
    """An artifact written as it streams, hashed as it goes, filed under its
    digest only by ``commit`` (synced, then renamed into place) and removed by
    ``discard``. Until then it is a temporary file in the store's root that
    nothing lists; one a crash left behind is removed a day later."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        fd, tmp = tempfile.mkstemp(dir=store.root, prefix=".tmp-stage-")
        self.tmp = Path(tmp)
        self._file = os.fdopen(fd, "w+b")
        self._hash = hashlib.sha256()
        self._hashed = True  # False once a patch invalidated the running digest
        self.size = 0

    def write(self, data) -> None:
        view = memoryview(data).cast("B")
        self._file.write(view)
        if self._hashed:
            self._hash.update(view)
        self.size += len(view)

    def patch(self, offset: int, data: bytes) -> None:
        """Overwrite bytes already written (a header whose counts were not known at the start);
        the digest is then computed by reading the file back once."""
        self._file.seek(offset)
        self._file.write(data)
        self._file.seek(0, os.SEEK_END)
        self._hashed = False

    def digest(self) -> str:
        """The finished file's sha256 (the file takes no more writes after this)."""
        self._file.flush()
        if not self._hashed:
            self._hash = hashlib.sha256()
            self._file.seek(0)
            block = bytearray(1 << 22)
            while n := self._file.readinto(block):
                self._hash.update(memoryview(block)[:n])
            self._hashed = True
        return self._hash.hexdigest()

    def commit(self) -> str:
        """Sync the file and file it under its digest; returns the digest."""
        digest = self.digest()
        path = self.store._path(digest)
        try:
            os.fsync(self._file.fileno())
            self._file.close()
            if path.exists():
                self.tmp.unlink(missing_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.tmp, path)
        except BaseException:
            self.discard()
            raise
        return digest

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.tmp.unlink(missing_ok=True)


class VerifiedReader:
    """An artifact read a piece at a time. Its sha256 is checked by ``finish``,
    which reads whatever is left: nothing read from it may be trusted (or
    acted on) before ``finish`` returned."""

    def __init__(self, file, digest: str, path: Path) -> None:
        self._file = file
        self.digest = digest
        self.path = path
        self._hash = hashlib.sha256()

    def read(self, n: int) -> bytes:
        data = self._file.read(n)
        self._hash.update(data)
        return data

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        got = 0
        while got < len(view):
            n = self._file.readinto(view[got:])
            if not n:
                break
            got += n
        self._hash.update(view[:got])
        return got

    def finish(self) -> None:
        """Read the rest, close, and raise ``ArtifactCorrupt`` if the bytes are not the digest's."""
        try:
            block = bytearray(1 << 22)
            while n := self._file.readinto(block):
                self._hash.update(memoryview(block)[:n])
        finally:
            self._file.close()
        if self._hash.hexdigest() != self.digest:
            raise ArtifactCorrupt(f"artifact {self.digest} does not match its digest: the file {self.path} was "
                                  "altered or damaged")

    def close(self) -> None:
        self._file.close()
