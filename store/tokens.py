"""HTTP API tokens, kept only as hashes.

A token is ``lct_<id>_<secret>``: a public id (12 hex digits, what operators
list and revoke by, and what requests record as their submitter) and 32
random bytes. The ledger keeps the plain SHA-256 of the whole token, never
the token: with 256 bits of entropy a slow or keyed hash adds nothing against
guessing, and a plain one lets any process that can read the ledger check a
token without the identifier key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from lifecycle.store.schema import ApiTokenRow

SCOPES = ("erasure:submit", "learn:submit", "read", "predict", "admin")
PREFIX = "lct_"


@dataclass(frozen=True)
class ApiToken:
    id: str
    name: str
    scopes: tuple[str, ...]
    created_at: dt.datetime
    created_by: str | None
    revoked_at: dt.datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, scope: str) -> bool:
        return self.active and (scope in self.scopes or "admin" in self.scopes)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _record(row: ApiTokenRow) -> ApiToken:
    return ApiToken(row.id, row.name, tuple(row.scopes), row.created_at, row.created_by, row.revoked_at)


class Tokens:
    def __init__(self, ledger) -> None:
        self.ledger = ledger

    def create(self, name: str, scopes: list[str], created_by: str | None) -> tuple[ApiToken, str]:
        """A new token; the secret is returned once and never stored."""
        token_id = secrets.token_hex(6)
        token = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        with self.ledger._begin() as s:
            row = ApiTokenRow(id=token_id, name=name, token_sha256=token_sha256(token), scopes=list(scopes),
                              created_at=self.ledger.clock(), created_by=created_by, revoked_at=None)
            s.add(row)
            s.flush()
            return _record(row), token

    def list(self) -> list[ApiToken]:
        with self.ledger._begin() as s:
            return [_record(r) for r in s.scalars(select(ApiTokenRow).order_by(ApiTokenRow.created_at,
                                                                               ApiTokenRow.id))]

    def revoke(self, token_id: str) -> ApiToken | None:
        with self.ledger._begin() as s:
            row = s.get(ApiTokenRow, token_id)
            if row is None:
                return None
            if row.revoked_at is None:
                row.revoked_at = self.ledger.clock()
            s.flush()
            return _record(row)

    def find(self, token: str) -> ApiToken | None:
        """The token's record (revoked ones too), or None for a token never issued."""
        with self.ledger._read() as s:
            row = s.scalar(select(ApiTokenRow).where(ApiTokenRow.token_sha256 == token_sha256(token)))
            return None if row is None else _record(row)
