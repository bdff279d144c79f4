"""Repository over the ledger tables. Every method is one transaction and
returns plain dataclasses from ``store.records``."""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Engine, case, delete, exists, func, insert, or_, select, union_all, update
from sqlalchemy.orm import Session, aliased

from lifecycle.store import audit, ledger_audit, row_digests
from lifecycle.store import records as rec
from lifecycle.store.errors import LeaseLost
from lifecycle.store.records import APPLIED, CANCELLED, FAILED, QUEUED, RUNNING
from lifecycle.store.schema import (
    CertificateRow,
    EvaluationRow,
    EventRow,
    ModelRow,
    ModelVersionRow,
    RelapseFindingRow,
    ReportRow,
    RequestRow,
    SampleRow,
    TaskRow,
    TombstoneRow,
)
from lifecycle.store.engine import session_factory
from lifecycle.store.identity import IdKey

PENDING, ACTIVE, FORGOTTEN = "pending", "active", "forgotten"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _model(row: ModelRow) -> rec.Model:
    return rec.Model(
        id=row.id,
        name=row.name,
        strategy=row.strategy,
        config=dict(row.config),
        n_features=row.n_features,
        n_classes=row.n_classes,
        relapse_threshold=row.relapse_threshold,
        forget_due_days=row.forget_due_days,
        created_at=row.created_at,
        keep_states=row.keep_states,
        forgotten_probes=row.forgotten_probes,
        quarantine=row.quarantine,
    )


def _task(row: TaskRow) -> rec.Task:
    return rec.Task(
        id=row.id,
        model_id=row.model_id,
        name=row.name,
        state=row.state,
        classes=tuple(row.classes),
        probe_digest=row.probe_digest,
        forgotten_at_version=row.forgotten_at_version,
        acc_at_forget=row.acc_at_forget,
        peak_since_forget=row.peak_since_forget,
    )


def _request(row: RequestRow, model_name: str) -> rec.Request:
    return rec.Request(
        id=row.id,
        seq=row.seq,
        model=model_name,
        kind=row.kind,
        target=dict(row.target),
        status=row.status,
        received_at=row.received_at,
        due_at=row.due_at,
        requested_by=row.requested_by,
        reason=row.reason,
        idempotency_key=row.idempotency_key,
        attempt=row.attempt,
        lease_owner=row.lease_owner,
        lease_expires_at=row.lease_expires_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        step_seconds=row.step_seconds,
        error=row.error,
        result_version=row.result_version,
    )


def _sample(row: SampleRow, task_name: str) -> rec.Sample:
    return rec.Sample(
        sample_id=row.sample_id,
        task=task_name,
        label=row.label,
        subject_hash=row.subject_hash,
        status=row.status,
        data_digest=row.data_digest,
        data_row=row.data_row,
    )


def _report(row: ReportRow, model: str) -> rec.Report:
    return rec.Report(row.id, model, row.model_version, row.written_at, row.html_path, row.html_sha256,
                      row.json_sha256)


def _lock_model(s: Session, model_id: int, *, skip_locked: bool = False) -> ModelRow | None:
    # FOR NO KEY UPDATE, not FOR UPDATE: rows this transaction already inserted
    # with a foreign key to the model hold KEY SHARE on it, and two such
    # transactions upgrading to FOR UPDATE deadlock each other
    return s.scalar(
        select(ModelRow).where(ModelRow.id == model_id).with_for_update(key_share=True, skip_locked=skip_locked)
    )


def _event(s: Session, model_id: int, request_id: str | None, kind: str, *, locked: ModelRow | None = None,
           **detail: Any) -> None:
    """Append an event to the model's audit chain.

    Locking the model row serialises appends per model (PostgreSQL; SQLite
    already has one writer), so two transactions never fork the chain.
    ``locked`` is the model row when this transaction already holds its lock.
    """
    model = locked if locked is not None else _lock_model(s, model_id)
    at = utcnow()
    seq = model.audit_seq + 1
    digest = audit.event_hash(model_id, seq, request_id, kind, detail, at, model.audit_head)
    s.add(EventRow(model_id=model_id, request_id=request_id, kind=kind, detail=detail, at=at, seq=seq,
                   prev_hash=model.audit_head, hash=digest))
    model.audit_seq, model.audit_head = seq, digest


