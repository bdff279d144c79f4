"""Encrypted artifacts: training rows and probe sets one key per row, model
states one key each, the keys in the key store (crypto-shredding).

A row file holds each row's features and label sealed with AES-GCM under a
key of its own, with the sample's digest as associated data: reading a row
for another sample fails authentication, so a pointer can only ever return
its own sample's bytes. Forgetting rows overwrites their keys; the file's
bytes never move, so no other sample's pointer changes. Keys are used once,
so a fixed nonce is safe.

Row files are written (``RowWriter``) and read (``rows``, ``rows_into``) a
block at a time: a learn of any size never holds its file, nor a second
copy of its rows, in memory.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lifecycle.store.artifacts import ArtifactStore, StagedFile, sha256
from lifecycle.store.errors import ArtifactCorrupt, ArtifactMissing
from lifecycle.store.keystore import KEY_BYTES, ZERO, KeyStore

ROWS = b"LCR1"
BLOB = b"LCB1"
NONCE = bytes(12)
TAG = 16
_HEAD = struct.Struct("<4sQQ")  # magic, rows, features
_SYNCS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lifecycle-keys")
_READ_BLOCK = 4 << 20  # bytes of sealed rows read at once by ``rows``


class Erased(ArtifactCorrupt):
    """The record's key was destroyed: its content is erased."""


