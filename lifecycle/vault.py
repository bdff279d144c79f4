"""Encrypted artifacts: training rows and probe sets one key per row, model
states one key each, the keys in the key store (crypto-shredding).

A row file holds each row's features and label sealed with AES-GCM under a
key of its own, with the sample's digest as associated data: reading a row
for another sample fails authentication, so a pointer can only ever return
its own sample's bytes. Forgetting rows overwrites their keys; the file's
bytes never move, so no other sample's pointer changes. Keys are used once,
so a fixed nonce is safe.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lifecycle.store.artifacts import ArtifactStore, sha256
from lifecycle.store.errors import ArtifactCorrupt
from lifecycle.store.keystore import KEY_BYTES, ZERO, KeyStore

ROWS = b"LCR1"
BLOB = b"LCB1"
NONCE = bytes(12)
TAG = 16
_HEAD = struct.Struct("<4sQQ")  # magic, rows, features
_SYNCS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lifecycle-keys")


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

    def rows(self, digest: str, positions: Sequence[int] | None = None,
             aad: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The rows at ``positions`` (all by default), each checked against its sample's ``aad``."""
        data = self.artifacts.get(digest)
        magic, n, d = _HEAD.unpack_from(data) if len(data) >= _HEAD.size else (b"", 0, 0)
        if magic != ROWS:
            raise ArtifactCorrupt(f"artifact {digest} is not a row file")
        positions = range(n) if positions is None else positions
        aad = aad if aad is not None else [""] * len(positions)
        keys = self.keys.read(digest)
        size = d * 4 + 8 + TAG
        X = np.empty((len(positions), d), np.float32)
        y = np.empty(len(positions), np.int64)
        for j, (i, label) in enumerate(zip(positions, aad, strict=True)):
            if not 0 <= i < n:
                raise ArtifactCorrupt(f"artifact {digest} has no row {i}")
            key = keys[i * KEY_BYTES:(i + 1) * KEY_BYTES]
            if key == ZERO:
                raise Erased(f"row {i} of artifact {digest} was erased")
            start = _HEAD.size + i * size
            try:
                plain = AESGCM(key).decrypt(NONCE, data[start:start + size], label.encode())
            except InvalidTag:
                raise ArtifactCorrupt(f"row {i} of artifact {digest} does not belong to the sample that "
                                      "points at it, or was altered") from None
            X[j] = np.frombuffer(plain, np.float32, d)
            y[j] = np.frombuffer(plain, np.int64, 1, d * 4)[0]
        return X, y

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

    def destroy(self, digest: str) -> None:
        """Erase an artifact: its keys first (that is the erasure), then its bytes."""
        self.keys.destroy(digest)
        self.artifacts.delete(digest)

    def exists(self, digest: str) -> bool:
        return self.artifacts.exists(digest)