class Ledger:
    def __init__(self, engine: Engine, ids: IdKey | None = None) -> None:
        self.engine = engine
        self.ids = ids or IdKey()  # keys the digests of free text in the audit chain
        self._sessions = session_factory(engine)

    def _begin(self):
        return self._sessions.begin()

    # ---- models and tasks -------------------------------------------------

    def create_model(
        self,
        name: str,
        strategy: str,
        config: dict[str, Any],
        n_features: int,
        n_classes: int,
        relapse_threshold: float,
        forget_due_days: float,
        keep_states: int = 3,
        forgotten_probes: str = "keep",
    ) -> rec.Model:
        with self._begin() as s:
            row = ModelRow(
                name=name,
                strategy=strategy,
                config=config,
                n_features=n_features,
                n_classes=n_classes,
                relapse_threshold=relapse_threshold,
                forget_due_days=forget_due_days,
                subject_salt=None,
                keep_states=keep_states,
                forgotten_probes=forgotten_probes,
                created_at=utcnow(),
                audit_seq=0,
                audit_head=None,
            )
            s.add(row)
            s.flush()
            _event(s, row.id, None, "model_created", strategy=strategy, config=config, keep_states=keep_states,
                   forgotten_probes=forgotten_probes)
            return _model(row)

    def model(self, name: str) -> rec.Model | None:
        with self._begin() as s:
            row = s.scalar(select(ModelRow).where(ModelRow.name == name))
            return _model(row) if row else None

    def models(self) -> list[rec.Model]:
        with self._begin() as s:
            return [_model(r) for r in s.scalars(select(ModelRow).order_by(ModelRow.id))]

    def subject_salt(self, model_id: int) -> str | None:
        """The salt of a model from before keyed identifiers (None for every newer model)."""
        with self._begin() as s:
            return s.scalar(select(ModelRow.subject_salt).where(ModelRow.id == model_id))

    def tasks(self, model_id: int) -> list[rec.Task]:
        with self._begin() as s:
            rows = s.scalars(select(TaskRow).where(TaskRow.model_id == model_id).order_by(TaskRow.id))
            return [_task(r) for r in rows]

    def task(self, model_id: int, name: str) -> rec.Task | None:
        with self._begin() as s:
            row = s.scalar(select(TaskRow).where(TaskRow.model_id == model_id, TaskRow.name == name))
            return _task(row) if row else None

    # ---- samples and tombstones ------------------------------------------

    def samples(self, model_id: int, sample_ids: Iterable[str]) -> dict[str, rec.Sample]:
        ids = list(sample_ids)
        out: dict[str, rec.Sample] = {}
        with self._begin() as s:
            for chunk in _chunks(ids, 500):
                q = (
                    select(SampleRow, TaskRow.name)
                    .join(TaskRow, TaskRow.id == SampleRow.task_id)
                    .where(SampleRow.model_id == model_id, SampleRow.sample_id.in_(chunk))
                )
                for row, task_name in s.execute(q):
                    out[row.sample_id] = _sample(row, task_name)
        return out

    def tombstoned(self, model_id: int, sample_ids: Iterable[str]) -> set[str]:
        ids = list(sample_ids)
        found: set[str] = set()
        with self._begin() as s:
            for chunk in _chunks(ids, 500):
                q = select(TombstoneRow.sample_id).where(
                    TombstoneRow.model_id == model_id, TombstoneRow.sample_id.in_(chunk)
                )
                found.update(s.scalars(q))
        return found

    def tombstoned_content(self, model_id: int, content_digests: Iterable[str]) -> set[str]:
        """Which of these row fingerprints belong to forgotten samples."""
        digests = list(content_digests)
        found: set[str] = set()
        with self._begin() as s:
            for chunk in _chunks(digests, 500):
                found.update(s.scalars(select(TombstoneRow.content_digest).where(
                    TombstoneRow.model_id == model_id, TombstoneRow.content_digest.in_(chunk))))
        return found

    def tombstone_ids(self, model_id: int) -> frozenset[str]:
        """Every sample id the model has forgotten so far."""
        with self._begin() as s:
            return frozenset(s.scalars(select(TombstoneRow.sample_id).where(TombstoneRow.model_id == model_id)))

    def subject_counts(self, model_id: int, subject_hash: str) -> dict[str, int]:
        """How many of a subject's samples are pending, active or tombstoned."""
        with self._begin() as s:
            q = (
                select(SampleRow.status, func.count())
                .where(SampleRow.model_id == model_id, SampleRow.subject_hash == subject_hash)
                .group_by(SampleRow.status)
            )
            counts = {status: n for status, n in s.execute(q)}
            counts["tombstoned"] = s.scalar(
                select(func.count())
                .select_from(TombstoneRow)
                .where(TombstoneRow.model_id == model_id, TombstoneRow.subject_hash == subject_hash)
            )
            return counts

    def resolve_forget(self, model_id: int, target: dict[str, Any]) -> list[rec.Sample]:
        """The active samples a forget target names, in a stable order."""
        with self._begin() as s:
            q = (
                select(SampleRow, TaskRow.name)
                .join(TaskRow, TaskRow.id == SampleRow.task_id)
                .where(SampleRow.model_id == model_id, SampleRow.status == ACTIVE)
            )
            if "task" in target:
                q = q.where(TaskRow.name == target["task"])
            elif "subject_hash" in target:
                q = q.where(SampleRow.subject_hash == target["subject_hash"])
            elif "samples" in target:
                q = q.where(SampleRow.sample_id.in_(target["samples"]))
            else:
                raise ValueError(f"unknown forget target {target!r}")
            return [_sample(row, name) for row, name in s.execute(q.order_by(SampleRow.id))]

    def learn_sample_ids(self, learn_seq: int) -> list[str]:
        """The sample digests a learn request brought, in the order of its data file."""
        with self._begin() as s:
            return list(s.scalars(select(SampleRow.sample_id).where(SampleRow.learn_request_seq == learn_seq)
                                  .order_by(SampleRow.data_row)))

    # ---- submission --------------------------------------------------------

    def request_by_key(self, model_id: int, key: str) -> tuple[rec.Request, str] | None:
        """The request filed under an idempotency key, with its payload sha."""
        with self._begin() as s:
            row = s.scalar(
                select(RequestRow).where(RequestRow.model_id == model_id, RequestRow.idempotency_key == key)
            )
            if row is None:
                return None
            name = s.scalar(select(ModelRow.name).where(ModelRow.id == model_id))
            return _request(row, name), row.payload_sha

    def submit_learn(
        self,
        model: rec.Model,
        *,
        task: str,
        classes: Sequence[int],
        probe_digest: str | None,
        payload_digest: str,
        payload_sha: str,
        sample_ids: Sequence[str],
        labels: Sequence[int],
        subject_hashes: Sequence[str | None],
        content_digests: Sequence[str],
        idempotency_key: str | None,
        requested_by: str | None,
        reason: str | None,
    ) -> rec.Request:
        now = utcnow()
        with self._begin() as s:
            # Taking the model lock before the insert allocates seq makes seq
            # order commit order within a model: otherwise a request could
            # commit after a later-numbered one had already been claimed.
            locked = _lock_model(s, model.id)
            task_row = s.scalar(select(TaskRow).where(TaskRow.model_id == model.id, TaskRow.name == task))
            new_task = task_row is None
            if task_row is None:
                task_row = TaskRow(model_id=model.id, name=task, state=PENDING, classes=sorted(set(classes)),
                                   probe_digest=probe_digest)
                s.add(task_row)
                s.flush()
            else:
                task_row.classes = sorted(set(task_row.classes) | set(classes))
                if probe_digest is not None:
                    task_row.probe_digest = probe_digest
            row = RequestRow(
                id=str(uuid.uuid4()),
                model_id=model.id,
                kind="learn",
                target={"task": task, "n_samples": len(sample_ids)},
                payload_sha=payload_sha,
                payload_digest=payload_digest,
                idempotency_key=idempotency_key,
                requested_by=requested_by,
                reason=reason,
                received_at=now,
                due_at=None,
                status=QUEUED,
                attempt=0,
            )
            s.add(row)
            s.flush()
            rows = [
                {"model_id": model.id, "sample_id": sid, "task_id": task_row.id, "subject_hash": subj,
                 "content_digest": content, "label": int(label), "learn_request_seq": row.seq, "status": PENDING,
                 "data_digest": payload_digest, "data_row": i}
                for i, (sid, label, subj, content) in enumerate(
                    zip(sample_ids, labels, subject_hashes, content_digests, strict=True))
            ]
            for chunk in _chunks(rows, 5000):
                s.execute(insert(SampleRow), chunk)
            _event(s, model.id, row.id, "submitted", locked=locked, request_kind="learn", task=task,
                   n_samples=len(sample_ids), new_task=new_task, probe=probe_digest, payload=payload_digest,
                   samples=row_digests.samples(rows), **_request_digests(row, self.ids))
            return _request(row, model.name)

    def submit_forget(
        self,
        model: rec.Model,
        *,
        target: dict[str, Any],
        payload_sha: str,
        received_at: dt.datetime,
        due_at: dt.datetime,
        idempotency_key: str | None,
        requested_by: str | None,
        reason: str | None,
    ) -> rec.Request:
        with self._begin() as s:
            locked = _lock_model(s, model.id)  # before seq is allocated, as in submit_learn
            row = RequestRow(
                id=str(uuid.uuid4()),
                model_id=model.id,
                kind="forget",
                target=target,
                payload_sha=payload_sha,
                payload_digest=None,
                idempotency_key=idempotency_key,
                requested_by=requested_by,
                reason=reason,
                received_at=received_at,
                due_at=due_at,
                status=QUEUED,
                attempt=0,
            )
            s.add(row)
            s.flush()
            _event(s, model.id, row.id, "submitted", locked=locked, request_kind="forget", target=target,
                   due_at=due_at.isoformat(), **_request_digests(row, self.ids))
            return _request(row, model.name)

    def submit_retrain(self, model_id: int, *, units: Sequence[int], reason: str,
                       requested_by: str = "lifecycle") -> rec.Request | None:
        """Enqueue an internal ``retrain`` request (e.g. S3T shards left without
        a usable sequence), unless one is already queued for the model: that one
        retrains whatever needs it when it runs. It queues behind the model's
        other requests, so per-model order, leases and fencing apply to it."""
        with self._begin() as s:
            locked = _lock_model(s, model_id)  # before seq is allocated, as in submit_learn
            queued = s.scalar(select(RequestRow.id).where(
                RequestRow.model_id == model_id, RequestRow.kind == "retrain", RequestRow.status == QUEUED))
            if queued is not None:
                return None
            return _internal_request(s, self.ids, locked, "retrain", {"units": sorted(int(u) for u in units)},
                                     requested_by, reason)

    def open_forget_overlapping(self, model_id: int, target: dict[str, Any]) -> str | None:
        """The id of a queued or running forget that names the same task or
        subject, or any of the same samples, if there is one."""
        with self._begin() as s:
            rows = s.scalars(
                select(RequestRow).where(
                    RequestRow.status.in_((QUEUED, RUNNING)),
                    RequestRow.model_id == model_id,
                    RequestRow.kind == "forget",
                )
            )
            wanted = set(target.get("samples", ()))
            for row in rows:
                for key in ("task", "subject_hash"):
                    if key in target and row.target.get(key) == target[key]:
                        return row.id
                if wanted and not wanted.isdisjoint(row.target.get("samples", ())):
                    return row.id
            return None

    def cancel(self, request_id: str) -> tuple[rec.Request, tuple[str, ...]] | None:
        """Cancel a queued request; returns it with the artifacts it freed
        (see ``_drop_unlearned``), or None when it was not queued."""
        with self._begin() as s:
            row = s.scalar(select(RequestRow).where(RequestRow.id == request_id).with_for_update())
            if row is None or row.status != QUEUED:
                return None
            row.status, row.finished_at = CANCELLED, utcnow()
            freed, dropped = _drop_unlearned(s, row)
            _event(s, row.model_id, row.id, "cancelled", **dropped)
            name = s.scalar(select(ModelRow.name).where(ModelRow.id == row.model_id))
            return _request(row, name), freed

    def extend_deadline(self, request_id: str, until: dt.datetime, reason: str, by: str | None) -> rec.Request | None:
        """Move an open forget's due date later; None when the request is not open."""
        with self._begin() as s:
            row = s.scalar(select(RequestRow).where(RequestRow.id == request_id).with_for_update())
            if row is None or row.status not in (QUEUED, RUNNING):
                return None
            before = row.due_at
            row.due_at = until
            _event(s, row.model_id, row.id, "deadline_extended", previous=before.isoformat(),
                   due_at=until.isoformat(), reason=reason, by=by)
            name = s.scalar(select(ModelRow.name).where(ModelRow.id == row.model_id))
            return _request(row, name)

    def redact(self, request_id: str, fields: Sequence[str], why: str, by: str | None) -> rec.Request | None:
        """Erase free-text fields of a request; the chain keeps their digests and
        records the redaction, so verification still holds. None when unknown."""
        with self._begin() as s:
            row = s.scalar(select(RequestRow).where(RequestRow.id == request_id).with_for_update())
            if row is None:
                return None
            for name in fields:
                setattr(row, name, None)
            _event(s, row.model_id, row.id, "redacted", fields=sorted(fields), why=why, by=by)
            return _request(row, s.scalar(select(ModelRow.name).where(ModelRow.id == row.model_id)))

    # ---- reading requests -------------------------------------------------

    def request(self, request_id: str) -> rec.Request | None:
        with self._begin() as s:
            q = (
                select(RequestRow, ModelRow.name)
                .join(ModelRow, ModelRow.id == RequestRow.model_id)
                .where(RequestRow.id == request_id)
            )
            found = s.execute(q).first()
            return _request(*found) if found else None

    def request_ids_starting(self, prefix: str, limit: int) -> list[str]:
        """Up to ``limit`` request ids that start with ``prefix`` (the unique id index serves it)."""
        with self._begin() as s:
            return list(s.scalars(select(RequestRow.id).where(RequestRow.id >= prefix, RequestRow.id < prefix + "~")
                                  .order_by(RequestRow.id).limit(limit)))

    def requests(self, model_id: int | None = None, statuses: Iterable[str] | None = None) -> list[rec.Request]:
        with self._begin() as s:
            q = select(RequestRow, ModelRow.name).join(ModelRow, ModelRow.id == RequestRow.model_id)
            if model_id is not None:
                q = q.where(RequestRow.model_id == model_id)
            if statuses is not None:
                q = q.where(RequestRow.status.in_(list(statuses)))
            return [_request(row, name) for row, name in s.execute(q.order_by(RequestRow.seq))]

    def audit_head(self, model_id: int) -> tuple[int, str | None]:
        with self._begin() as s:
            row = s.get(ModelRow, model_id)
            return row.audit_seq, row.audit_head

    def chain_link(self, model_name: str, seq: int) -> rec.ChainLink | None:
        """The event at ``seq`` of a model's audit chain, as far as an anchor needs it."""
        with self._begin() as s:
            found = s.execute(
                select(EventRow.request_id, EventRow.kind, EventRow.hash)
                .join(ModelRow, ModelRow.id == EventRow.model_id)
                .where(ModelRow.name == model_name, EventRow.seq == seq)
            ).first()
            return rec.ChainLink(model_name, seq, *found) if found else None

    def payload_digest(self, request_id: str) -> str | None:
        with self._begin() as s:
            return s.scalar(select(RequestRow.payload_digest).where(RequestRow.id == request_id))

    # ---- claiming and leases ----------------------------------------------

    def claim(self, owner: str, lease_seconds: float, model_id: int | None = None) -> rec.Claim | None:
        """Take the oldest queued request of a model that has none running (see claim_many)."""
        claims = self.claim_many(owner, lease_seconds, limit=1, model_id=model_id)
        return claims[0] if claims else None

    def claim_many(self, owner: str, lease_seconds: float, *, limit: int,
                   model_id: int | None = None) -> list[rec.Claim]:
        """Take the heads of up to ``limit`` models that have none running, oldest head first.

        Per-model order is ledger order: only a model's oldest queued request
        is eligible, and only while none of its requests is running.

        The candidates (each idle model's head, oldest first) are read without
        locks; then the candidates' model rows are locked, which every change
        to a model's requests also takes, and their heads are read again under
        those locks. Both locks skip rows another transaction holds, so a
        claim never waits and never deadlocks; it moves on to the next models
        instead. Each step is an index lookup per model, so a claim costs the
        same with ten or ten thousand requests queued, and claiming several
        models at once shares one transaction's statements among them.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        now = utcnow()
        expires = now + dt.timedelta(seconds=lease_seconds)
        claimed: list[tuple[RequestRow, ModelRow]] = []
        with self._begin() as s:
            candidates = s.scalars(self._idle_heads(model_id)).all()
            while candidates and len(claimed) < limit:
                chunk, candidates = candidates[:limit - len(claimed)], candidates[limit - len(claimed):]
                locked = {m.id: m for m in s.scalars(
                    select(ModelRow).where(ModelRow.id.in_(chunk)).with_for_update(key_share=True, skip_locked=True)
                )}
                if not locked:
                    continue
                heads = union_all(*(self._head_seq(m, repairs_only=row.quarantine is not None)
                                    for m, row in locked.items()))
                running = aliased(RequestRow)
                rows = s.scalars(
                    select(RequestRow)
                    .where(RequestRow.seq.in_(heads),
                           ~exists().where(running.model_id == RequestRow.model_id, running.status == RUNNING))
                    .order_by(RequestRow.seq)
                    .with_for_update(skip_locked=True)
                ).all()
                claimed += [(row, locked[row.model_id]) for row in rows]
            claims = []
            for row, model_row in sorted(claimed, key=lambda pair: pair[0].seq):
                row.status = RUNNING
                row.attempt += 1
                row.lease_owner = owner
                row.lease_expires_at = expires
                row.started_at = now
                _event(s, row.model_id, row.id, "claimed", locked=model_row, owner=owner, attempt=row.attempt)
                claims.append(rec.Claim(
                    request=_request(row, model_row.name),
                    model=_model(model_row),
                    owner=owner,
                    attempt=row.attempt,
                    payload_digest=row.payload_digest,
                    payload_sha=row.payload_sha,
                    audit_anchor=(model_row.audit_seq, model_row.audit_head),
                ))
            return claims

    @staticmethod
    def _head_seq(model_id, repairs_only=False):
        q = select(func.min(RequestRow.seq)).where(RequestRow.model_id == model_id, RequestRow.status == QUEUED)
        return q.where(RequestRow.kind == "repair") if repairs_only is True else q

    @staticmethod
    def _running(model_id):
        return exists().where(RequestRow.model_id == model_id, RequestRow.status == RUNNING)

    def _idle_heads(self, model_id: int | None):
        """Model ids with a queued request and none running, oldest head first."""
        # a quarantined model's queue waits; only a repair may jump it
        head = case((ModelRow.quarantine.is_(None), self._head_seq(ModelRow.id).correlate(ModelRow).scalar_subquery()),
                    else_=self._head_seq(ModelRow.id, repairs_only=True).correlate(ModelRow).scalar_subquery())
        idle = ~self._running(ModelRow.id).correlate(ModelRow)
        heads = select(ModelRow.id.label("model_id"), head.label("head")).where(idle)
        if model_id is not None:
            heads = heads.where(ModelRow.id == model_id)
        heads = heads.subquery()
        return select(heads.c.model_id).where(heads.c.head.is_not(None)).order_by(heads.c.head)

    @staticmethod
    def _lease_lost(claim: rec.Claim) -> LeaseLost:
        return LeaseLost(f"request {claim.request.id}: worker {claim.owner} no longer holds attempt {claim.attempt}")

    def _owned(self, s: Session, claim: rec.Claim) -> RequestRow:
        row = s.scalar(
            select(RequestRow)
            .where(
                RequestRow.id == claim.request.id,
                RequestRow.status == RUNNING,
                RequestRow.lease_owner == claim.owner,
                RequestRow.attempt == claim.attempt,
            )
            .with_for_update()
        )
        if row is None:
            raise self._lease_lost(claim)
        return row

    def renew(self, claim: rec.Claim, lease_seconds: float) -> bool:
        try:
            with self._begin() as s:
                row = self._owned(s, claim)
                row.lease_expires_at = utcnow() + dt.timedelta(seconds=lease_seconds)
                return True
        except LeaseLost:
            return False

    def quarantine(self, claim: rec.Claim, why: str) -> None:
        """The step of ``claim`` found the model's stored state or data unreadable:
        hand the request back untouched (its attempt not counted, so it is never
        failed for it) and stop claiming the model until a repair applies."""
        with self._begin() as s:
            row = self._owned(s, claim)
            row.status, row.lease_owner, row.lease_expires_at = QUEUED, None, None
            row.attempt -= 1
            model = _lock_model(s, row.model_id)
            model.quarantine = why
            _event(s, row.model_id, row.id, "quarantined", locked=model, why=why)

    def submit_repair(self, model_id: int, target: dict[str, Any], requested_by: str | None,
                      reason: str) -> rec.Request:
        """Queue a repair; it is claimed ahead of the model's other requests while the model is quarantined."""
        with self._begin() as s:
            return _internal_request(s, self.ids, _lock_model(s, model_id), "repair", target, requested_by, reason)

    def open_repair(self, model_id: int) -> str | None:
        with self._begin() as s:
            return s.scalar(select(RequestRow.id).where(RequestRow.model_id == model_id, RequestRow.kind == "repair",
                                                        RequestRow.status.in_((QUEUED, RUNNING))))

    def data_files(self, model_id: int) -> dict[str, list[rec.Sample]]:
        """The data files the model's active samples live in, with those samples."""
        out: dict[str, list[rec.Sample]] = {}
        with self._begin() as s:
            q = (select(SampleRow, TaskRow.name).join(TaskRow, TaskRow.id == SampleRow.task_id)
                 .where(SampleRow.model_id == model_id, SampleRow.status == ACTIVE)
                 .order_by(SampleRow.task_id, SampleRow.learn_request_seq, SampleRow.data_row))
            for row, name in s.execute(q):
                out.setdefault(row.data_digest, []).append(_sample(row, name))
        return out

    def release(self, claim: rec.Claim, why: str) -> None:
        """Give a claimed request back to the queue untouched (graceful shutdown)."""
        with self._begin() as s:
            row = self._owned(s, claim)
            row.status, row.lease_owner, row.lease_expires_at = QUEUED, None, None
            _event(s, row.model_id, row.id, "released", owner=claim.owner, attempt=claim.attempt, why=why)

    def requeue_expired(self, max_attempts: int) -> list[tuple[str, tuple[str, ...]]]:
        """Re-queue running requests whose lease expired; fail those out of
        attempts. Returns (request id, artifacts a failed learn freed)."""
        now = utcnow()
        touched = []
        with self._begin() as s:
            rows = s.scalars(
                select(RequestRow)
                .where(RequestRow.status == RUNNING, RequestRow.lease_expires_at < now)
                .order_by(RequestRow.model_id, RequestRow.seq)  # model rows get locked in one order
                .with_for_update(skip_locked=True)
            ).all()
            for row in rows:
                owner = row.lease_owner
                row.lease_owner, row.lease_expires_at = None, None
                if row.attempt >= max_attempts:
                    row.status, row.finished_at = FAILED, now
                    row.error = f"its lease expired {row.attempt} times (worker died or hung each time)"
                    freed, dropped = _drop_unlearned(s, row)
                    _event(s, row.model_id, row.id, "failed", error=row.error, **dropped)
                else:
                    row.status, freed = QUEUED, ()
                    _event(s, row.model_id, row.id, "requeued", expired_owner=owner, attempt=row.attempt)
                touched.append((row.id, freed))
        return touched

    # ---- finishing ----------------------------------------------------------

    def latest_version(self, model_id: int) -> rec.ModelVersion | None:
        with self._begin() as s:
            q = (
                select(ModelVersionRow, ModelRow.name)
                .join(ModelRow, ModelRow.id == ModelVersionRow.model_id)
                .where(ModelVersionRow.model_id == model_id)
                .order_by(ModelVersionRow.version.desc())
                .limit(1)
            )
            found = s.execute(q).first()
            return _version(*found) if found else None

    def versions(self, model_id: int) -> list[rec.ModelVersion]:
        with self._begin() as s:
            q = (
                select(ModelVersionRow, ModelRow.name)
                .join(ModelRow, ModelRow.id == ModelVersionRow.model_id)
                .where(ModelVersionRow.model_id == model_id)
                .order_by(ModelVersionRow.version)
            )
            return [_version(*r) for r in s.execute(q)]

    def commit_steps(self, results: Sequence[rec.StepResult]) -> list[rec.Committed]:
        """Commit the ends of claimed steps together, in one transaction.

        Each step is fenced on its own: one whose worker no longer holds the
        request (the lease expired and another attempt took it) or whose model
        moved past the version the step started from commits nothing and comes
        back with ``lost`` set; the others commit. Committing a worker's batch
        of steps at once shares one transaction's statements among them, which
        is what lets the queue hand out hundreds of claims a second.
        """
        if len({r.claim.request.id for r in results}) != len(results):
            raise ValueError("commit_steps got the same request twice")
        if not results:
            return []
        now = utcnow()
        with self._begin() as s:
            # Request rows first, then model rows in id order: the order every
            # other transaction that waits for both takes them in.
            rows = {row.id: row for row in s.scalars(
                select(RequestRow)
                .where(RequestRow.id.in_([r.claim.request.id for r in results]), RequestRow.status == RUNNING)
                .with_for_update()
            )}
            model_ids = sorted({r.claim.model.id for r in results})
            models = {m.id: m for m in s.scalars(
                select(ModelRow).where(ModelRow.id.in_(model_ids)).order_by(ModelRow.id).with_for_update(key_share=True)
            )}
            latest = dict(s.execute(
                select(ModelVersionRow.model_id, func.max(ModelVersionRow.version))
                .where(ModelVersionRow.model_id.in_(model_ids))
                .group_by(ModelVersionRow.model_id)
            ).all())
            committed = []
            for result in results:
                claim = result.claim
                row = rows.get(claim.request.id)
                if row is None or row.lease_owner != claim.owner or row.attempt != claim.attempt:
                    committed.append(rec.Committed(claim.request.id, None, str(self._lease_lost(claim))))
                    continue
                model_row = models[row.model_id]
                if result.status != APPLIED:
                    row.status, row.finished_at, row.error = result.status, now, result.error
                    row.lease_owner = row.lease_expires_at = None
                    # the samples were never learned: free their ids and data
                    freed, dropped = _drop_unlearned(s, row)
                    _event(s, row.model_id, row.id, result.status, locked=model_row, error=result.error, **dropped)
                    committed.append(rec.Committed(row.id, None, freed=freed))
                    continue
                base = result.base_version
                if latest.get(row.model_id, 0) != base:
                    committed.append(rec.Committed(row.id, None, f"request {row.id}: model moved from version "
                                                                 f"{base} to {latest.get(row.model_id)} during the step"))
                    continue
                latest[row.model_id] = base + 1
                self._commit_applied(s, row, model_row, base + 1, result.outcome, now)
                committed.append(rec.Committed(row.id, rec.ModelVersion(
                    model_row.name, base + 1, row.id, result.outcome.artifact_digest, False, now)))
            return committed

    @staticmethod
    def _commit_applied(s: Session, row: RequestRow, model_row: ModelRow, version: int,
                        outcome: rec.StepOutcome, now: dt.datetime) -> None:
        """Record one applied step: version, evaluations, task states, findings, tombstones, certificate."""
        model_id = row.model_id
        s.add(
            ModelVersionRow(
                model_id=model_id,
                version=version,
                request_id=row.id,
                artifact_digest=outcome.artifact_digest,
                state_purged=False,
                created_at=now,
            )
        )
        tasks = {t.name: t for t in s.scalars(select(TaskRow).where(TaskRow.model_id == model_id))}
        evaluations = [dict(model_id=model_id, version=version, task_id=tasks[ev.task].id, role=ev.role,
                            accuracy=ev.accuracy, chance=ev.chance, n=ev.n) for ev in outcome.evaluations]
        s.add_all(EvaluationRow(**e) for e in evaluations)
        for name, state in outcome.task_states.items():
            tasks[name].state = state
            if state != FORGOTTEN:
                tasks[name].forgotten_at_version = None
                tasks[name].acc_at_forget = tasks[name].peak_since_forget = None
        for name, acc in outcome.tasks_forgotten.items():
            tasks[name].state = FORGOTTEN
            tasks[name].forgotten_at_version = version
            tasks[name].acc_at_forget = tasks[name].peak_since_forget = acc
        for ev in outcome.evaluations:
            t = tasks[ev.task]
            if ev.role == "forgotten" and ev.task not in outcome.tasks_forgotten:
                t.peak_since_forget = max(t.peak_since_forget or 0.0, ev.accuracy)
        findings = [{"task_id": tasks[f["task"]].id, **{k: v for k, v in f.items() if k != "task"}}
                    for f in outcome.findings]
        for f, finding in zip(outcome.findings, findings):
            s.add(RelapseFindingRow(model_id=model_id, version=version, created_at=now, **finding))
            _event(s, model_id, row.id, "relapse", locked=model_row, task=f["task"], relapse=f["relapse"])
        if row.kind == "learn":
            s.execute(
                update(SampleRow)
                .where(SampleRow.learn_request_seq == row.seq, SampleRow.status == PENDING)
                .values(status=ACTIVE)
            )
        # An erasure (of samples or of a subject) tombstones the rows' contents
        # too, so they cannot come back under new ids; a task forget does not:
        # a task may be deliberately learned again (relearned).
        erasure = row.kind == "forget" and "task" not in row.target
        tombstones = []
        for chunk in _chunks(outcome.forgotten_sample_ids, 500):
            found = s.scalars(
                select(SampleRow).where(SampleRow.model_id == model_id, SampleRow.sample_id.in_(chunk))
            ).all()
            for sample_row in found:
                sample_row.status = FORGOTTEN
                tombstones.append(dict(model_id=model_id, sample_id=sample_row.sample_id,
                                       subject_hash=sample_row.subject_hash,
                                       content_digest=sample_row.content_digest if erasure else None,
                                       request_id=row.id, created_at=now))
        s.add_all(TombstoneRow(**t) for t in tombstones)
        covered: dict[str, Any] = {
            "evaluations": row_digests.evaluations(evaluations), "findings": row_digests.findings(findings),
            "tasks": {name: tasks[name].state for name in sorted({*outcome.task_states, *outcome.tasks_forgotten})},
        }
        if row.kind in ("forget", "repair"):  # a repair tombstones the rows whose data it found unreadable
            covered["tombstones"] = row_digests.tombstones(tombstones)
        if outcome.certificate is not None:
            s.add(CertificateRow(request_id=row.id, model_id=model_id, body=outcome.certificate, created_at=now))
            covered["certificate"] = row_digests.certificate(outcome.certificate)
        if row.kind == "repair":
            for name in row.target.get("drop_probes", ()):
                tasks[name].probe_digest = None
            covered["repaired"] = {"quarantine_was": model_row.quarantine, **row.target}
            model_row.quarantine = None
        row.status, row.finished_at = APPLIED, now
        row.step_seconds, row.result_version = outcome.step_seconds, version
        row.lease_owner, row.lease_expires_at, row.error = None, None, None
        _event(s, model_id, row.id, "applied", locked=model_row, version=version, artifact=outcome.artifact_digest,
               step_seconds=round(outcome.step_seconds, 6), **covered)

    # ---- purging ---------------------------------------------------------------

    def take_purge(self, model_id: int, owner: str, lease_seconds: float) -> bool:
        """Take the model's purge lease: at most one purge per model runs at a time."""
        now = utcnow()
        with self._begin() as s:
            done = s.execute(
                update(ModelRow)
                .where(ModelRow.id == model_id,
                       or_(ModelRow.purge_owner.is_(None), ModelRow.purge_owner == owner, ModelRow.purge_until < now))
                .values(purge_owner=owner, purge_until=now + dt.timedelta(seconds=lease_seconds))
            )
            return done.rowcount == 1

    def release_purge(self, model_id: int, owner: str) -> None:
        with self._begin() as s:
            s.execute(update(ModelRow).where(ModelRow.id == model_id, ModelRow.purge_owner == owner)
                      .values(purge_owner=None, purge_until=None))

    def purge_plan(self, model_id: int) -> rec.PurgePlan:
        """What the model still keeps that it must not: forgotten samples'
        data rows, model states older than its latest applied forget or past
        its retention, and (when its policy says so) forgotten tasks' probe
        sets. Every lookup is by index, so the plan costs what it names."""
        with self._begin() as s:
            model = s.get(ModelRow, model_id)
            rows = s.execute(
                select(SampleRow.id, SampleRow.data_digest, SampleRow.data_row)
                .where(SampleRow.status == FORGOTTEN, SampleRow.data_digest.is_not(None),
                       SampleRow.model_id == model_id)
                .order_by(SampleRow.data_digest, SampleRow.data_row)
            ).all()
            cutoff = s.scalar(select(func.max(RequestRow.result_version)).where(
                RequestRow.model_id == model_id, RequestRow.status == APPLIED, RequestRow.kind == "forget"))
            latest = s.scalar(select(func.max(ModelVersionRow.version)).where(ModelVersionRow.model_id == model_id))
            states: list[tuple[int, str]] = []
            if latest is not None:
                oldest_kept = max(latest - model.keep_states + 1, cutoff or 0)
                states = [(v, d) for v, d in s.execute(
                    select(ModelVersionRow.version, ModelVersionRow.artifact_digest)
                    .where(ModelVersionRow.model_id == model_id, ModelVersionRow.state_purged.is_(False),
                           ModelVersionRow.version < oldest_kept)
                )]
            probes: list[tuple[str, str]] = []
            if model.forgotten_probes == "purge":
                probes = [(n, d) for n, d in s.execute(
                    select(TaskRow.name, TaskRow.probe_digest)
                    .where(TaskRow.model_id == model_id, TaskRow.state == FORGOTTEN, TaskRow.probe_digest.is_not(None))
                )]
            return rec.PurgePlan(model_id, [(r.id, r.data_digest, r.data_row) for r in rows], states, probes)

    def finish_purge(self, plan: rec.PurgePlan) -> list[str]:
        """Record that the plan's rows, states and probes were erased (their
        keys are already destroyed); return the artifacts that nothing
        references any more, for the caller to delete."""
        if plan.empty:
            return []
        with self._begin() as s:
            # the model row before any sample row: the order a step's commit takes them in
            locked = _lock_model(s, plan.model_id)
            ids = [pk for pk, _, _ in plan.rows]
            for chunk in _chunks(ids, 1000):
                s.execute(update(SampleRow).where(SampleRow.id.in_(chunk)).values(data_digest=None))
            if plan.states:
                s.execute(update(ModelVersionRow)
                          .where(ModelVersionRow.model_id == plan.model_id,
                                 ModelVersionRow.version.in_([v for v, _ in plan.states]))
                          .values(state_purged=True))
            for name, _ in plan.probes:
                s.execute(update(TaskRow).where(TaskRow.model_id == plan.model_id, TaskRow.name == name)
                          .values(probe_digest=None))
            touched = plan.digests()
            _event(s, plan.model_id, None, "purged", locked=locked, rows=len(plan.rows), files=len({d for _, d, _ in plan.rows}),
                   versions=sorted(v for v, _ in plan.states), probes=sorted(n for n, _ in plan.probes))
            return sorted(set(touched) - _referenced(s, touched))

    def unreferenced(self, digests: Iterable[str]) -> list[str]:
        """Those of ``digests`` that no sample, open request, task or kept model state points at."""
        digests = sorted(set(d for d in digests if d))
        with self._begin() as s:
            return sorted(set(digests) - _referenced(s, digests))

    def artifact_roles(self) -> dict[str, str]:
        """Every artifact the ledger points at, with its role: data, probe or state."""
        with self._begin() as s:
            roles = {d: "state" for d in s.scalars(select(ModelVersionRow.artifact_digest)
                                                   .where(ModelVersionRow.state_purged.is_(False)))}
            roles |= {d: "probe" for d in s.scalars(select(TaskRow.probe_digest)
                                                   .where(TaskRow.probe_digest.is_not(None)))}
            roles |= {d: "data" for d in s.scalars(select(SampleRow.data_digest)
                                                  .where(SampleRow.data_digest.is_not(None)).distinct())}
            roles |= {d: "data" for d in s.scalars(select(RequestRow.payload_digest).where(
                RequestRow.status.in_((QUEUED, RUNNING)), RequestRow.payload_digest.is_not(None)))}
            return roles

    def replace_artifact(self, old: str, new: str) -> None:
        """Point everything that named ``old`` at ``new`` (an artifact re-written in another format)."""
        with self._begin() as s:
            models = set(s.scalars(select(SampleRow.model_id).where(SampleRow.data_digest == old).distinct()))
            models |= set(s.scalars(select(TaskRow.model_id).where(TaskRow.probe_digest == old)))
            models |= set(s.scalars(select(ModelVersionRow.model_id).where(ModelVersionRow.artifact_digest == old)))
            s.execute(update(SampleRow).where(SampleRow.data_digest == old).values(data_digest=new))
            s.execute(update(RequestRow).where(RequestRow.payload_digest == old).values(payload_digest=new))
            s.execute(update(TaskRow).where(TaskRow.probe_digest == old).values(probe_digest=new))
            s.execute(update(ModelVersionRow).where(ModelVersionRow.artifact_digest == old)
                      .values(artifact_digest=new))
            for model_id in sorted(models):
                _event(s, model_id, None, "artifact_resealed", old=old, new=new)

    def referenced_digests(self) -> set[str]:
        """Every artifact the ledger still points at (for the sweep)."""
        with self._begin() as s:
            found = set(s.scalars(select(SampleRow.data_digest).where(SampleRow.data_digest.is_not(None))
                                  .distinct()))
            found |= set(s.scalars(select(TaskRow.probe_digest).where(TaskRow.probe_digest.is_not(None))))
            found |= set(s.scalars(select(ModelVersionRow.artifact_digest)
                                   .where(ModelVersionRow.state_purged.is_(False))))
            found |= set(s.scalars(select(RequestRow.payload_digest).where(
                RequestRow.status.in_((QUEUED, RUNNING)), RequestRow.payload_digest.is_not(None))))
            return found

    # ---- reports -------------------------------------------------------------

    def request_counts(self) -> list[tuple[str, str, int]]:
        """(kind, status, count) over all models."""
        with self._begin() as s:
            q = select(RequestRow.kind, RequestRow.status, func.count()).group_by(RequestRow.kind,
                                                                                   RequestRow.status)
            return [(k, st, n) for k, st, n in s.execute(q)]

    def oldest_open_forget(self) -> tuple[dt.datetime, dt.datetime] | None:
        """(received_at, due_at) of the open forget received first."""
        with self._begin() as s:
            q = (select(RequestRow.received_at, RequestRow.due_at)
                 .where(RequestRow.kind == "forget", RequestRow.status.in_((QUEUED, RUNNING)))
                 .order_by(RequestRow.received_at).limit(1))
            found = s.execute(q).first()
            return (found[0], found[1]) if found else None

    def overdue_forgets(self, now: dt.datetime) -> int:
        with self._begin() as s:
            return s.scalar(select(func.count()).select_from(RequestRow).where(
                RequestRow.kind == "forget", RequestRow.status.in_((QUEUED, RUNNING)), RequestRow.due_at < now))

    def finding_counts(self) -> list[tuple[str, int]]:
        """(strategy, number of relapse findings)."""
        with self._begin() as s:
            q = (select(ModelRow.strategy, func.count()).select_from(RelapseFindingRow)
                 .join(ModelRow, ModelRow.id == RelapseFindingRow.model_id).group_by(ModelRow.strategy))
            return [(st, n) for st, n in s.execute(q)]


    def evaluations(self, model_id: int) -> list[rec.Evaluation]:
        with self._begin() as s:
            q = (
                select(EvaluationRow, TaskRow.name)
                .join(TaskRow, TaskRow.id == EvaluationRow.task_id)
                .where(EvaluationRow.model_id == model_id)
                .order_by(EvaluationRow.version, TaskRow.id)
            )
            return [rec.Evaluation(r.version, name, r.role, r.accuracy, r.chance, r.n) for r, name in s.execute(q)]

    def findings(self, model_id: int | None = None) -> list[rec.RelapseFinding]:
        with self._begin() as s:
            q = (
                select(RelapseFindingRow, TaskRow.name, ModelRow.name)
                .join(TaskRow, TaskRow.id == RelapseFindingRow.task_id)
                .join(ModelRow, ModelRow.id == RelapseFindingRow.model_id)
                .order_by(RelapseFindingRow.id)
            )
            if model_id is not None:
                q = q.where(RelapseFindingRow.model_id == model_id)
            return [
                rec.RelapseFinding(
                    model=mname, version=r.version, task=tname, forgotten_at_version=r.forgotten_at_version,
                    acc_at_forget=r.acc_at_forget, accuracy=r.accuracy, chance=r.chance, relapse=r.relapse,
                    threshold=r.threshold, peak_since_forget=r.peak_since_forget, created_at=r.created_at,
                )
                for r, tname, mname in s.execute(q)
            ]

    def record_report(self, model_id: int, model_version: int, html_path: str, html_sha256: str,
                      json_sha256: str) -> rec.Report:
        with self._begin() as s:
            row = ReportRow(model_id=model_id, model_version=model_version, written_at=utcnow(),
                            html_path=html_path, html_sha256=html_sha256, json_sha256=json_sha256)
            s.add(row)
            s.flush()
            _event(s, model_id, None, "report_written", report=row.id, version=model_version,
                   html_sha256=html_sha256, json_sha256=json_sha256)
            return _report(row, s.get(ModelRow, model_id).name)

    def reports(self, model_id: int | None = None) -> list[rec.Report]:
        with self._begin() as s:
            q = select(ReportRow, ModelRow.name).join(ModelRow, ModelRow.id == ReportRow.model_id)
            if model_id is not None:
                q = q.where(ReportRow.model_id == model_id)
            return [_report(row, name) for row, name in s.execute(q.order_by(ReportRow.id))]

    def certificate(self, request_id: str) -> dict[str, Any] | None:
        with self._begin() as s:
            row = s.get(CertificateRow, request_id)
            return dict(row.body) if row else None

    def audit_problems(self) -> tuple[int, list[audit.ChainProblem | ledger_audit.RowProblem]]:
        """Check every model's audit chain, then replay it against every table:
        (events checked, the first problem per model)."""
        # The rows read hold no reference cycles; the cyclic collector would only walk
        # them over and over (a third of the time, growing faster than the ledger).
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._audit_problems()
        finally:
            if collecting:
                gc.enable()

    def _audit_problems(self) -> tuple[int, list[audit.ChainProblem | ledger_audit.RowProblem]]:
        problems, checked = [], 0
        with self._begin() as s:
            for model in s.scalars(select(ModelRow).order_by(ModelRow.id)).all():
                # plain columns, not ORM objects: a verify reads every event of the ledger
                rows = s.execute(select(EventRow.id, EventRow.model_id, EventRow.seq, EventRow.request_id,
                                        EventRow.kind, EventRow.detail, EventRow.at, EventRow.prev_hash,
                                        EventRow.hash)
                                 .where(EventRow.model_id == model.id).order_by(EventRow.seq, EventRow.id)).all()
                checked += len(rows)
                chain = [audit.ChainEvent(*r) for r in rows]
                found = audit.first_problem(model.name, chain, model.audit_seq, model.audit_head)
                if found is None:
                    found, _ = ledger_audit.first_row_problem(
                        model.name, [(r.kind, r.request_id, dict(r.detail)) for r in rows], _tables(s, model.id),
                        self.ids.text)
                if found is not None:
                    problems.append(found)
        return checked, problems

    def events(self, model_id: int | None = None, request_id: str | None = None) -> list[rec.Event]:
        with self._begin() as s:
            q = select(EventRow, ModelRow.name).join(ModelRow, ModelRow.id == EventRow.model_id)
            if model_id is not None:
                q = q.where(EventRow.model_id == model_id)
            if request_id is not None:
                q = q.where(EventRow.request_id == request_id)
            return [
                rec.Event(r.id, name, r.request_id, r.kind, dict(r.detail), r.at)
                for r, name in s.execute(q.order_by(EventRow.id))
            ]


