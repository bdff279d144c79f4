"""Content-addressed artifact stores: bytes filed under their sha256.

``ArtifactStore`` is what the vault, the purge and the sweep use. Two stores
keep it: ``FolderArtifactStore`` (a local or shared folder, here) and
``FsspecArtifactStore`` (an object store bucket, ``lifecycle.store.object_artifacts``);
``lifecycle.store.artifact_location.open_artifact_store`` picks one from a location.
Both file an artifact at ``ab/cdef…`` under their root, verify its sha256 on
every read, and make it visible under its digest only once it is whole.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO, Protocol

from lifecycle.store.errors import ArtifactCorrupt, ArtifactMissing
from lifecycle.store.files import digest_path, write_durably

# a staged file older than this was left by a crashed submit (its keys were never written): removed
STALE_STAGING_SECONDS = 24 * 3600.0
STAGE_PREFIX = ".tmp-stage-"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArtifactStore(Protocol):
    """Bytes filed under their sha256; see the module's docstring."""

    def put(self, data: bytes) -> str: ...

    def stage(self) -> StagedFile:
        """A file written a piece at a time and filed under its digest by ``commit``."""

    def open(self, digest: str) -> VerifiedReader:
        """Read an artifact a piece at a time; ``VerifiedReader.finish`` checks its digest."""

    def get(self, digest: str) -> bytes:
        """The artifact's bytes, checked against its digest (``ArtifactMissing``, ``ArtifactCorrupt``)."""

    def exists(self, digest: str) -> bool: ...

    def size(self, digest: str) -> int:
        """Its size in bytes; 0 when it is not there."""

    def delete(self, digest: str) -> None:
        """Remove it for good (idempotent)."""

    def age_seconds(self, digest: str, now: float) -> float:
        """Seconds since it was written, as of ``now`` (a ``time.time()``); 0 when it is not there."""

    def digests(self) -> list[str]:
        """Every artifact filed, sorted; never a staged one."""

    def remove_stale_staging(self, older_than_seconds: float, now: float) -> int:
        """Remove what staged writes a crash interrupted, untouched for ``older_than_seconds``
        or longer; returns how many were removed."""


class FolderArtifactStore:
    """Artifacts in a folder (local, or one every worker shares)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"FolderArtifactStore({str(self.root)!r})"

    def _path(self, digest: str) -> Path:
        return digest_path(self.root, digest)

    def put(self, data: bytes) -> str:
        digest = sha256(data)
        path = self._path(digest)
        if not path.exists():
            write_durably(path, data)
        return digest

    def stage(self) -> StagedFile:
        self.root.mkdir(parents=True, exist_ok=True)
        remove_older(self.root.glob(STAGE_PREFIX + "*"), STALE_STAGING_SECONDS, time.time())
        return StagedFile(self.root, self._publish)

    def _publish(self, file: BinaryIO, tmp: Path, digest: str) -> None:
        os.fsync(file.fileno())
        file.close()
        path = self._path(digest)
        if path.exists():
            tmp.unlink(missing_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, path)

    def remove_stale_staging(self, older_than_seconds: float, now: float) -> int:
        # staged files sit in the root; a put that died leaves its temporary beside its target
        return remove_older([*self.root.glob(STAGE_PREFIX + "*"), *self.root.glob("??/.tmp-*")],
                             older_than_seconds, now)

    def open(self, digest: str) -> VerifiedReader:
        path = self._path(digest)
        try:
            return VerifiedReader(open(path, "rb"), digest, f"the file {path}")
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
        check(data, digest, f"the file {path}")
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


def remove_older(paths: Iterable[Path], seconds: float, now: float) -> int:
    """Remove those of ``paths`` (local files) not modified for ``seconds``; returns how many."""
    removed = 0
    for path in paths:
        try:
            if now - path.stat().st_mtime >= seconds:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            pass  # committed, discarded or removed by another sweep meanwhile
    return removed


def check(data: bytes, digest: str, where: str) -> None:
    """Raise ``ArtifactCorrupt`` unless ``data`` is the bytes of ``digest``."""
    if sha256(data) != digest:
        raise ArtifactCorrupt(f"artifact {digest} does not match its digest: {where} was altered or damaged")


class StagedFile:
    """An artifact written as it streams into a temporary file in ``folder``,
    hashed as it goes, published under its digest only by ``commit`` and
    removed by ``discard``. Until then nothing lists it; one a crash left
    behind is removed by the store's ``remove_stale_staging``.

    ``publish(file, tmp, digest)`` is the store's part of ``commit``: it is
    handed the whole, flushed file and must leave ``tmp`` gone."""

    def __init__(self, folder: Path, publish: Callable[[BinaryIO, Path, str], None]) -> None:
        self._publish = publish
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=STAGE_PREFIX)
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
        """File it under its digest; returns the digest."""
        digest = self.digest()
        try:
            self._publish(self._file, self.tmp, digest)
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
    acted on) before ``finish`` returned. ``where`` names the stored copy in
    messages."""

    def __init__(self, file: BinaryIO, digest: str, where: str) -> None:
        self._file = file
        self.digest = digest
        self.where = where
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
            raise ArtifactCorrupt(f"artifact {self.digest} does not match its digest: {self.where} was "
                                  "altered or damaged")

    def close(self) -> None:
        self._file.close()
