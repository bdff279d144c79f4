"""A person's erasure: one request above the per-model forgets it fans out into.

``submit`` writes, in one transaction, the erasure, one part per model, and
for every model that holds the subject's samples a forget of the subject
(or, when one is already queued or running, a link to it). Each part is
written to that model's audit chain: an ``erasure`` event on the forget it
queued or joined (with the API token that submitted it, if any), or an
``erasure_none`` event saying the model held none of the subject's samples.
The person-level status is derived from the parts' requests and kept on the
erasure row by ``refresh``. Every status an erasure takes (its first, at
``submit``, and each change, at ``refresh`` and ``cancel``) writes its status
callbacks to the outbox (``store.outbox``) in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lifecycle.store import outbox
from lifecycle.store.records import OPEN, RequestKind, RequestStatus, SampleStatus
from lifecycle.store.schema import (
    CertificateRow,
    ErasurePartRow,
    ErasureRow,
    ModelRow,
    RequestRow,
    SampleRow,
    TombstoneRow,
)
from lifecycle.store.writes import append_event

PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED = "pending", "in_progress", "completed", "failed", "cancelled"
DONE = (COMPLETED, CANCELLED)
HELD = (SampleStatus.PENDING, SampleStatus.ACTIVE)  # a subject's samples an erasure must forget


@dataclass(frozen=True)
class ErasurePart:
    model: str
    outcome: str  # forget (queued by this erasure) | joined (an open forget of the subject) | none | already_forgotten
    request_id: str | None
    request_status: str | None
    certified: bool
    held: int
    tombstoned: int


@dataclass(frozen=True)
class Erasure:
    id: str
    status: str
    received_at: dt.datetime
    due_at: dt.datetime
    finished_at: dt.datetime | None
    requested_by: str | None
    reason: str | None
    token_id: str | None
    idempotency_key: str | None
    callbacks: tuple[str, ...]
    parts: tuple[ErasurePart, ...] = field(default=())

    @property
    def done(self) -> bool:
        return self.status in DONE

    def overdue(self, now: dt.datetime) -> bool:
        return not self.done and now > self.due_at


class Refused(Exception):
    """A model holds the subject's samples but cannot forget them at sample level."""

    def __init__(self, models: list[str]) -> None:
        super().__init__(", ".join(models))
        self.models = models


class KeyReused(Exception):
    """An idempotency key was used before for another erasure."""

    def __init__(self, erasure_id: str) -> None:
        super().__init__(erasure_id)
        self.erasure_id = erasure_id