def _version(row: ModelVersionRow, model_name: str) -> rec.ModelVersion:
    return rec.ModelVersion(model_name, row.version, row.request_id, row.artifact_digest, row.state_purged,
                            row.created_at)


def _referenced(s: Session, digests: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(list(digests), 500):
        found |= set(s.scalars(select(SampleRow.data_digest).where(SampleRow.data_digest.in_(chunk)).distinct()))
        found |= set(s.scalars(select(TaskRow.probe_digest).where(TaskRow.probe_digest.in_(chunk))))
        found |= set(s.scalars(select(ModelVersionRow.artifact_digest).where(
            ModelVersionRow.artifact_digest.in_(chunk), ModelVersionRow.state_purged.is_(False))))
        found |= set(s.scalars(select(RequestRow.payload_digest).where(
            RequestRow.status.in_((QUEUED, RUNNING)), RequestRow.payload_digest.in_(chunk))))
    return found


def _drop_unlearned(s: Session, row: RequestRow) -> tuple[tuple[str, ...], dict[str, Any]]:
    """A learn that ends without being applied takes its sample rows with it,
    and its task too when nothing else was ever learned or queued for it.
    Returns the artifacts it may have freed (its data file, that task's probe
    set), for the caller to erase once the transaction commits, and what the
    ending event records of it."""
    if row.kind != "learn":
        return (), {}
    s.execute(delete(SampleRow).where(SampleRow.learn_request_seq == row.seq, SampleRow.status == PENDING))
    freed = (row.payload_digest,) if row.payload_digest else ()
    task = s.scalar(select(TaskRow).where(TaskRow.model_id == row.model_id, TaskRow.name == row.target["task"]))
    if task is None or task.state != PENDING or s.scalar(select(exists().where(SampleRow.task_id == task.id))):
        return freed, {}
    s.delete(task)
    return freed + ((task.probe_digest,) if task.probe_digest else ()), {"task_dropped": task.name}


def _tables(s: Session, model_id: int) -> ledger_audit.Tables:
    """One model's rows as plain dicts, for the audit replay."""

    def rows(table, *columns):
        q = select(*(getattr(table, c) for c in columns)).where(table.model_id == model_id)
        return [dict(zip(columns, r)) for r in s.execute(q)]

    return ledger_audit.Tables(
        requests=rows(RequestRow, "seq", "id", "model_id", "kind", "target", "payload_sha", "payload_digest",
                      "idempotency_key", "received_at", "due_at", "status", "result_version", "requested_by",
                      "reason"),
        samples=rows(SampleRow, "sample_id", "subject_hash", "content_digest", "label", "data_row", "task_id",
                     "learn_request_seq", "status", "data_digest"),
        tombstones=rows(TombstoneRow, "sample_id", "subject_hash", "content_digest", "request_id"),
        versions=rows(ModelVersionRow, "version", "request_id", "artifact_digest", "state_purged"),
        evaluations=rows(EvaluationRow, "version", "task_id", "role", "accuracy", "chance", "n"),
        findings=rows(RelapseFindingRow, "version", "task_id", "forgotten_at_version", "acc_at_forget", "accuracy",
                      "chance", "relapse", "threshold", "peak_since_forget"),
        certificates=rows(CertificateRow, "request_id", "body"),
        tasks=rows(TaskRow, "name", "state", "probe_digest"),
    )


def _internal_request(s: Session, ids: IdKey, locked: ModelRow, kind: str, target: dict[str, Any],
                      requested_by: str | None, reason: str) -> rec.Request:
    """Queue a request the system files itself (retrain, repair); the model row is already locked."""
    row = RequestRow(
        id=str(uuid.uuid4()), model_id=locked.id, kind=kind, target=target,
        payload_sha=hashlib.sha256(json.dumps(target, sort_keys=True).encode()).hexdigest(),
        payload_digest=None, idempotency_key=None, requested_by=requested_by, reason=reason,
        received_at=utcnow(), due_at=None, status=QUEUED, attempt=0,
    )
    s.add(row)
    s.flush()
    _event(s, locked.id, row.id, "submitted", locked=locked, request_kind=kind, target=target, reason=reason,
           **_request_digests(row, ids))
    return _request(row, locked.name)


def _request_digests(row: RequestRow, ids: IdKey) -> dict[str, Any]:
    return {"request": row_digests.request(row),
            "text": {"requested_by": ids.text(row.requested_by), "reason": ids.text(row.reason)}}


def _chunks(items: Sequence, size: int):
    items = list(items)
    for i in range(0, len(items), size):
        yield items[i : i + size]
