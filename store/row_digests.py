"""Digests of ledger rows, recorded in the audit chain when the rows are
written and recomputed by ``store.ledger_audit`` from the tables as they are.

Each covers what must never change after it is written; fields that change
by design (a request's status, a sample's data pointer after a purge) are
checked against the events that change them instead. Free text is covered by
its own keyed digest (``IdKey.text``), so it can be redacted by an audited
event without breaking the rest, and not guessed back afterwards.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from typing import Any


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _time(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.timezone.utc).isoformat()


def request(row) -> str:
    """A request as submitted (its status, lease, result and free text are checked apart)."""
    return _digest([row.id, row.model_id, row.kind, row.target, row.payload_sha, row.idempotency_key,
                    _time(row.received_at)])


def samples(rows: Iterable) -> dict[str, Any]:
    """The samples a learn brought, whatever their status or data pointer later."""
    items = sorted([r["sample_id"], r["subject_hash"], r["content_digest"], r["label"], r["data_row"], r["task_id"]]
                   for r in rows)
    return {"count": len(items), "digest": _digest(items)}


def tombstones(rows: Iterable) -> dict[str, Any]:
    items = sorted([r["sample_id"], r["subject_hash"], r["content_digest"]] for r in rows)
    return {"count": len(items), "digest": _digest(items)}


def evaluations(rows: Iterable) -> str:
    return _digest(sorted([r["task_id"], r["role"], r["accuracy"], r["chance"], r["n"]] for r in rows))


def findings(rows: Iterable) -> str:
    keys = ("task_id", "forgotten_at_version", "acc_at_forget", "accuracy", "chance", "relapse", "threshold",
            "peak_since_forget")
    return _digest(sorted([r[k] for k in keys] for r in rows))


def certificate(body: dict[str, Any]) -> str:
    return _digest(body)


def as_dict(row, names: Iterable[str]) -> dict[str, Any]:
    return {n: getattr(row, n) for n in names}
