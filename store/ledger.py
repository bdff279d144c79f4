"""Repository over the ledger tables. Every method is one transaction and
returns plain dataclasses from ``store.records``."""

from __future__ import annotations

import binascii
import datetime as dt
import gc
import hashlib
import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from sqlalchemy import Engine, bindparam, func, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lifecycle.store import audit, ledger_audit, row_digests
from lifecycle.store import records as rec
from lifecycle.store.clock import Clock, utcnow
from lifecycle.store.queue import Queue
from lifecycle.store.records import OPEN, RequestKind, RequestStatus, SampleStatus, TaskState
from lifecycle.store.schema import (
    CertificateRow,
    ErasurePartRow,
    ErasureRow,
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
    model_record,
    report_record,
    request_record,
    sample_record,
    task_record,
    version_record,
)
from lifecycle.store.engine import READ_ONLY, session_factory
from lifecycle.store.identity import IdKey
from lifecycle.store.writes import append_event, chunks, drop_unlearned, lock_model

class Ledger:
    """The ledger's tables; its request queue (claims, leases, commits) is ``queue``."""

    def __init__(self, engine: Engine, ids: IdKey | None = None, clock: Clock = utcnow) -> None:
        self.engine = engine
        self.ids = ids or IdKey()  # keys the digests of free text in the audit chain
        self.clock = clock
        self._sessions = session_factory(engine)
        self._reads = session_factory(engine.execution_options(**READ_ONLY))
        self.queue = Queue(self._sessions, clock)

    def _begin(self):
        return self._sessions.begin()

    def _read(self):
        """A transaction that only reads: on SQLite it takes no write lock, so
        status polls and reports never wait behind a long commit."""
        return self._reads.begin()

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
        encoder: rec.Encoder | None = None,
        device: str = "cpu",
        max_false_activation: float = 0.05,
    ) -> rec.Model:
        declared = encoder.to_dict() if encoder is not None else None
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
                encoder_digest=encoder.digest if encoder is not None else None,
                encoder={k: v for k, v in declared.items() if k != "digest"} if declared is not None else None,
                device=device,
                max_false_activation=max_false_activation,
                created_at=self.clock(),
                audit_seq=0,
                audit_head=None,
            )
            s.add(row)
            s.flush()
            # the encoder's declaration (digest included) is in the audit chain: it cannot be swapped unnoticed
            extra = {"encoder": declared, "device": device} if declared is not None else {}
            append_event(s, row.id, None, "model_created", strategy=strategy, config=config, keep_states=keep_states,
                   forgotten_probes=forgotten_probes, max_false_activation=max_false_activation, **extra)
            return model_record(row)

    def model(self, name: str) -> rec.Model | None:
        with self._read() as s:
            row = s.scalar(select(ModelRow).where(ModelRow.name == name))
            return model_record(row) if row else None

    def models(self) -> list[rec.Model]:
        with self._read() as s:
            return [model_record(r) for r in s.scalars(select(ModelRow).order_by(ModelRow.id))]

    def subject_salt(self, model_id: int) -> str | None:
        """The salt of a model from before keyed identifiers (None for every newer model)."""
        with self._read() as s:
            return s.scalar(select(ModelRow.subject_salt).where(ModelRow.id == model_id))

    def tasks(self, model_id: int) -> list[rec.Task]:
        with self._read() as s:
            rows = s.scalars(select(TaskRow).where(TaskRow.model_id == model_id).order_by(TaskRow.id))
            return [task_record(r) for r in rows]

    def task(self, model_id: int, name: str) -> rec.Task | None:
        with self._read() as s:
            row = s.scalar(select(TaskRow).where(TaskRow.model_id == model_id, TaskRow.name == name))
            return task_record(row) if row else None

    # ---- samples and tombstones ------------------------------------------

    def samples(self, model_id: int, sample_ids: Iterable[str]) -> dict[str, rec.Sample]:
        ids = list(sample_ids)
        out: dict[str, rec.Sample] = {}
        with self._read() as s:
            for chunk in chunks(ids, 500):
                q = (
                    select(SampleRow, TaskRow.name)
                    .join(TaskRow, TaskRow.id == SampleRow.task_id)
                    .where(SampleRow.model_id == model_id, SampleRow.sample_id.in_(chunk))
                )
                for row, task_name in s.execute(q):
                    out[row.sample_id] = sample_record(row, task_name)
        return out

    def tombstoned(self, model_id: int, sample_ids: Iterable[str]) -> set[str]:
        ids = list(sample_ids)
        found: set[str] = set()
        with self._read() as s:
            for chunk in chunks(ids, 500):
                q = select(TombstoneRow.sample_id).where(
                    TombstoneRow.model_id == model_id, TombstoneRow.sample_id.in_(chunk)
                )
                found.update(s.scalars(q))
        return found

    def tombstoned_content(self, model_id: int, content_digests: Iterable[str]) -> set[str]:
        """Which of these row fingerprints belong to forgotten samples."""
        digests = list(content_digests)
        found: set[str] = set()
        with self._read() as s:
            for chunk in chunks(digests, 500):
                found.update(s.scalars(select(TombstoneRow.content_digest).where(
                    TombstoneRow.model_id == model_id, TombstoneRow.content_digest.in_(chunk))))
        return found

    def tombstone_ids(self, model_id: int) -> frozenset[str]:
        """Every sample id the model has forgotten so far."""
        with self._read() as s:
            return _tombstone_ids(s, model_id)

    def subject_counts(self, model_id: int, subject_hash: str) -> dict[str, int]:
        """How many of a subject's samples are pending, active or tombstoned."""
        with self._read() as s:
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
            return _resolve_forget(s, model_id, target)

    def step_context(self, claim: rec.Claim) -> rec.StepContext:
        """What the claimed request's step needs from the ledger, read at once
        when the step begins: the version it starts from, the model's tasks,
        a learn's sample ids in data-file order, or the samples a forget's
        target resolves to now and every sample the model forgot before."""
        req, model_id = claim.request, claim.model.id
        with self._begin() as s:
            found = s.execute(select(ModelVersionRow).where(ModelVersionRow.model_id == model_id)
                              .order_by(ModelVersionRow.version.desc()).limit(1)).scalar()
            task_rows = s.scalars(select(TaskRow).where(TaskRow.model_id == model_id))
            tasks = {row.name: task_record(row) for row in task_rows}
            samples: list[rec.Sample] = []
            tombstones: frozenset[str] = frozenset()
            learn_ids: list[str] = []
            if req.kind == RequestKind.LEARN:
                # ids only: a learn may bring a million samples, and the step needs nothing else of them
                learn_ids = list(s.scalars(select(SampleRow.sample_id).where(SampleRow.learn_request_seq == req.seq)
                                           .order_by(SampleRow.data_row)))
            elif req.kind == RequestKind.FORGET:
                samples = _resolve_forget(s, model_id, req.target)
                tombstones = _tombstone_ids(s, model_id)
            base = version_record(found, claim.model.name) if found is not None else None
            return rec.StepContext(base=base, tasks=tasks, samples=samples, tombstones=tombstones,
                                   learn_ids=learn_ids)

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
            return request_record(row, name), row.payload_sha

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
        subject_hashes: Sequence[str | None] | None,
        content_digests: Sequence[str],
        idempotency_key: str | None,
        requested_by: str | None,
        reason: str | None,
        token_id: str | None = None,
    ) -> rec.Request:
        """Queue a learn whose data file (and probe set) are already stored.

        ``sample_ids``, ``labels``, ``subject_hashes`` (None: no subjects) and
        ``content_digests`` are in data-file row order: sequences, or numpy
        arrays (hex digests as ASCII bytes, ``b""`` for no subject; or raw
        digests, a (rows, 32) uint8 array), so that a million rows need no
        million Python objects. Everything that can be
        is computed before the transaction; in it the rows go in set-based
        (COPY on PostgreSQL, one executemany elsewhere), so the model lock
        (and SQLite's write lock) is held for the insert alone.
        """
        n = len(sample_ids)
        if len(labels) != n or len(content_digests) != n or (subject_hashes is not None and len(subject_hashes) != n):
            raise ValueError("sample_ids, labels, subject_hashes and content_digests must have one entry per row")
        order = _sample_order(sample_ids)
        fast = _all_hex(sample_ids) and _all_hex(content_digests) and (subject_hashes is None or _all_hex(subject_hashes))
        now = self.clock()
        with self._begin() as s:
            # Taking the model lock before the insert allocates seq makes seq
            # order commit order within a model: otherwise a request could
            # commit after a later-numbered one had already been claimed.
            locked = lock_model(s, model.id)
            task_row = s.scalar(select(TaskRow).where(TaskRow.model_id == model.id, TaskRow.name == task))
            new_task = task_row is None
            if task_row is None:
                task_row = TaskRow(model_id=model.id, name=task, state=TaskState.PENDING, classes=sorted(set(classes)),
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
                kind=RequestKind.LEARN,
                target={"task": task, "n_samples": n},
                payload_sha=payload_sha,
                payload_digest=payload_digest,
                idempotency_key=idempotency_key,
                requested_by=requested_by,
                reason=reason,
                received_at=now,
                due_at=None,
                status=RequestStatus.QUEUED,
                attempt=0,
            )
            s.add(row)
            s.flush()
            columns = ("model_id", "sample_id", "task_id", "subject_hash", "content_digest", "label",
                       "learn_request_seq", "status", "data_digest", "data_row")
            fixed = (model.id, task_row.id, row.seq, SampleStatus.PENDING.value, payload_digest)

            def sample_rows(start: int, stop: int):
                ids, contents = _texts(sample_ids, start, stop), _texts(content_digests, start, stop)
                subjects = _texts(subject_hashes, start, stop) if subject_hashes is not None else [None] * (stop - start)
                for i, (sid, subj, content, label) in enumerate(
                        zip(ids, subjects, contents, _ints(labels, start, stop)), start):
                    yield fixed[0], sid, fixed[1], subj, content, label, fixed[2], fixed[3], fixed[4], i

            _insert_rows(s, SampleRow.__table__, columns, sample_rows, n)
            append_event(s, model.id, row.id, "submitted", locked=locked, request_kind=RequestKind.LEARN, task=task,
                   n_samples=n, new_task=new_task, probe=probe_digest, payload=payload_digest,
                   samples=_samples_digest(sample_ids, subject_hashes, content_digests, labels, task_row.id, order,
                                           fast),
                   **_token(token_id), **_request_digests(row, self.ids))
            return request_record(row, model.name)

    def learn_conflicts(self, model_id: int, sample_ids: Sequence[str],
                        content_digests: Sequence[str]) -> tuple[set[str], set[str], set[str]]:
        """What stands in the way of a learn (``submit_learn``'s checks, a chunk of rows at a time):
        the sample ids that are tombstoned, those the model already holds, and the content digests
        that are tombstoned. One short transaction, one set-based query each, whatever the count."""
        with self._begin() as s:
            conn = s.connection()
            if conn.dialect.name == "postgresql":
                def found(table: str, column: str, values: Sequence[str]) -> set[str]:
                    # one JSON text parameter: no per-value work on either side of the wire
                    return set(s.scalars(text(f"SELECT {column} FROM {table} WHERE model_id = :m AND {column} = "
                                              "ANY(ARRAY(SELECT json_array_elements_text(CAST(:v AS json))))"),
                                         {"m": model_id, "v": json.dumps(list(values))}))
            elif conn.dialect.name == "sqlite":
                def found(table: str, column: str, values: Sequence[str]) -> set[str]:
                    return set(s.scalars(text(f"SELECT {column} FROM {table} WHERE model_id = :m AND {column} IN "
                                              "(SELECT value FROM json_each(:v))"),
                                         {"m": model_id, "v": json.dumps(list(values))}))
            else:
                def found(table: str, column: str, values: Sequence[str]) -> set[str]:
                    out: set[str] = set()
                    for chunk in chunks(values, 500):
                        out |= set(s.scalars(text(f"SELECT {column} FROM {table} WHERE model_id = :m AND {column} IN "
                                                  ":v").bindparams(bindparam("v", expanding=True)),
                                             {"m": model_id, "v": list(chunk)}))
                    return out
            return (found("tombstones", "sample_id", sample_ids), found("samples", "sample_id", sample_ids),
                    found("tombstones", "content_digest", content_digests))

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
        token_id: str | None = None,
    ) -> rec.Request:
        with self._begin() as s:
            locked = lock_model(s, model.id)  # before seq is allocated, as in submit_learn
            row = RequestRow(
                id=str(uuid.uuid4()),
                model_id=model.id,
                kind=RequestKind.FORGET,
                target=target,
                payload_sha=payload_sha,
                payload_digest=None,
                idempotency_key=idempotency_key,
                requested_by=requested_by,
                reason=reason,
                received_at=received_at,
                due_at=due_at,
                status=RequestStatus.QUEUED,
                attempt=0,
            )
            s.add(row)
            s.flush()
            append_event(s, model.id, row.id, "submitted", locked=locked, request_kind=RequestKind.FORGET,
                         target=target, due_at=due_at.isoformat(), **_token(token_id),
                         **_request_digests(row, self.ids))
            return request_record(row, model.name)

    def submit_retrain(self, model_id: int, *, units: Sequence[int], reason: str,
                       requested_by: str = "lifecycle") -> rec.Request | None:
        """Enqueue an internal ``retrain`` request (e.g. S3T shards left without
        a usable sequence), unless one is already queued for the model: that one
        retrains whatever needs it when it runs. It queues behind the model's
        other requests, so per-model order, leases and fencing apply to it."""
        with self._begin() as s:
            locked = lock_model(s, model_id)  # before seq is allocated, as in submit_learn
            queued = s.scalar(select(RequestRow.id).where(
                RequestRow.model_id == model_id, RequestRow.kind == RequestKind.RETRAIN,
                RequestRow.status == RequestStatus.QUEUED))
            if queued is not None:
                return None
            return _internal_request(s, self.ids, self.clock(), locked, RequestKind.RETRAIN,
                                     {"units": sorted(int(u) for u in units)}, requested_by, reason)

    def open_forget_overlapping(self, model_id: int, target: dict[str, Any]) -> str | None:
        """The id of a queued or running forget that names the same task or
        subject, or any of the same samples, if there is one."""
        with self._begin() as s:
            rows = s.scalars(
                select(RequestRow).where(
                    RequestRow.status.in_(OPEN),
                    RequestRow.model_id == model_id,
                    RequestRow.kind == RequestKind.FORGET,
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
            if row is None or row.status != RequestStatus.QUEUED:
                return None
            row.status, row.finished_at = RequestStatus.CANCELLED, self.clock()
            freed, dropped = drop_unlearned(s, row)
            append_event(s, row.model_id, row.id, "cancelled", **dropped)
            name = s.scalar(select(ModelRow.name).where(ModelRow.id == row.model_id))
            return request_record(row, name), freed

    def extend_deadline(self, request_id: str, until: dt.datetime, reason: str, by: str | None) -> rec.Request | None:
        """Move an open forget's due date later; None when the request is not open."""
        with self._begin() as s:
            row = s.scalar(select(RequestRow).where(RequestRow.id == request_id).with_for_update())
            if row is None or row.status not in OPEN:
                return None
            before = row.due_at
            row.due_at = until
            append_event(s, row.model_id, row.id, "deadline_extended", previous=before.isoformat(),
                   due_at=until.isoformat(), reason=reason, by=by)
            name = s.scalar(select(ModelRow.name).where(ModelRow.id == row.model_id))
            return request_record(row, name)

    def redact(self, request_id: str, fields: Sequence[str], why: str, by: str | None) -> rec.Request | None:
        """Erase free-text fields of a request; the chain keeps their digests and
        records the redaction, so verification still holds. None when unknown."""
        with self._begin() as s:
            row = s.scalar(select(RequestRow).where(RequestRow.id == request_id).with_for_update())
            if row is None:
                return None
            for name in fields:
                setattr(row, name, None)
            append_event(s, row.model_id, row.id, "redacted", fields=sorted(fields), why=why, by=by)
            return request_record(row, s.scalar(select(ModelRow.name).where(ModelRow.id == row.model_id)))

    # ---- reading requests -------------------------------------------------

    def request(self, request_id: str) -> rec.Request | None:
        with self._read() as s:
            q = (
                select(RequestRow, ModelRow.name)
                .join(ModelRow, ModelRow.id == RequestRow.model_id)
                .where(RequestRow.id == request_id)
            )
            found = s.execute(q).first()
            return request_record(*found) if found else None

    def request_ids_starting(self, prefix: str, limit: int) -> list[str]:
        """Up to ``limit`` request ids that start with ``prefix`` (the unique id index serves it)."""
        with self._read() as s:
            return list(s.scalars(select(RequestRow.id).where(RequestRow.id >= prefix, RequestRow.id < prefix + "~")
                                  .order_by(RequestRow.id).limit(limit)))

    def requests(self, model_id: int | None = None, statuses: Iterable[str] | None = None) -> list[rec.Request]:
        with self._read() as s:
            q = select(RequestRow, ModelRow.name).join(ModelRow, ModelRow.id == RequestRow.model_id)
            if model_id is not None:
                q = q.where(RequestRow.model_id == model_id)
            if statuses is not None:
                q = q.where(RequestRow.status.in_(list(statuses)))
            return [request_record(row, name) for row, name in s.execute(q.order_by(RequestRow.seq))]

    def audit_head(self, model_id: int) -> tuple[int, str | None]:
        with self._read() as s:
            row = s.get(ModelRow, model_id)
            return row.audit_seq, row.audit_head

    def chain_link(self, model_name: str, seq: int) -> rec.ChainLink | None:
        """The event at ``seq`` of a model's audit chain, as far as an anchor needs it."""
        with self._read() as s:
            found = s.execute(
                select(EventRow.request_id, EventRow.kind, EventRow.hash)
                .join(ModelRow, ModelRow.id == EventRow.model_id)
                .where(ModelRow.name == model_name, EventRow.seq == seq)
            ).first()
            return rec.ChainLink(model_name, seq, *found) if found else None

    def payload_digest(self, request_id: str) -> str | None:
        with self._read() as s:
            return s.scalar(select(RequestRow.payload_digest).where(RequestRow.id == request_id))

    def submit_repair(self, model_id: int, target: dict[str, Any], requested_by: str | None,
                      reason: str) -> rec.Request:
        """Queue a repair; it is claimed ahead of the model's other requests while the model is quarantined."""
        with self._begin() as s:
            return _internal_request(s, self.ids, self.clock(), lock_model(s, model_id), RequestKind.REPAIR, target,
                                     requested_by, reason)

    def open_repair(self, model_id: int) -> str | None:
        with self._begin() as s:
            return s.scalar(select(RequestRow.id).where(
                RequestRow.model_id == model_id, RequestRow.kind == RequestKind.REPAIR, RequestRow.status.in_(OPEN)))

    def data_files(self, model_id: int) -> dict[str, list[rec.Sample]]:
        """The data files the model's active samples live in, with those samples."""
        out: dict[str, list[rec.Sample]] = {}
        with self._read() as s:
            q = (select(SampleRow, TaskRow.name).join(TaskRow, TaskRow.id == SampleRow.task_id)
                 .where(SampleRow.model_id == model_id, SampleRow.status == SampleStatus.ACTIVE)
                 .order_by(SampleRow.task_id, SampleRow.learn_request_seq, SampleRow.data_row))
            for row, name in s.execute(q):
                out.setdefault(row.data_digest, []).append(sample_record(row, name))
        return out

    # ---- finishing ----------------------------------------------------------

    def latest_version(self, model_id: int) -> rec.ModelVersion | None:
        with self._read() as s:
            q = (
                select(ModelVersionRow, ModelRow.name)
                .join(ModelRow, ModelRow.id == ModelVersionRow.model_id)
                .where(ModelVersionRow.model_id == model_id)
                .order_by(ModelVersionRow.version.desc())
                .limit(1)
            )
            found = s.execute(q).first()
            return version_record(*found) if found else None

    def versions(self, model_id: int) -> list[rec.ModelVersion]:
        with self._read() as s:
            q = (
                select(ModelVersionRow, ModelRow.name)
                .join(ModelRow, ModelRow.id == ModelVersionRow.model_id)
                .where(ModelVersionRow.model_id == model_id)
                .order_by(ModelVersionRow.version)
            )
            return [version_record(*r) for r in s.execute(q)]

    # ---- purging ---------------------------------------------------------------

    def take_purge(self, model_id: int, owner: str, lease_seconds: float) -> bool:
        """Take the model's purge lease: at most one purge per model runs at a time."""
        now = self.clock()
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
                .where(SampleRow.status == SampleStatus.FORGOTTEN, SampleRow.data_digest.is_not(None),
                       SampleRow.model_id == model_id)
                .order_by(SampleRow.data_digest, SampleRow.data_row)
            ).all()
            cutoff = s.scalar(select(func.max(RequestRow.result_version)).where(
                RequestRow.model_id == model_id, RequestRow.status == RequestStatus.APPLIED,
                RequestRow.kind == RequestKind.FORGET))
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
                    .where(TaskRow.model_id == model_id, TaskRow.state == TaskState.FORGOTTEN,
                           TaskRow.probe_digest.is_not(None))
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
            locked = lock_model(s, plan.model_id)
            ids = [pk for pk, _, _ in plan.rows]
            for chunk in chunks(ids, 1000):
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
            append_event(s, plan.model_id, None, "purged", locked=locked, rows=len(plan.rows),
                         files=len({d for _, d, _ in plan.rows}), versions=sorted(v for v, _ in plan.states),
                         probes=sorted(n for n, _ in plan.probes))
            return sorted(set(touched) - _referenced(s, touched))

    def unreferenced(self, digests: Iterable[str]) -> list[str]:
        """Those of ``digests`` that no sample, open request, task or kept model state points at."""
        digests = sorted(set(d for d in digests if d))
        with self._begin() as s:
            return sorted(set(digests) - _referenced(s, digests))

    def artifact_roles(self) -> dict[str, str]:
        """Every artifact the ledger points at, with its role: data, probe or state."""
        with self._read() as s:
            roles = {d: "state" for d in s.scalars(select(ModelVersionRow.artifact_digest)
                                                   .where(ModelVersionRow.state_purged.is_(False)))}
            roles |= {d: "probe" for d in s.scalars(select(TaskRow.probe_digest)
                                                   .where(TaskRow.probe_digest.is_not(None)))}
            roles |= {d: "data" for d in s.scalars(select(SampleRow.data_digest)
                                                  .where(SampleRow.data_digest.is_not(None)).distinct())}
            roles |= {d: "data" for d in s.scalars(select(RequestRow.payload_digest).where(
                RequestRow.status.in_(OPEN), RequestRow.payload_digest.is_not(None)))}
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
                append_event(s, model_id, None, "artifact_resealed", old=old, new=new)

    def referenced_digests(self) -> set[str]:
        """Every artifact the ledger still points at (for the sweep)."""
        with self._begin() as s:
            found = set(s.scalars(select(SampleRow.data_digest).where(SampleRow.data_digest.is_not(None))
                                  .distinct()))
            found |= set(s.scalars(select(TaskRow.probe_digest).where(TaskRow.probe_digest.is_not(None))))
            found |= set(s.scalars(select(ModelVersionRow.artifact_digest)
                                   .where(ModelVersionRow.state_purged.is_(False))))
            found |= set(s.scalars(select(RequestRow.payload_digest).where(
                RequestRow.status.in_(OPEN), RequestRow.payload_digest.is_not(None))))
            found |= set(s.scalars(select(ModelRow.encoder_digest).where(ModelRow.encoder_digest.is_not(None))))
            return found

    # ---- reports -------------------------------------------------------------

    def request_counts(self) -> list[tuple[str, str, int]]:
        """(kind, status, count) over all models."""
        with self._read() as s:
            q = select(RequestRow.kind, RequestRow.status, func.count()).group_by(RequestRow.kind,
                                                                                   RequestRow.status)
            return [(k, st, n) for k, st, n in s.execute(q)]

    def oldest_open_forget(self) -> tuple[dt.datetime, dt.datetime] | None:
        """(received_at, due_at) of the open forget received first."""
        with self._read() as s:
            q = (select(RequestRow.received_at, RequestRow.due_at)
                 .where(RequestRow.kind == RequestKind.FORGET, RequestRow.status.in_(OPEN))
                 .order_by(RequestRow.received_at).limit(1))
            found = s.execute(q).first()
            return (found[0], found[1]) if found else None

    def overdue_forgets(self, now: dt.datetime) -> int:
        with self._read() as s:
            return s.scalar(select(func.count()).select_from(RequestRow).where(
                RequestRow.kind == RequestKind.FORGET, RequestRow.status.in_(OPEN), RequestRow.due_at < now))

    def finding_counts(self) -> list[tuple[str, int]]:
        """(strategy, number of relapse findings)."""
        with self._read() as s:
            q = (select(ModelRow.strategy, func.count()).select_from(RelapseFindingRow)
                 .join(ModelRow, ModelRow.id == RelapseFindingRow.model_id).group_by(ModelRow.strategy))
            return [(st, n) for st, n in s.execute(q)]


    def evaluations(self, model_id: int) -> list[rec.Evaluation]:
        with self._read() as s:
            q = (
                select(EvaluationRow, TaskRow.name)
                .join(TaskRow, TaskRow.id == EvaluationRow.task_id)
                .where(EvaluationRow.model_id == model_id)
                .order_by(EvaluationRow.version, TaskRow.id)
            )
            return [rec.Evaluation(r.version, name, rec.Role(r.role), r.accuracy, r.chance, r.n)
                    for r, name in s.execute(q)]

    def findings(self, model_id: int | None = None) -> list[rec.RelapseFinding]:
        with self._read() as s:
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
            row = ReportRow(model_id=model_id, model_version=model_version, written_at=self.clock(),
                            html_path=html_path, html_sha256=html_sha256, json_sha256=json_sha256)
            s.add(row)
            s.flush()
            append_event(s, model_id, None, "report_written", report=row.id, version=model_version,
                   html_sha256=html_sha256, json_sha256=json_sha256)
            return report_record(row, s.get(ModelRow, model_id).name)

    def reports(self, model_id: int | None = None) -> list[rec.Report]:
        with self._read() as s:
            q = select(ReportRow, ModelRow.name).join(ModelRow, ModelRow.id == ReportRow.model_id)
            if model_id is not None:
                q = q.where(ReportRow.model_id == model_id)
            return [report_record(row, name) for row, name in s.execute(q.order_by(ReportRow.id))]

    def certificate(self, request_id: str) -> dict[str, Any] | None:
        with self._read() as s:
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
        with self._read() as s:
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
            troubled = {p.model for p in problems}
            for found in ledger_audit.erasure_problems(_erasure_rows(s)).values():
                if found.model not in troubled:
                    problems.append(found)
        return checked, problems

    def events(self, model_id: int | None = None, request_id: str | None = None) -> list[rec.Event]:
        with self._read() as s:
            q = select(EventRow, ModelRow.name).join(ModelRow, ModelRow.id == EventRow.model_id)
            if model_id is not None:
                q = q.where(EventRow.model_id == model_id)
            if request_id is not None:
                q = q.where(EventRow.request_id == request_id)
            return [
                rec.Event(r.id, name, r.request_id, r.kind, dict(r.detail), r.at)
                for r, name in s.execute(q.order_by(EventRow.id))
            ]


def _referenced(s: Session, digests: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in chunks(list(digests), 500):
        found |= set(s.scalars(select(SampleRow.data_digest).where(SampleRow.data_digest.in_(chunk)).distinct()))
        found |= set(s.scalars(select(TaskRow.probe_digest).where(TaskRow.probe_digest.in_(chunk))))
        found |= set(s.scalars(select(ModelVersionRow.artifact_digest).where(
            ModelVersionRow.artifact_digest.in_(chunk), ModelVersionRow.state_purged.is_(False))))
        found |= set(s.scalars(select(RequestRow.payload_digest).where(
            RequestRow.status.in_(OPEN), RequestRow.payload_digest.in_(chunk))))
        found |= set(s.scalars(select(ModelRow.encoder_digest).where(ModelRow.encoder_digest.in_(chunk))))
    return found


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
        erasure_parts=rows(ErasurePartRow, "erasure_id", "outcome", "request_id", "held", "tombstoned"),
    )


def _erasure_rows(s: Session) -> ledger_audit.ErasureRows:
    """Every erasure, its parts, their requests and certificates, and the models, for the audit."""

    def rows(*columns, where=None):
        q = select(*columns)
        return [dict(r._mapping) for r in s.execute(q if where is None else q.where(where))]

    parts = rows(ErasurePartRow.erasure_id, ErasurePartRow.model_id, ErasurePartRow.outcome,
                 ErasurePartRow.request_id)
    asked = select(ErasurePartRow.request_id).where(ErasurePartRow.request_id.is_not(None))
    return ledger_audit.ErasureRows(
        erasures=rows(ErasureRow.id, ErasureRow.subject_hash, ErasureRow.status, ErasureRow.received_at,
                      ErasureRow.due_at),
        parts=parts,
        requests={r["id"]: r for r in rows(RequestRow.id, RequestRow.status, RequestRow.target,
                                           RequestRow.received_at, RequestRow.due_at,
                                           where=RequestRow.id.in_(asked))},
        certified=set(s.scalars(select(CertificateRow.request_id).where(CertificateRow.request_id.in_(asked)))),
        models={m.id: (m.name, m.subject_salt) for m in s.execute(select(ModelRow.id, ModelRow.name,
                                                                        ModelRow.subject_salt))},
    )


def _internal_request(s: Session, ids: IdKey, now: dt.datetime, locked: ModelRow, kind: RequestKind,
                      target: dict[str, Any], requested_by: str | None, reason: str) -> rec.Request:
    """Queue a request the system files itself (retrain, repair); the model row is already locked."""
    row = RequestRow(
        id=str(uuid.uuid4()), model_id=locked.id, kind=kind, target=target,
        payload_sha=hashlib.sha256(json.dumps(target, sort_keys=True).encode()).hexdigest(),
        payload_digest=None, idempotency_key=None, requested_by=requested_by, reason=reason,
        received_at=now, due_at=None, status=RequestStatus.QUEUED, attempt=0,
    )
    s.add(row)
    s.flush()
    append_event(s, locked.id, row.id, "submitted", locked=locked, request_kind=kind, target=target, reason=reason,
           **_request_digests(row, ids))
    return request_record(row, locked.name)


def _token(token_id: str | None) -> dict[str, str]:
    """The API token that submitted a request over HTTP, for its ``submitted`` event (its public id only)."""
    return {} if token_id is None else {"token": token_id}


def _request_digests(row: RequestRow, ids: IdKey) -> dict[str, Any]:
    return {"request": row_digests.request(row),
            "text": {"requested_by": ids.text(row.requested_by), "reason": ids.text(row.reason)}}


def _tombstone_ids(s: Session, model_id: int) -> frozenset[str]:
    return frozenset(s.scalars(select(TombstoneRow.sample_id).where(TombstoneRow.model_id == model_id)))


def _resolve_forget(s: Session, model_id: int, target: dict[str, Any]) -> list[rec.Sample]:
    q = (
        select(SampleRow, TaskRow.name)
        .join(TaskRow, TaskRow.id == SampleRow.task_id)
        .where(SampleRow.model_id == model_id, SampleRow.status == SampleStatus.ACTIVE)
    )
    if "task" in target:
        q = q.where(TaskRow.name == target["task"])
    elif "subject_hash" in target:
        q = q.where(SampleRow.subject_hash == target["subject_hash"])
    elif "samples" in target:
        q = q.where(SampleRow.sample_id.in_(target["samples"]))
    else:
        raise ValueError(f"unknown forget target {target!r}")
    return [sample_record(row, name) for row, name in s.execute(q.order_by(SampleRow.id))]


# ---- a learn's sample rows, set-based --------------------------------------------

_INSERT_CHUNK = 10_000
_HEX = frozenset(b"0123456789abcdef")


def _raw(values) -> bool:
    """A column of raw 32-byte digests: a (rows, 32) uint8 array, written out as hex."""
    return isinstance(values, np.ndarray) and values.dtype == np.uint8 and values.ndim == 2 and values.shape[1] == 32


def _hex(values, at) -> list[bytes]:
    """The digests at ``at`` (a slice or positions) of a raw or an ASCII-bytes column, as hex bytes."""
    part = values[at]
    if _raw(values):
        return np.frombuffer(binascii.hexlify(np.ascontiguousarray(part).tobytes()), "S64").tolist()
    return part.tolist()


def _texts(values, start: int, stop: int) -> list[str | None]:
    """``values[start:stop]`` as str (None for a missing subject), from a sequence or a numpy array."""
    if _raw(values):
        return [v.decode() for v in _hex(values, slice(start, stop))]
    part = values[start:stop]
    if isinstance(part, np.ndarray):
        if part.dtype.kind == "S":
            return [v or None for v in part.astype("U").tolist()]
        return part.tolist()
    return list(part)


def _ints(values, start: int, stop: int) -> list[int]:
    part = values[start:stop]
    return [int(v) for v in part] if not isinstance(part, np.ndarray) else part.astype(np.int64).tolist()


def _insert_rows(s: Session, table, columns: Sequence[str], rows, n: int) -> None:
    """Insert ``rows(start, stop)`` for ``0 <= start < n`` in one statement stream: COPY on
    PostgreSQL (psycopg), one executemany per chunk elsewhere; no ORM object per row."""
    conn = s.connection()
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        from psycopg import IntegrityError as DriverIntegrityError

        raw = conn.connection.driver_connection
        statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
        try:
            with raw.cursor() as cur, cur.copy(statement) as copy:
                for start in range(0, n, _INSERT_CHUNK):
                    for r in rows(start, min(n, start + _INSERT_CHUNK)):
                        copy.write_row(r)
        except DriverIntegrityError as exc:
            # COPY runs below SQLAlchemy: raise what its inserts raise, so callers catch one error
            # (e.g. a concurrent learn that took the same sample ids first)
            raise IntegrityError(statement, None, exc) from None
        return
    if conn.dialect.name == "sqlite":
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        for start in range(0, n, _INSERT_CHUNK):
            conn.exec_driver_sql(sql, list(rows(start, min(n, start + _INSERT_CHUNK))))
        return
    for start in range(0, n, _INSERT_CHUNK):
        conn.execute(insert(table), [dict(zip(columns, r)) for r in rows(start, min(n, start + _INSERT_CHUNK))])


def _sample_order(sample_ids) -> np.ndarray:
    """Row positions sorted by sample id (ids are unique within a model), as the audit digest sorts them."""
    if _raw(sample_ids):
        # raw bytes sort as their hex does; as four big-endian words, the last the primary key of lexsort
        words = np.ascontiguousarray(sample_ids).view(">u8")
        return np.lexsort(words.T[::-1])
    keys = sample_ids if isinstance(sample_ids, np.ndarray) else np.asarray(list(sample_ids), dtype=str)
    return np.argsort(keys, kind="stable")


def _all_hex(values) -> bool:
    """An array of ASCII hex digests (NUL padding allowed), or of raw ones: JSON writes them as they are."""
    if _raw(values):
        return True
    if not isinstance(values, np.ndarray) or values.dtype.kind != "S":
        return False
    allowed = np.zeros(256, bool)
    allowed[[*_HEX, 0]] = True
    step = max(1, (1 << 20) // max(1, values.dtype.itemsize))
    # a slice at a time: a lookup over the whole column would cost as many bytes as it holds
    return all(allowed[np.frombuffer(np.ascontiguousarray(values[start:start + step]).tobytes(), np.uint8)].all()
               for start in range(0, len(values), step))


def _samples_digest(sample_ids, subject_hashes, content_digests, labels, task_id: int, order: np.ndarray,
                    fast: bool):
    """``row_digests.samples`` of the rows a learn inserts, computed a chunk at a time from the
    columns (the same count and digest: the items sorted by sample id, serialised as JSON).
    ``fast``: every digest column is an array of hex digests (``_all_hex``)."""
    n = len(order)
    h = hashlib.sha256(b"[")
    for start in range(0, n, _INSERT_CHUNK):
        at = order[start:start + _INSERT_CHUNK]
        if start:
            h.update(b",")
        labs = np.asarray(labels)[at].astype(np.int64).tolist() if isinstance(labels, np.ndarray) else \
            [int(labels[i]) for i in at]
        if fast:
            subjects = [b"null"] * len(at) if subject_hashes is None else \
                [b'"' + v + b'"' if v else b"null" for v in subject_hashes[at].tolist()]
            h.update(b",".join(b'["%s",%s,"%s",%d,%d,%d]' % item for item in zip(
                _hex(sample_ids, at), subjects, _hex(content_digests, at), labs, at.tolist(), [task_id] * len(at))))
        else:
            items = [[_texts(sample_ids, i, i + 1)[0],
                      None if subject_hashes is None else _texts(subject_hashes, i, i + 1)[0],
                      _texts(content_digests, i, i + 1)[0], label, i, task_id]
                     for i, label in zip(at.tolist(), labs)]
            h.update(json.dumps(items, sort_keys=True, separators=(",", ":"))[1:-1].encode())
    h.update(b"]")
    return {"count": n, "digest": h.hexdigest()}