class Erasures:
    """Repository of erasures, over a ``Ledger``'s sessions, clock and identifier key."""

    def __init__(self, ledger) -> None:
        self.ledger = ledger

    def _begin(self):
        return self.ledger._begin()

    def submit(self, *, subject_digest: Callable[[str | None], str], erasure_hash: str, payload_sha: str,
               forget_sha: Callable[[dict[str, Any]], str], forgets_tasks_only: Callable[[str], bool], due_days: float,
               requested_by: str | None, reason: str | None, token_id: str | None, idempotency_key: str | None,
               callbacks: list[str]) -> tuple[Erasure, bool]:
        """Queue the erasure and its forgets; returns it and whether it is new
        (False: the idempotency key named an earlier erasure of the same payload)."""
        from lifecycle.store.ledger import _request_digests  # the request digests every submit records

        with self._begin() as s:
            if idempotency_key is not None:
                prior = s.scalar(select(ErasureRow).where(ErasureRow.idempotency_key == idempotency_key))
                if prior is not None:
                    if prior.payload_sha != payload_sha:
                        raise KeyReused(prior.id)
                    return self._record(s, prior), False
            received = self.ledger.clock()
            row = ErasureRow(id=str(uuid.uuid4()), subject_hash=erasure_hash, idempotency_key=idempotency_key,
                             payload_sha=payload_sha, requested_by=requested_by, reason=reason, token_id=token_id,
                             received_at=received, due_at=received + dt.timedelta(days=due_days), status=PENDING,
                             callbacks=list(callbacks))
            s.add(row)
            s.flush()
            refused, queued = [], 0
            # every model locked in one statement, in id order: two erasures never deadlock; then what each
            # holds of the subject, read for all models at once (no write in between, so nothing is flushed)
            models = list(s.scalars(select(ModelRow).order_by(ModelRow.id).with_for_update(key_share=True)))
            digests = {m.id: subject_digest(m.subject_salt) for m in models}
            held_by = _counts(s, SampleRow, digests, SampleRow.status.in_(HELD))
            tombstoned_by = _counts(s, TombstoneRow, digests)
            open_forgets = _open_forgets(s, [m for m in digests if held_by.get(m)])
            for locked in models:
                model_id, digest = locked.id, digests[locked.id]
                held, tombstoned = held_by.get(model_id, 0), tombstoned_by.get(model_id, 0)
                link = {"erasure": row.id, "token": token_id}
                if not held:
                    outcome = "already_forgotten" if tombstoned else "none"
                    s.add(ErasurePartRow(erasure_id=row.id, model_id=model_id, outcome=outcome, request_id=None,
                                         held=0, tombstoned=tombstoned))
                    append_event(s, model_id, None, "erasure_none", locked=locked, outcome=outcome,
                                 tombstoned=tombstoned, **link)
                    continue
                if forgets_tasks_only(locked.strategy):
                    refused.append(locked.name)
                    continue
                target = {"subject_hash": digest}
                joined = next((rid for rid, t in open_forgets.get(model_id, ()) if t == target), None)
                if joined is None:
                    forget = RequestRow(id=str(uuid.uuid4()), model_id=model_id, kind=RequestKind.FORGET,
                                        target=target, payload_sha=forget_sha(target), payload_digest=None,
                                        idempotency_key=None, requested_by=requested_by, reason=reason,
                                        received_at=received, due_at=row.due_at, status=RequestStatus.QUEUED,
                                        attempt=0)
                    s.add(forget)
                    s.flush()
                    append_event(s, model_id, forget.id, "submitted", locked=locked,
                                 request_kind=RequestKind.FORGET, target=target, due_at=row.due_at.isoformat(),
                                 **_request_digests(forget, self.ledger.ids))
                    request_id, outcome = forget.id, "forget"
                else:
                    request_id, outcome = joined, "joined"
                queued += 1
                s.add(ErasurePartRow(erasure_id=row.id, model_id=model_id, outcome=outcome, request_id=request_id,
                                     held=held, tombstoned=tombstoned))
                append_event(s, model_id, request_id, "erasure", locked=locked, outcome=outcome, held=held, **link)
            if refused:
                raise Refused(refused)  # rolls every write back
            if not queued:
                row.status, row.finished_at = COMPLETED, received
            outbox.enqueue(s, row, received)
            s.flush()
            return self._record(s, row), True

    def get(self, erasure_id: str) -> Erasure | None:
        with self._begin() as s:
            row = s.get(ErasureRow, erasure_id)
            return None if row is None else self._record(s, row)

    def by_key(self, key: str) -> Erasure | None:
        """The erasure submitted with this idempotency key (its status as last refreshed)."""
        with self._begin() as s:
            row = s.scalar(select(ErasureRow).where(ErasureRow.idempotency_key == key))
            return None if row is None else self._record(s, row)

    def ids_starting(self, prefix: str, limit: int) -> list[str]:
        with self._begin() as s:
            return list(s.scalars(select(ErasureRow.id).where(ErasureRow.id >= prefix, ErasureRow.id < prefix + "~")
                                  .order_by(ErasureRow.id).limit(limit)))

    def list(self, statuses: Iterable[str] | None = None) -> list[Erasure]:
        """Erasures oldest first (by received time)."""
        with self._begin() as s:
            q = select(ErasureRow).order_by(ErasureRow.received_at, ErasureRow.id)
            if statuses is not None:
                q = q.where(ErasureRow.status.in_(list(statuses)))
            return [self._record(s, row) for row in s.scalars(q)]

    def refresh(self, erasure_id: str) -> tuple[Erasure, str | None] | None:
        """Bring the stored person-level status in line with the parts'
        requests; returns the erasure and its previous status when it changed."""
        with self._begin() as s:
            row = s.scalar(select(ErasureRow).where(ErasureRow.id == erasure_id).with_for_update())
            if row is None:
                return None
            before = row.status
            if before not in DONE:
                parts = self._parts(s, row.id)
                now = _derive(parts)
                if now != before:
                    changed_at = self.ledger.clock()
                    row.status = now
                    if now in DONE:
                        row.finished_at = changed_at
                    outbox.enqueue(s, row, changed_at)
            s.flush()
            return self._record(s, row), (before if row.status != before else None)

    def open_ids(self) -> list[str]:
        with self._begin() as s:
            return list(s.scalars(select(ErasureRow.id).where(ErasureRow.status.in_([PENDING, IN_PROGRESS, FAILED]))
                                  .order_by(ErasureRow.received_at)))

    def cancel(self, erasure_id: str) -> Erasure | None:
        """Cancel a pending erasure and the forgets it queued (never one it
        joined: that belongs to whoever queued it). None when it is not
        pending or one of its forgets already started."""
        with self._begin() as s:
            row = s.scalar(select(ErasureRow).where(ErasureRow.id == erasure_id).with_for_update())
            if row is None or row.status != PENDING:
                return None
            parts = list(s.scalars(select(ErasurePartRow).where(ErasurePartRow.erasure_id == row.id)
                                   .order_by(ErasurePartRow.model_id)))
            own = [p for p in parts if p.outcome == "forget"]
            requests = {r.id: r for r in s.scalars(select(RequestRow).where(
                RequestRow.id.in_([p.request_id for p in own])).with_for_update())} if own else {}
            if any(r.status != RequestStatus.QUEUED for r in requests.values()):
                return None
            now = self.ledger.clock()
            for p in own:
                r = requests[p.request_id]
                r.status, r.finished_at = RequestStatus.CANCELLED, now
                append_event(s, r.model_id, r.id, "cancelled", erasure=row.id)
            row.status, row.finished_at = CANCELLED, now
            outbox.enqueue(s, row, now)
            s.flush()
            return self._record(s, row)

    def redact(self, erasure_id: str, fields: list[str], why: str, by: str | None) -> Erasure | None:
        """Erase free text (``reason``, ``requested_by``) from an erasure and
        from the forgets it queued, which were given the same text; each
        forget's chain records the redaction. None when unknown."""
        with self._begin() as s:
            row = s.scalar(select(ErasureRow).where(ErasureRow.id == erasure_id).with_for_update())
            if row is None:
                return None
            for name in fields:
                setattr(row, name, None)
            queued = s.scalars(select(ErasurePartRow.request_id).where(
                ErasurePartRow.erasure_id == row.id, ErasurePartRow.outcome == "forget")).all()
            for forget in s.scalars(select(RequestRow).where(RequestRow.id.in_(queued)).order_by(RequestRow.model_id)
                                    .with_for_update()).all():
                for name in fields:
                    setattr(forget, name, None)
                append_event(s, forget.model_id, forget.id, "redacted", fields=sorted(fields), why=why, by=by,
                             erasure=row.id)
            s.flush()
            return self._record(s, row)

    # ---- reading ---------------------------------------------------------------

    def _parts(self, s: Session, erasure_id: str) -> list[ErasurePart]:
        q = (select(ErasurePartRow, ModelRow.name, RequestRow.status)
             .join(ModelRow, ModelRow.id == ErasurePartRow.model_id)
             .outerjoin(RequestRow, RequestRow.id == ErasurePartRow.request_id)
             .where(ErasurePartRow.erasure_id == erasure_id).order_by(ErasurePartRow.model_id))
        found = s.execute(q).all()
        ids = [p.request_id for p, _, _ in found if p.request_id]
        certified = set(s.scalars(select(CertificateRow.request_id).where(CertificateRow.request_id.in_(ids)))) \
            if ids else set()
        return [ErasurePart(name, p.outcome, p.request_id, status, p.request_id in certified, p.held, p.tombstoned)
                for p, name, status in found]

    def _record(self, s: Session, row: ErasureRow) -> Erasure:
        return Erasure(row.id, row.status, row.received_at, row.due_at, row.finished_at, row.requested_by,
                       row.reason, row.token_id, row.idempotency_key, tuple(row.callbacks or ()),
                       tuple(self._parts(s, row.id)))


