"""Artifacts in an object store bucket (S3, Google Cloud Storage, Azure Blob), through fsspec.

The layout, digests and checks are the folder store's: an artifact is the
object ``<root>/ab/cdef…``, read back only through its sha256.

Publishing. An artifact's key is its digest, known only once its last byte
is written, so a staged artifact is spooled to a local temporary file (in
the system's temporary folder, ``TMPDIR``), hashed, and then uploaded to its
digest's key in one upload. These stores make an object visible only when
its upload completes: a PUT replaces the whole object at once, and a
multipart upload shows nothing until it is completed. No reader ever sees
part of an artifact under its digest, and ``digests`` never lists one that
is still being written. An upload a crash interrupted leaves only an
incomplete multipart upload, which nothing lists or reads; its bytes are
sealed under keys that were never committed, which the sweep destroys.

Deleting is a real delete of the object; a versioned bucket would keep the
old version, so the bucket must not keep noncurrent versions.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import tempfile
from pathlib import Path
from typing import BinaryIO

from fsspec import AbstractFileSystem

from lifecycle.store.artifacts import STAGE_PREFIX, StagedFile, VerifiedReader, check, remove_older, sha256
from lifecycle.store.errors import ArtifactMissing, StorageUnavailable
from lifecycle.store.files import digest_name

_FILED = re.compile(r"[0-9a-f]{2}/[0-9a-f]{62}")


class FsspecArtifactStore:
    """Artifacts under ``root`` (``bucket/prefix``, without the protocol) of the file system ``fs``;
    staged ones are spooled in ``spool`` (the system's temporary folder by default)."""

    def __init__(self, fs: AbstractFileSystem, root: str, spool: str | Path | None = None) -> None:
        self.fs = fs
        self.root = root
        self.spool = spool

    def __repr__(self) -> str:
        return f"FsspecArtifactStore({self.fs.unstrip_protocol(self.root)!r})"

    def _key(self, digest: str) -> str:
        return f"{self.root}/{digest_name(digest)}"

    def _where(self, key: str) -> str:
        return f"the object {self.fs.unstrip_protocol(key)}"

    def _spool(self) -> Path:
        return Path(self.spool if self.spool is not None else tempfile.gettempdir())

    @contextlib.contextmanager
    def _reaching(self, what: str):
        """Calls to the bucket: an error other than "no such object" or a mistake in the code or the
        configuration is the service's or the network's (botocore's connection errors are not even
        OSErrors), raised as ``StorageUnavailable`` so that the caller can try again later rather than
        take the artifact for lost."""
        try:
            yield
        except (FileNotFoundError, TypeError, ValueError, AttributeError, NotImplementedError):
            raise
        except Exception as exc:
            raise StorageUnavailable(f"the object store did not answer while {what} "
                                     f"({self.fs.unstrip_protocol(self.root)}): {type(exc).__name__}: {exc}") from exc

    def put(self, data: bytes) -> str:
        digest = sha256(data)
        key = self._key(digest)
        with self._reaching(f"storing {digest}"):
            if not self.fs.exists(key):
                self.fs.pipe_file(key, data)  # one PUT (or multipart upload): visible only once whole
        return digest

    def stage(self) -> StagedFile:
        return StagedFile(self._spool(), self._publish)

    def _publish(self, file: BinaryIO, tmp: Path, digest: str) -> None:
        file.close()
        key = self._key(digest)
        try:
            with self._reaching(f"storing {digest}"):
                if not self.fs.exists(key):
                    self.fs.put_file(str(tmp), key)  # see the module's docstring: never half visible
        finally:
            tmp.unlink(missing_ok=True)

    def remove_stale_staging(self, older_than_seconds: float, now: float) -> int:
        return remove_older(self._spool().glob(STAGE_PREFIX + "*"), older_than_seconds, now)

    def open(self, digest: str) -> VerifiedReader:
        key = self._key(digest)
        try:
            with self._reaching(f"opening {digest}"):
                return VerifiedReader(self.fs.open(key, "rb"), digest, self._where(key))
        except FileNotFoundError:
            raise ArtifactMissing(f"artifact {digest} is missing (no {self._where(key)})") from None

    def size(self, digest: str) -> int:
        try:
            with self._reaching(f"reading the size of {digest}"):
                return self.fs.size(self._key(digest))
        except FileNotFoundError:
            return 0

    def get(self, digest: str) -> bytes:
        key = self._key(digest)
        try:
            with self._reaching(f"reading {digest}"):
                data = self.fs.cat_file(key)
        except FileNotFoundError:
            raise ArtifactMissing(f"artifact {digest} is missing (no {self._where(key)})") from None
        check(data, digest, self._where(key))
        return data

    def exists(self, digest: str) -> bool:
        with self._reaching(f"looking for {digest}"):
            return self.fs.exists(self._key(digest))

    def delete(self, digest: str) -> None:
        try:
            with self._reaching(f"deleting {digest}"):
                self.fs.rm_file(self._key(digest))
        except FileNotFoundError:
            pass

    def age_seconds(self, digest: str, now: float) -> float:
        try:
            with self._reaching(f"reading the age of {digest}"):
                modified = self.fs.modified(self._key(digest))
        except FileNotFoundError:
            return 0.0
        if modified.tzinfo is None:  # some backends give UTC without saying so
            modified = modified.replace(tzinfo=dt.timezone.utc)
        return now - modified.timestamp()

    def digests(self) -> list[str]:
        try:
            with self._reaching("listing the artifacts"):
                names = self.fs.find(self.root)
        except FileNotFoundError:
            return []
        start = len(self.root) + 1
        return sorted(n[start:start + 2] + n[start + 3:] for n in names if _FILED.fullmatch(n[start:]))
