"""Keyed digests of personal identifiers (sample ids, subjects, row contents).

Identifiers never reach the ledger in clear: the API turns each into an
HMAC-SHA256 under a secret that lives outside the database, so a copy of the
database (or its WAL, events, certificates, reports) cannot be matched
against a guess list without that secret. Text is NFC-normalised first, so
"café" typed two ways is one identifier.

The secret is a file named by the ``id_key`` argument of ``connect``, the
``LIFECYCLE_ID_KEY`` environment variable, or
``$XDG_CONFIG_HOME/lifecycle/id-key``; it is created on first use.
Losing it makes every stored digest unmatchable: back it up like the
signing key, apart from the database.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import unicodedata
from pathlib import Path

import numpy as np

log = logging.getLogger("lifecycle.identity")


class IdKeyError(Exception):
    """The identifier secret cannot be read."""


def default_id_key_path() -> Path:
    if os.environ.get("LIFECYCLE_ID_KEY"):
        return Path(os.environ["LIFECYCLE_ID_KEY"])
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "lifecycle" / "id-key"


def normalise(text: str) -> str:
    return unicodedata.normalize("NFC", text)


class IdKey:
    """The HMAC secret; loaded (or created) on first use, never stored in the ledger."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path else default_id_key_path()
        self._secret: bytes | None = None
        self._base = None

    def secret(self) -> bytes:
        if self._secret is None:
            self._secret = self._load_or_create()
        return self._secret

    def _load_or_create(self) -> bytes:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return self._create()
        except (OSError, UnicodeDecodeError) as exc:
            raise IdKeyError(f"cannot read the identifier key {self.path}: {exc}") from None
        try:
            secret = bytes.fromhex(text)
        except ValueError:
            secret = b""
        if len(secret) < 32:
            raise IdKeyError(f"{self.path} does not hold an identifier key (64 or more hex digits)")
        return secret

    def _create(self) -> bytes:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_bytes(32)
        # Written whole under a name of its own, then linked into place: link fails when the key exists, so
        # two processes (or threads) starting at once never each write a different key, and none reads one
        # half written.
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secret.hex() + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.link(tmp, self.path)
        except FileExistsError:
            return self._load_or_create()
        finally:
            tmp.unlink(missing_ok=True)
        log.warning("generated a new identifier key at %s; back it up apart from the ledger: without it no "
                    "stored sample id or subject can be matched again", self.path)
        return secret

    def _mac(self, domain: bytes, data: bytes) -> str:
        if self._base is None:
            self._base = hmac.new(self.secret(), digestmod=hashlib.sha256)
        mac = self._base.copy()  # the keyed state, without setting the key up again per identifier
        mac.update(domain + b"\0" + data)
        return mac.hexdigest()

    def sample(self, sample_id: str) -> str:
        return self._mac(b"sample", normalise(sample_id).encode())

    def subject(self, subject: str) -> str:
        return self._mac(b"subject", normalise(subject).encode())

    def text(self, value: str | None) -> str | None:
        """Free text (a request's reason) as the audit chain covers it: keyed, so a
        short name typed into it cannot be found again by guessing once redacted."""
        return None if value is None else self._mac(b"text", value.encode())

    def legacy_subject(self, salted_sha256: str) -> str:
        """A subject hash from before keyed identifiers (``sha256(salt:subject)``), keyed."""
        return self._mac(b"legacy-subject", salted_sha256.encode())

    def rows(self, X: np.ndarray) -> list[str]:
        """Content fingerprints of float32 feature rows: the same row learned
        again under another id is recognised by them."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        X = X + np.float32(0.0)  # -0.0 and 0.0 are one value
        return [self._mac(b"row", row.tobytes()) for row in X]