class Vault:
    def __init__(self, artifacts: ArtifactStore, keys: KeyStore) -> None:
        self.artifacts = artifacts
        self.keys = keys

    # ---- rows ----------------------------------------------------------------

    def put_rows(self, X: np.ndarray, y: np.ndarray, aad: Sequence[str] | None = None) -> str:
        """Seal ``(X[i], y[i])`` under a fresh key each, bound to ``aad[i]``
        (the sample's digest; probe rows are bound to nothing)."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        y = np.ascontiguousarray(y, dtype=np.int64)
        n, d = X.shape
        aad = aad if aad is not None else [""] * n
        keys = os.urandom(KEY_BYTES * n)
        parts = [_HEAD.pack(ROWS, n, d)]
        for i in range(n):
            plain = X[i].tobytes() + y[i].tobytes()
            parts.append(AESGCM(keys[i * KEY_BYTES:(i + 1) * KEY_BYTES]).encrypt(NONCE, plain, aad[i].encode()))
        return self._store(b"".join(parts), keys)

    def row_writer(self, rows: int | None = None) -> RowWriter:
        """Seal rows a chunk at a time into a file staged in the artifact store
        (``rows``: how many will come, when known; see ``RowWriter``)."""
        return RowWriter(self, rows)

    def rows(self, digest: str, positions: Sequence[int] | None = None,
             aad: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The rows at ``positions`` (all by default), each checked against its sample's ``aad``.

        The file is read a block at a time (never whole), and its digest is
        checked once it has been read through; any failure, whichever row it
        is found at, raises only after that check, so a damaged file is
        reported as damaged."""
        shape = self.row_shape(digest)
        if shape is None:
            self.artifacts.open(digest).finish()  # a damaged file says so
            raise ArtifactCorrupt(f"artifact {digest} is not a row file")
        n, d = shape
        positions = range(n) if positions is None else positions
        X = np.empty((len(positions), d), np.float32)
        y = np.empty(len(positions), np.int64)
        self.rows_into(digest, positions, aad, X, y, None)
        return X, y

    def row_shape(self, digest: str) -> tuple[int, int] | None:
        """(rows, features) as the file's header states them (unverified), None when it has none."""
        reader = self.artifacts.open(digest)
        try:
            head = reader.read(_HEAD.size)
        finally:
            reader.close()
        if len(head) != _HEAD.size:
            return None
        magic, n, d = _HEAD.unpack(head)
        if magic != ROWS or self.artifacts.size(digest) != _HEAD.size + n * (d * 4 + 8 + TAG):
            return None  # not a row file, or one whose header does not describe it
        return n, d

    def rows_into(self, digest: str, positions: Sequence[int], aad: Sequence[str] | None, X: np.ndarray,
                  y: np.ndarray, targets: Sequence[int] | None) -> None:
        """Decrypt the rows at ``positions`` straight into ``X[targets[j]]``, ``y[targets[j]]``
        (``targets`` defaults to 0, 1, ...): no copy of the file, nor of the rows, is made."""
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        targets = np.arange(len(positions)) if targets is None else np.asarray(targets, dtype=np.int64).reshape(-1)
        if aad is not None and len(aad) != len(positions):
            raise ValueError(f"{len(aad)} associated data for {len(positions)} positions")
        if len(targets) != len(positions):
            raise ValueError(f"{len(targets)} targets for {len(positions)} positions")
        reader = self.artifacts.open(digest)
        problem: Exception | None = None
        try:
            head = reader.read(_HEAD.size)
            magic, n, d = _HEAD.unpack(head) if len(head) == _HEAD.size else (b"", 0, 0)
            try:
                keys = self.keys.read(digest)
            except ArtifactMissing as exc:
                problem = exc
            if magic != ROWS:
                problem = ArtifactCorrupt(f"artifact {digest} is not a row file")
            elif len(positions) and X.shape[1] != d:
                problem = ArtifactCorrupt(f"artifact {digest} holds rows of {d} features, not {X.shape[1]}")
            elif len(positions) and (positions.min() < 0 or positions.max() >= n):
                bad = positions[(positions < 0) | (positions >= n)][0]
                problem = ArtifactCorrupt(f"artifact {digest} has no row {bad}")
            if problem is None and len(positions):
                problem = self._decrypt_rows(reader, digest, d, keys, positions, aad, X, y, targets)
        except BaseException:
            reader.close()
            raise
        reader.finish()  # a damaged file is reported as such, before what its rows said
        if problem is not None:
            raise problem

    @staticmethod
    def _decrypt_rows(reader, digest: str, d: int, keys: bytes, positions: np.ndarray, aad: Sequence[str] | None,
                      X: np.ndarray, y: np.ndarray, targets: np.ndarray) -> Exception | None:
        """Read sealed rows block by block up to the last wanted one and open the wanted ones;
        returns the first problem instead of raising it (the caller checks the file first)."""
        size = d * 4 + 8 + TAG
        order = np.argsort(positions, kind="stable")
        wanted = positions[order]
        per_block = max(1, _READ_BLOCK // size)
        block = bytearray(per_block * size)
        view = memoryview(block)
        j, last = 0, int(wanted[-1])
        for first in range(0, last + 1, per_block):
            count = min(per_block, last + 1 - first)
            if reader.readinto(view[:count * size]) != count * size:
                return ArtifactCorrupt(f"artifact {digest} is truncated: it ends before row {first + count - 1}")
            stop = int(np.searchsorted(wanted, first + count))
            for k in range(j, stop):
                i, at = int(wanted[k]), int(order[k])
                key = keys[i * KEY_BYTES:(i + 1) * KEY_BYTES]
                if key == ZERO:
                    return Erased(f"row {i} of artifact {digest} was erased")
                label = b"" if aad is None else aad[at]
                start = (i - first) * size
                try:
                    plain = AESGCM(key).decrypt(NONCE, view[start:start + size],
                                                label.encode() if isinstance(label, str) else bytes(label))
                except InvalidTag:
                    return ArtifactCorrupt(f"row {i} of artifact {digest} does not belong to the sample that "
                                           "points at it, or was altered")
                out = int(targets[at])
                X[out] = np.frombuffer(plain, np.float32, d)
                y[out] = np.frombuffer(plain, np.int64, 1, d * 4)[0]
            j = stop
        return None

    def shred_rows(self, digest: str, positions: Sequence[int]) -> None:
        self.keys.shred(digest, positions)

    # ---- whole blobs (model states) ------------------------------------------

    def put_blob(self, plain: bytes) -> str:
        key = os.urandom(KEY_BYTES)
        return self._store(BLOB + AESGCM(key).encrypt(NONCE, plain, BLOB), key)

    def blob(self, digest: str) -> bytes:
        data = self.artifacts.get(digest)
        if data[:4] != BLOB:
            raise ArtifactCorrupt(f"artifact {digest} is not a sealed state")
        key = self.keys.read(digest)
        if key == ZERO:
            raise Erased(f"artifact {digest} was erased")
        try:
            return AESGCM(key).decrypt(NONCE, data[4:], BLOB)
        except InvalidTag:
            raise ArtifactCorrupt(f"artifact {digest} does not open with its key") from None

    # ---- both ------------------------------------------------------------------

    def _store(self, data: bytes, keys: bytes) -> str:
        digest = sha256(data)
        # The two files are written and synced side by side: their syncs overlap
        # in the file system's journal. Either may land first; until the ledger
        # commits a pointer to the digest, both are unreferenced and swept.
        keys_written = _SYNCS.submit(self.keys.create, digest, keys)
        try:
            self.artifacts.put(data)
        finally:
            keys_written.result()
        return digest

    def _store_staged(self, staged: StagedFile, keys: bytes) -> str:
        """``_store`` for a file staged a piece at a time: the key file and the data
        file are synced side by side once the digest is known."""
        digest = staged.digest()
        keys_written = _SYNCS.submit(self.keys.create, digest, keys)
        try:
            staged.commit()
        finally:
            keys_written.result()
        return digest

    def destroy(self, digest: str) -> None:
        """Erase an artifact: its keys first (that is the erasure), then its bytes."""
        self.keys.destroy(digest)
        self.artifacts.delete(digest)

    def exists(self, digest: str) -> bool:
        return self.artifacts.exists(digest)


class RowWriter:
    """Seals rows as they arrive (the row file format of ``put_rows``, one key
    per row, each row bound to its sample's digest) into a file staged in the
    artifact store; the keys stay in memory (32 bytes a row) until ``finish``
    writes the key file beside the data file. ``abort`` (or leaving a ``with``
    block by an exception) removes the staged file: nothing was ever filed,
    and no key of it was ever written.

    When ``rows`` is not known at the start, the header is written last and
    the digest is computed by reading the file back once."""

    def __init__(self, vault: Vault, rows: int | None = None) -> None:
        self.vault = vault
        self.expected = rows
        self.rows = 0
        self.features: int | None = None
        self._keys = bytearray(KEY_BYTES * rows) if rows is not None else bytearray()
        self._file = vault.artifacts.stage()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, kind, *_: Any) -> None:
        if kind is not None:
            self.abort()

    def write(self, X: np.ndarray, y: np.ndarray, aad: Sequence[str | bytes] | None = None) -> None:
        X = np.ascontiguousarray(X, dtype=np.float32)
        y = np.ascontiguousarray(y, dtype=np.int64)
        n, d = X.shape
        if y.shape != (n,) or (aad is not None and len(aad) != n):
            raise ValueError(f"{n} rows with {y.shape} labels and {None if aad is None else len(aad)} digests")
        if self.features is None:
            self.features = d
            self._file.write(_HEAD.pack(ROWS, self.expected or 0, d))
        elif d != self.features:
            raise ValueError(f"rows of {d} features after rows of {self.features}")
        if self.expected is not None and self.rows + n > self.expected:
            raise ValueError(f"more than the {self.expected} rows announced")
        width = d * 4 + 8
        size = width + TAG
        block = max(1, _READ_BLOCK // size)  # rows sealed into one buffer before it is written
        for first in range(0, n, block):
            last = min(n, first + block)
            plain = np.empty((last - first, width), np.uint8)
            plain[:, :d * 4] = X[first:last].view(np.uint8).reshape(last - first, d * 4)
            plain[:, d * 4:] = y[first:last].view(np.uint8).reshape(last - first, 8)
            keys = os.urandom(KEY_BYTES * (last - first))
            sealed = bytearray((last - first) * size)
            for i in range(last - first):
                label = b"" if aad is None else aad[first + i]
                sealed[i * size:(i + 1) * size] = AESGCM(keys[i * KEY_BYTES:(i + 1) * KEY_BYTES]).encrypt(
                    NONCE, plain[i].data, label.encode() if isinstance(label, str) else bytes(label))
            self._file.write(sealed)
            at = self.rows * KEY_BYTES
            self._keys[at:at + len(keys)] = keys  # in place when the count was announced
            self.rows += last - first

    def finish(self) -> str:
        """File the rows under their digest, with their keys; returns the digest."""
        try:
            if self.features is None:
                raise ValueError("no rows were written")
            if self.expected is None:
                self._file.patch(0, _HEAD.pack(ROWS, self.rows, self.features))
            elif self.rows != self.expected:
                raise ValueError(f"{self.rows} rows written of the {self.expected} announced")
            return self.vault._store_staged(self._file, self._keys)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        self._file.discard()
        self._keys = bytearray()
