"""The request queue: claims, leases and the commits that end them.

Per-model order is ledger order; a claim never waits on another worker's
locks; a commit is fenced on the lease and on the model version the step
started from. Times come from the injected clock, so tests can expire a
lease by moving the clock instead of sleeping.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import case, exists, func, select, union_all, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from lifecycle.store import records as rec
from lifecycle.store import row_digests
from lifecycle.store.clock import Clock
from lifecycle.store.errors import LeaseLost
from lifecycle.store.records import RequestKind, RequestStatus, Role, SampleStatus, TaskState
from lifecycle.store.schema import (
    CertificateRow,
    EvaluationRow,
    ModelRow,
    ModelVersionRow,
    RelapseFindingRow,
    RequestRow,
    SampleRow,
    TaskRow,
    TombstoneRow,
    model_record,
    request_record,
)
from lifecycle.store.writes import append_event, chunks, drop_unlearned, lock_model


class Queue:
    def __init__(self, sessions: sessionmaker, clock: Clock) -> None:
        self._sessions = sessions
        self.clock = clock

    def _begin(self):
        return self._sessions.begin()

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
        now = self.clock()
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
                           ~exists().where(running.model_id == RequestRow.model_id,
                                           running.status == RequestStatus.RUNNING))
                    .order_by(RequestRow.seq)
                    .with_for_update(skip_locked=True)
                ).all()
                claimed += [(row, locked[row.model_id]) for row in rows]
            claims = []
            for row, model_row in sorted(claimed, key=lambda pair: pair[0].seq):
                row.status = RequestStatus.RUNNING
                row.attempt += 1
                row.lease_owner = owner
                row.lease_expires_at = expires
                row.started_at = now
                append_event(s, row.model_id, row.id, "claimed", locked=model_row, owner=owner, attempt=row.attempt)
                claims.append(rec.Claim(
                    request=request_record(row, model_row.name),
                    model=model_record(model_row),
                    owner=owner,
                    attempt=row.attempt,
                    payload_digest=row.payload_digest,
                    payload_sha=row.payload_sha,
                    audit_anchor=(model_row.audit_seq, model_row.audit_head),
                ))
            return claims

    @staticmethod
    def _head_seq(model_id, repairs_only=False):
        q = select(func.min(RequestRow.seq)).where(RequestRow.model_id == model_id,
                                                   RequestRow.status == RequestStatus.QUEUED)
        return q.where(RequestRow.kind == RequestKind.REPAIR) if repairs_only is True else q

    @staticmethod
    def _running(model_id):
        return exists().where(RequestRow.model_id == model_id, RequestRow.status == RequestStatus.RUNNING)

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
                RequestRow.status == RequestStatus.RUNNING,
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
                row.lease_expires_at = self.clock() + dt.timedelta(seconds=lease_seconds)
                return True
        except LeaseLost:
            return False

    def quarantine(self, claim: rec.Claim, why: str) -> None:
        """The step of ``claim`` found the model's stored state or data unreadable:
        hand the request back untouched (its attempt not counted, so it is never
        failed for it) and stop claiming the model until a repair applies."""
        with self._begin() as s:
            row = self._owned(s, claim)
            row.status, row.lease_owner, row.lease_expires_at = RequestStatus.QUEUED, None, None
            row.attempt -= 1
            model = lock_model(s, row.model_id)
            model.quarantine = why
            append_event(s, row.model_id, row.id, "quarantined", locked=model, why=why)

    def release(self, claim: rec.Claim, why: str) -> None:
        """Give a claimed request back to the queue untouched (graceful shutdown)."""
        with self._begin() as s:
            row = self._owned(s, claim)
            row.status, row.lease_owner, row.lease_expires_at = RequestStatus.QUEUED, None, None
            append_event(s, row.model_id, row.id, "released", owner=claim.owner, attempt=claim.attempt, why=why)

    def requeue_expired(self, max_attempts: int) -> list[tuple[str, tuple[str, ...]]]:
        """Re-queue running requests whose lease expired; fail those out of
        attempts. Returns (request id, artifacts a failed learn freed)."""
        now = self.clock()
        touched = []
        with self._begin() as s:
            rows = s.scalars(
                select(RequestRow)
                .where(RequestRow.status == RequestStatus.RUNNING, RequestRow.lease_expires_at < now)
                .order_by(RequestRow.model_id, RequestRow.seq)  # model rows get locked in one order
                .with_for_update(skip_locked=True)
            ).all()
            for row in rows:
                owner = row.lease_owner
                row.lease_owner, row.lease_expires_at = None, None
                if row.attempt >= max_attempts:
                    row.status, row.finished_at = RequestStatus.FAILED, now
                    row.error = f"its lease expired {row.attempt} times (worker died or hung each time)"
                    freed, dropped = drop_unlearned(s, row)
                    append_event(s, row.model_id, row.id, "failed", error=row.error, **dropped)
                else:
                    row.status, freed = RequestStatus.QUEUED, ()
                    append_event(s, row.model_id, row.id, "requeued", expired_owner=owner, attempt=row.attempt)
                touched.append((row.id, freed))
        return touched

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
        now = self.clock()
        with self._begin() as s:
            # Request rows first, then model rows in id order: the order every
            # other transaction that waits for both takes them in.
            rows = {row.id: row for row in s.scalars(
                select(RequestRow)
                .where(RequestRow.id.in_([r.claim.request.id for r in results]),
                       RequestRow.status == RequestStatus.RUNNING)
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
                if result.status != RequestStatus.APPLIED:
                    row.status, row.finished_at, row.error = result.status, now, result.error
                    row.lease_owner = row.lease_expires_at = None
                    # the samples were never learned: free their ids and data
                    freed, dropped = drop_unlearned(s, row)
                    append_event(s, row.model_id, row.id, result.status, locked=model_row, error=result.error,
                                 **dropped)
                    committed.append(rec.Committed(row.id, None, freed=freed))
                    continue
                base = result.base_version
                if latest.get(row.model_id, 0) != base:
                    moved = f"model moved from version {base} to {latest.get(row.model_id)} during the step"
                    committed.append(rec.Committed(row.id, None, f"request {row.id}: {moved}"))
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
            if state != TaskState.FORGOTTEN:
                tasks[name].forgotten_at_version = None
                tasks[name].acc_at_forget = tasks[name].peak_since_forget = None
        for name, acc in outcome.tasks_forgotten.items():
            tasks[name].state = TaskState.FORGOTTEN
            tasks[name].forgotten_at_version = version
            tasks[name].acc_at_forget = tasks[name].peak_since_forget = acc
        for ev in outcome.evaluations:
            t = tasks[ev.task]
            if ev.role == Role.FORGOTTEN and ev.task not in outcome.tasks_forgotten:
                t.peak_since_forget = max(t.peak_since_forget or 0.0, ev.accuracy)
        findings = [{"task_id": tasks[f["task"]].id, **{k: v for k, v in f.items() if k != "task"}}
                    for f in outcome.findings]
        for f, finding in zip(outcome.findings, findings):
            s.add(RelapseFindingRow(model_id=model_id, version=version, created_at=now, **finding))
            append_event(s, model_id, row.id, "relapse", locked=model_row, task=f["task"], relapse=f["relapse"])
        if row.kind == RequestKind.LEARN:
            s.execute(
                update(SampleRow)
                .where(SampleRow.learn_request_seq == row.seq, SampleRow.status == SampleStatus.PENDING)
                .values(status=SampleStatus.ACTIVE)
            )
        # An erasure (of samples or of a subject) tombstones the rows' contents
        # too, so they cannot come back under new ids; a task forget does not:
        # a task may be deliberately learned again (relearned).
        erasure = row.kind == RequestKind.FORGET and "task" not in row.target
        tombstones = []
        for chunk in chunks(outcome.forgotten_sample_ids, 500):
            found = s.scalars(
                select(SampleRow).where(SampleRow.model_id == model_id, SampleRow.sample_id.in_(chunk))
            ).all()
            for sample_row in found:
                sample_row.status = SampleStatus.FORGOTTEN
                tombstones.append(dict(model_id=model_id, sample_id=sample_row.sample_id,
                                       subject_hash=sample_row.subject_hash,
                                       content_digest=sample_row.content_digest if erasure else None,
                                       request_id=row.id, created_at=now))
        s.add_all(TombstoneRow(**t) for t in tombstones)
        covered: dict[str, Any] = {
            "evaluations": row_digests.evaluations(evaluations), "findings": row_digests.findings(findings),
            "tasks": {name: tasks[name].state for name in sorted({*outcome.task_states, *outcome.tasks_forgotten})},
        }
        # a repair tombstones the rows whose data it found unreadable
        if row.kind in (RequestKind.FORGET, RequestKind.REPAIR):
            covered["tombstones"] = row_digests.tombstones(tombstones)
        if outcome.certificate is not None:
            s.add(CertificateRow(request_id=row.id, model_id=model_id, body=outcome.certificate, created_at=now))
            covered["certificate"] = row_digests.certificate(outcome.certificate)
        if row.kind == RequestKind.REPAIR:
            for name in row.target.get("drop_probes", ()):
                tasks[name].probe_digest = None
            covered["repaired"] = {"quarantine_was": model_row.quarantine, **row.target}
            model_row.quarantine = None
        row.status, row.finished_at = RequestStatus.APPLIED, now
        row.step_seconds, row.result_version = outcome.step_seconds, version
        row.lease_owner, row.lease_expires_at, row.error = None, None, None
        append_event(s, model_id, row.id, "applied", locked=model_row, version=version,
                     artifact=outcome.artifact_digest, step_seconds=round(outcome.step_seconds, 6), **covered)