def _counts(s: Session, table, digests: dict[int, str], *where) -> dict[int, int]:
    """Per model, the rows of ``table`` (samples or tombstones) under that model's digest of the subject."""
    if not digests:
        return {}
    q = (select(table.model_id, table.subject_hash, func.count())
         .where(table.model_id.in_(list(digests)), table.subject_hash.in_(set(digests.values())), *where)
         .group_by(table.model_id, table.subject_hash))
    return {model_id: n for model_id, digest, n in s.execute(q) if digests[model_id] == digest}


def _open_forgets(s: Session, model_ids: list[int]) -> dict[int, list[tuple[str, Any]]]:
    """The queued and running forgets of these models, in ledger order: (id, target)."""
    out: dict[int, list[tuple[str, Any]]] = {}
    if model_ids:
        for rid, model_id, target in s.execute(select(RequestRow.id, RequestRow.model_id, RequestRow.target).where(
                RequestRow.model_id.in_(model_ids), RequestRow.kind == RequestKind.FORGET,
                RequestRow.status.in_(OPEN)).order_by(RequestRow.seq)):
            out.setdefault(model_id, []).append((rid, target))
    return out


def _derive(parts: list[ErasurePart]) -> str:
    """The person-level status of an open erasure, from its parts' requests."""
    asked = [p for p in parts if p.request_id is not None]
    if all(p.request_status == RequestStatus.APPLIED and p.certified for p in asked):
        return COMPLETED
    if any(p.request_status in (RequestStatus.FAILED, RequestStatus.REJECTED, RequestStatus.CANCELLED)
           for p in asked):
        return FAILED
    if any(p.request_status in (RequestStatus.RUNNING, RequestStatus.APPLIED) for p in asked):
        return IN_PROGRESS
    return PENDING
