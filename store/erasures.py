"""A person's erasure: one request above the per-model forgets it fans out into.

``submit_many`` writes, in one transaction, each erasure, one part per model, and
for every model that holds the subject's samples a forget of the subject
(or, when one is already queued or running, a link to it). Each part is
written to that model's audit chain: an ``erasure`` event on the forget it
queued or joined (with the API token that submitted it, if any), or an
``erasure_none`` event saying the model held none of the subject's samples.
The person-level status is derived from the parts' requests and kept on the
erasure row by ``refresh``. Every status an erasure takes (its first, at
``submit_many``, and each change, at ``refresh`` and ``cancel``) writes its status
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


@dataclass(frozen=True)
class NewErasure:
    """One erasure to submit: ``subject_digest`` gives a model's digest of the subject from its salt."""

    subject_digest: Callable[[str | None], str]
    erasure_hash: str
    payload_sha: str
    due_days: float
    requested_by: str | None
    reason: str | None
    token_id: str | None
    idempotency_key: str | None
    callbacks: tuple[str, ...]


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

    def submit_many(self, items: list[NewErasure], *, forget_sha: Callable[[dict[str, Any]], str],
                    forgets_tasks_only: Callable[[str], bool]) -> list[tuple[Erasure, bool] | Exception]:
        """Queue erasures and their forgets in one transaction, each as if submitted alone
        in list order (a later one joins a forget an earlier one queued). For each item:
        the erasure and whether it is new (False: its idempotency key named an earlier
        erasure of the same payload), or the ``Refused`` or ``KeyReused`` it raised; an
        item that raised wrote nothing. Every model is locked once for the whole batch."""
        from lifecycle.store.ledger import _request_digests  # the request digests every submit records

        with self._begin() as s:
            # every model locked in one statement, in id order: two batches never deadlock, and one waits
            # for the other's commit, so it then reads the keys and holdings the other wrote
            models = list(s.scalars(select(ModelRow).order_by(ModelRow.id).with_for_update(key_share=True)))
            keys = [i.idempotency_key for i in items if i.idempotency_key is not None]
            prior = {r.idempotency_key: r for r in s.scalars(
                select(ErasureRow).where(ErasureRow.idempotency_key.in_(keys)))} if keys else {}
            names = {m.id: m.name for m in models}
            digests = [{m.id: item.subject_digest(m.subject_salt) for m in models} for item in items]
            held_by = _counts(s, SampleRow, digests, SampleRow.status.in_(HELD))
            tombstoned_by = _counts(s, TombstoneRow, digests)
            open_forgets = _open_forgets(s, sorted({m for d in digests for m, h in d.items() if held_by.get((m, h))}))
            received = self.ledger.clock()
            out: list[tuple[Erasure, bool] | Exception] = []
            made_rows: list[tuple[ErasureRow, list[ErasurePartRow]]] = []
            taken: dict[str, tuple[str, Erasure]] = {}  # idempotency keys this batch used: (payload, erasure)
            for item, digest_of in zip(items, digests):
                key = item.idempotency_key
                first = prior.get(key) if key is not None else None
                if first is not None or key in taken:
                    payload, earlier = (first.payload_sha, None) if first is not None else taken[key]
                    if payload != item.payload_sha:
                        out.append(KeyReused(first.id if first is not None else earlier.id))
                    else:
                        out.append((self._record(s, first) if first is not None else earlier, False))
                    continue
                refused = [m.name for m in models if held_by.get((m.id, digest_of[m.id]))
                           and forgets_tasks_only(m.strategy)]
                if refused:
                    out.append(Refused(refused))
                    continue
                row = ErasureRow(id=str(uuid.uuid4()), subject_hash=item.erasure_hash, idempotency_key=key,
                                 payload_sha=item.payload_sha, requested_by=item.requested_by, reason=item.reason,
                                 token_id=item.token_id, received_at=received,
                                 due_at=received + dt.timedelta(days=item.due_days), status=PENDING,
                                 callbacks=list(item.callbacks))
                s.add(row)
                parts, link = [], {"erasure": row.id, "token": item.token_id}
                status_of: dict[str, str] = {}  # each queued or joined forget's status
                for locked in models:
                    model_id, digest = locked.id, digest_of[locked.id]
                    held, tombstoned = held_by.get((model_id, digest), 0), tombstoned_by.get((model_id, digest), 0)
                    if not held:
                        outcome = "already_forgotten" if tombstoned else "none"
                        parts.append(ErasurePartRow(erasure_id=row.id, model_id=model_id, outcome=outcome,
                                                    request_id=None, held=0, tombstoned=tombstoned))
                        append_event(s, model_id, None, "erasure_none", locked=locked, outcome=outcome,
                                     tombstoned=tombstoned, **link)
                        continue
                    target = {"subject_hash": digest}
                    queued = open_forgets.setdefault(model_id, [])
                    joined = next(((rid, status) for rid, t, status in queued if t == target), None)
                    if joined is None:
                        forget = RequestRow(id=str(uuid.uuid4()), model_id=model_id, kind=RequestKind.FORGET,
                                            target=target, payload_sha=forget_sha(target), payload_digest=None,
                                            idempotency_key=None, requested_by=item.requested_by,
                                            reason=item.reason, received_at=received, due_at=row.due_at,
                                            status=RequestStatus.QUEUED, attempt=0)
                        s.add(forget)
                        append_event(s, model_id, forget.id, "submitted", locked=locked,
                                     request_kind=RequestKind.FORGET, target=target, due_at=row.due_at.isoformat(),
                                     **_request_digests(forget, self.ledger.ids))
                        queued.append((forget.id, target, RequestStatus.QUEUED))
                        (request_id, status), outcome = (forget.id, RequestStatus.QUEUED), "forget"
                    else:
                        (request_id, status), outcome = joined, "joined"
                    status_of[request_id] = status
                    parts.append(ErasurePartRow(erasure_id=row.id, model_id=model_id, outcome=outcome,
                                                request_id=request_id, held=held, tombstoned=tombstoned))
                    append_event(s, model_id, request_id, "erasure", locked=locked, outcome=outcome, held=held,
                                 **link)
                if not any(p.request_id for p in parts):
                    row.status, row.finished_at = COMPLETED, received
                made_rows.append((row, parts))
                made = self._made(row, [ErasurePart(names[p.model_id], p.outcome, p.request_id,
                                                    status_of.get(p.request_id), False, p.held, p.tombstoned)
                                        for p in parts])
                if key is not None:
                    taken[key] = (item.payload_sha, made)
                out.append((made, True))
            s.flush()  # the erasures and forgets, before the rows that point at them
            for row, parts in made_rows:
                s.add_all(parts)
                outbox.enqueue(s, row, received)
            s.flush()
            return out

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

    def refresh(self, erasure_id: str | None = None, *, key: str | None = None) -> tuple[Erasure, str | None] | None:
        """Bring the stored person-level status in line with the parts' requests; returns
        the erasure (by id, or by the idempotency key it was submitted with) and its
        previous status when it changed, or None when there is no such erasure. Reads
        first, and locks the erasure only when its status must change."""
        which = ErasureRow.id == erasure_id if key is None else ErasureRow.idempotency_key == key
        with self.ledger._read() as s:
            row = s.scalar(select(ErasureRow).where(which))
            if row is None:
                return None
            parts = self._parts(s, row.id)
            if row.status in DONE or _derive(parts) == row.status:
                return self._made(row, parts), None
        with self._begin() as s:
            row = s.scalar(select(ErasureRow).where(ErasureRow.id == row.id).with_for_update())
            before = row.status
            if before not in DONE:
                now = _derive(self._parts(s, row.id))
                if now != before:
                    changed_at = self.ledger.clock()
                    row.status = now
                    if now in DONE:
                        row.finished_at = changed_at
                    outbox.enqueue(s, row, changed_at)
            s.flush()
            return self._record(s, row), (before if row.status != before else None)

    def open_ids_of(self, request_ids: list[str]) -> list[str]:
        """The open erasures with a part on one of these per-model requests."""
        with self.ledger._read() as s:
            return list(s.scalars(select(ErasureRow.id).distinct()
                                  .join(ErasurePartRow, ErasurePartRow.erasure_id == ErasureRow.id)
                                  .where(ErasurePartRow.request_id.in_(request_ids),
                                         ErasureRow.status.in_([PENDING, IN_PROGRESS, FAILED]))))

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
        return self._made(row, self._parts(s, row.id))

    @staticmethod
    def _made(row: ErasureRow, parts: list[ErasurePart]) -> Erasure:
        return Erasure(row.id, row.status, row.received_at, row.due_at, row.finished_at, row.requested_by,
                       row.reason, row.token_id, row.idempotency_key, tuple(row.callbacks or ()), tuple(parts))


