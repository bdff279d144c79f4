"""Status callbacks of erasures, kept in an outbox until delivered.

``enqueue`` runs inside the transaction that changes an erasure's status and
writes one row per callback URL, holding the exact body to send: a change is
announced if and only if it is committed. A deliverer ``claim``s due rows
(each claim is a short lease: the row's next attempt moves to the lease's
end), sends them outside any transaction, and ``record``s every attempt. A
deliverer that dies holding a claim records nothing, so the row falls due
again when the lease ends and is sent again: delivery is at least once.

Rows of one erasure and URL go out in the order of the changes: a row is not
claimed while an earlier one of the same erasure and URL is still pending.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, aliased

from lifecycle.store.records import DeliveryState
from lifecycle.store.schema import CallbackAttemptRow, CallbackOutboxRow, ErasureRow

# the OpenDSR version the bodies follow, and the idempotency-key prefix of the
# erasures submitted through OpenDSR (lifecycle.http.opendsr), whose
# subject_request_id the body carries back
API_VERSION = "0.1"
OPENDSR_KEY = "opendsr:"


@dataclass(frozen=True)
class Delivery:
    """One status callback: what is sent where, and how far it got."""

    id: int
    erasure_id: str
    url: str
    body: bytes
    created_at: dt.datetime
    next_attempt_at: dt.datetime
    attempts: int
    state: DeliveryState
    finished_at: dt.datetime | None


@dataclass(frozen=True)
class DeliveryAttempt:
    delivery_id: int
    at: dt.datetime
    http_status: int | None  # None: no answer (refused, timed out, or not sent)
    error: str | None
    ok: bool


@dataclass(frozen=True)
class DeliveryClaim:
    """A delivery one deliverer holds until ``expires_at``; ``token`` fences its record."""

    delivery: Delivery
    token: str
    expires_at: dt.datetime


def opendsr_status(status: str) -> str:
    """An erasure's status as OpenDSR names it."""
    # OpenDSR knows no failed state: a failed per-model forget awaits an operator, so it is still in progress
    return "in_progress" if status == "failed" else status


def callback_body(row: ErasureRow, url: str, now: dt.datetime) -> str:
    """The OpenDSR status callback announcing the erasure's current status, as ASCII JSON text."""
    key = row.idempotency_key or ""
    body = {
        "api_version": API_VERSION,
        # an erasure from the Python API, the CLI or /v1 has no OpenDSR id: its own id stands in
        "subject_request_id": key[len(OPENDSR_KEY):] if key.startswith(OPENDSR_KEY) else row.id,
        "erasure_id": row.id,
        "request_status": opendsr_status(row.status),
        "lifecycle_status": row.status,
        "status_callback_url": url,
        "expected_completion_time": _time(row.due_at),
        "status_time": _time(now),
    }
    if row.status == "completed":
        body["completed_time"] = _time(row.finished_at)
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def enqueue(s: Session, row: ErasureRow, now: dt.datetime) -> None:
    """Write the callbacks of the erasure's current status in the caller's transaction."""
    for url in row.callbacks or ():
        s.add(CallbackOutboxRow(erasure_id=row.id, url=url, body=callback_body(row, url, now), created_at=now,
                                next_attempt_at=now, attempts=0, state=DeliveryState.PENDING))


class Outbox:
    """Repository of status callbacks, over a ``Ledger``'s sessions and clock."""

    def __init__(self, ledger) -> None:
        self.ledger = ledger

    def claim(self, lease_seconds: float, limit: int = 1) -> list[DeliveryClaim]:
        """Take up to ``limit`` due deliveries, oldest due first, for ``lease_seconds``.

        PostgreSQL skips rows another claim has locked (two deliverers never
        wait on each other nor take the same row); SQLite holds its write
        lock for the whole claim.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        now = self.ledger.clock()
        expires = now + dt.timedelta(seconds=lease_seconds)
        earlier = aliased(CallbackOutboxRow)
        waits = exists().where(earlier.erasure_id == CallbackOutboxRow.erasure_id,
                               earlier.url == CallbackOutboxRow.url, earlier.state == DeliveryState.PENDING,
                               earlier.id < CallbackOutboxRow.id)
        q = (select(CallbackOutboxRow)
             .where(CallbackOutboxRow.state == DeliveryState.PENDING, CallbackOutboxRow.next_attempt_at <= now, ~waits)
             .order_by(CallbackOutboxRow.next_attempt_at, CallbackOutboxRow.id).limit(limit)
             .with_for_update(skip_locked=True, of=CallbackOutboxRow))
        with self.ledger._begin() as s:
            claims = []
            for row in s.scalars(q).all():
                row.claimed_by, row.next_attempt_at = str(uuid.uuid4()), expires
                claims.append(DeliveryClaim(_delivery(row), row.claimed_by, expires))
            return claims

    def record(self, claim: DeliveryClaim, *, ok: bool, http_status: int | None = None, error: str | None = None,
               retry_in: float | None = None) -> Delivery | None:
        """Record one attempt. A success delivers the row; a failure sets its
        next attempt ``retry_in`` seconds from now, or gives it up when that
        is None. Returns the delivery, or None when the claim had expired and
        another deliverer took the row: the attempt is recorded, their outcome stands."""
        now = self.ledger.clock()
        with self.ledger._begin() as s:
            row = s.scalar(select(CallbackOutboxRow).where(CallbackOutboxRow.id == claim.delivery.id)
                           .with_for_update())
            s.add(CallbackAttemptRow(outbox_id=row.id, at=now, http_status=http_status, error=error, ok=ok))
            row.attempts += 1
            if row.claimed_by != claim.token or row.state != DeliveryState.PENDING:
                return None
            row.claimed_by = None
            if ok:
                row.state, row.finished_at = DeliveryState.DELIVERED, now
            elif retry_in is None:
                row.state, row.finished_at = DeliveryState.GAVE_UP, now
            else:
                row.next_attempt_at = now + dt.timedelta(seconds=retry_in)
            s.flush()
            return _delivery(row)

    def list(self, erasure_id: str | None = None, states: Iterable[DeliveryState] | None = None) -> list[Delivery]:
        """Deliveries in the order they were written."""
        q = select(CallbackOutboxRow).order_by(CallbackOutboxRow.id)
        if erasure_id is not None:
            q = q.where(CallbackOutboxRow.erasure_id == erasure_id)
        if states is not None:
            q = q.where(CallbackOutboxRow.state.in_([DeliveryState(v) for v in states]))
        with self.ledger._begin() as s:
            return [_delivery(row) for row in s.scalars(q)]

    def attempts(self, delivery_id: int) -> list[DeliveryAttempt]:
        """A delivery's attempts, oldest first."""
        with self.ledger._begin() as s:
            return [DeliveryAttempt(a.outbox_id, a.at, a.http_status, a.error, a.ok) for a in s.scalars(
                select(CallbackAttemptRow).where(CallbackAttemptRow.outbox_id == delivery_id)
                .order_by(CallbackAttemptRow.id))]


def _delivery(row: CallbackOutboxRow) -> Delivery:
    return Delivery(row.id, row.erasure_id, row.url, row.body.encode("ascii"), row.created_at, row.next_attempt_at,
                    row.attempts, DeliveryState(row.state), row.finished_at)


def _time(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