def _counts(s: Session, table, digests: list[dict[int, str]], *where) -> dict[tuple[int, str], int]:
    """Per (model, subject digest), the rows of ``table`` (samples or tombstones) under it, for
    subjects given as each model's digest of them; pairs with no rows are left out."""
    wanted = {(m, h) for d in digests for m, h in d.items()}
    if not wanted:
        return {}
    q = (select(table.model_id, table.subject_hash, func.count())
         .where(table.model_id.in_({m for m, _ in wanted}), table.subject_hash.in_({h for _, h in wanted}), *where)
         .group_by(table.model_id, table.subject_hash))
    return {(m, h): n for m, h, n in s.execute(q) if (m, h) in wanted}


def _open_forgets(s: Session, model_ids: list[int]) -> dict[int, list[tuple[str, Any, str]]]:
    """The queued and running forgets of these models, in ledger order: (id, target, status)."""
    out: dict[int, list[tuple[str, Any, str]]] = {}
    if model_ids:
        for rid, model_id, target, status in s.execute(
                select(RequestRow.id, RequestRow.model_id, RequestRow.target, RequestRow.status).where(
                    RequestRow.model_id.in_(model_ids), RequestRow.kind == RequestKind.FORGET,
                    RequestRow.status.in_(OPEN)).order_by(RequestRow.seq)):
            out.setdefault(model_id, []).append((rid, target, status))
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
