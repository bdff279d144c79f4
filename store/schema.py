"""SQLAlchemy tables of the ledger.

Rows never leave ``store``: repository functions turn them into the plain
dataclasses of ``store.records``.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from sqlalchemy import (
    CheckConstraint,
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from lifecycle.store import records as rec

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC in Python, naive UTC in the database (SQLite has no zones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use UTC-aware ones")
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=dt.timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def one_of(column: str, values: type[StrEnum] | tuple[str, ...], table: str) -> CheckConstraint:
    """A CHECK that ``column`` holds one of ``values``: the database refuses a
    status or kind the code does not know, whoever writes the row."""
    allowed = ", ".join(f"'{v}'" for v in (tuple(m.value for m in values) if isinstance(values, type) else values))
    return CheckConstraint(f"{column} IN ({allowed})", name=f"ck_{table}_{column}")


class ModelRow(Base):
    __tablename__ = "models"
    __table_args__ = (one_of("forgotten_probes", ("keep", "purge"), "models"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    strategy: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict] = mapped_column(JSON)
    n_features: Mapped[int] = mapped_column(Integer)
    n_classes: Mapped[int] = mapped_column(Integer)
    relapse_threshold: Mapped[float] = mapped_column(Float)
    forget_due_days: Mapped[float] = mapped_column(Float)
    # ledgers from before keyed identifiers hashed subjects with this salt; unused since
    subject_salt: Mapped[str | None] = mapped_column(String(64))
    # model states kept besides the latest (older ones are erased), and what
    # happens to a forgotten task's probe set: "keep" (relapse watching) | "purge"
    keep_states: Mapped[int] = mapped_column(Integer, default=3)
    forgotten_probes: Mapped[str] = mapped_column(String(8), default="keep")
    # at most one purge per model at a time: whoever holds this lease
    purge_owner: Mapped[str | None] = mapped_column(String(200))
    purge_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # why the model is quarantined (its stored state or data is unreadable); only repairs are claimed then
    quarantine: Mapped[str | None] = mapped_column(Text)
    # a frozen feature extractor in front of the strategy: the sha256 of its stored file (the sweep keeps
    # what this names) and the rest of its declaration (records.Encoder); None without one
    encoder_digest: Mapped[str | None] = mapped_column(String(64))
    encoder: Mapped[dict | None] = mapped_column(JSON)
    # where the encoder runs ("cpu", "cuda", "cuda:1")
    device: Mapped[str] = mapped_column(String(32), default="cpu")
    # gated strategies: the share of a retained task's probes the forget gate may fire on before it is a finding
    max_false_activation: Mapped[float] = mapped_column(Float, default=0.05)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # head of the audit chain over this model's events (see store.audit)
    audit_seq: Mapped[int] = mapped_column(Integer, default=0)
    audit_head: Mapped[str | None] = mapped_column(String(64))


class TaskRow(Base):
    __tablename__ = "tasks"
    __table_args__ = (UniqueConstraint("model_id", "name"), one_of("state", rec.TaskState, "tasks"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    name: Mapped[str] = mapped_column(String(200))
    # pending: its first learn is queued; then learned | forgotten | relearned
    state: Mapped[str] = mapped_column(String(16))
    classes: Mapped[list] = mapped_column(JSON)
    probe_digest: Mapped[str | None] = mapped_column(String(64))
    forgotten_at_version: Mapped[int | None] = mapped_column(Integer)
    acc_at_forget: Mapped[float | None] = mapped_column(Float)
    peak_since_forget: Mapped[float | None] = mapped_column(Float)


class SampleRow(Base):
    __tablename__ = "samples"
    __table_args__ = (
        one_of("status", rec.SampleStatus, "samples"),
        UniqueConstraint("model_id", "sample_id"),
        Index("ix_samples_subject", "model_id", "subject_hash"),
        Index("ix_samples_task", "task_id"),
        # the commit of a learn activates (or, when it fails, frees) the samples it brought
        Index("ix_samples_learn_request", "learn_request_seq"),
        # a purge finds forgotten samples that still have data, and whether a data file is still used
        Index("ix_samples_unpurged", "status", "data_digest"),
        Index("ix_samples_data", "data_digest"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    # keyed digests (store.identity), never the caller's identifiers
    sample_id: Mapped[str] = mapped_column(String(200))
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    subject_hash: Mapped[str | None] = mapped_column(String(64))
    content_digest: Mapped[str | None] = mapped_column(String(64))
    label: Mapped[int] = mapped_column(Integer)
    learn_request_seq: Mapped[int] = mapped_column(BigInteger)
    # pending (its learn is queued) | active | forgotten
    status: Mapped[str] = mapped_column(String(16))
    # where its (x, y) lives until purged: an artifact and a row in it
    data_digest: Mapped[str | None] = mapped_column(String(64))
    data_row: Mapped[int | None] = mapped_column(Integer)


class RequestRow(Base):
    __tablename__ = "requests"
    __table_args__ = (
        one_of("kind", rec.RequestKind, "requests"),
        one_of("status", rec.RequestStatus, "requests"),
        UniqueConstraint("model_id", "idempotency_key"),
        Index("ix_requests_status_model", "status", "model_id"),
        # a claim reads each model's oldest queued request and whether one is running
        Index("ix_requests_model_status_seq", "model_id", "status", "seq"),
        # a purge reads the version of the model's latest applied forget
        Index("ix_requests_forget_versions", "model_id", "kind", "status", "result_version"),
    )

    # seq orders the ledger; id is what users see
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    kind: Mapped[str] = mapped_column(String(16))  # learn | forget
    target: Mapped[dict] = mapped_column(JSON)
    payload_sha: Mapped[str] = mapped_column(String(64))
    payload_digest: Mapped[str | None] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    requested_by: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    step_seconds: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    result_version: Mapped[int | None] = mapped_column(Integer)


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "version"),
        # a purge finds the states still kept, and whether an artifact is one of them
        Index("ix_model_versions_kept", "model_id", "state_purged", "version"),
        Index("ix_model_versions_artifact", "artifact_digest"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    version: Mapped[int] = mapped_column(Integer)
    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id"), unique=True)
    artifact_digest: Mapped[str] = mapped_column(String(64))
    # set when a later forget deleted this state (it was trained on forgotten data)
    state_purged: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class EvaluationRow(Base):
    __tablename__ = "evaluations"
    __table_args__ = (UniqueConstraint("model_id", "version", "task_id"), one_of("role", rec.Role, "evaluations"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    version: Mapped[int] = mapped_column(Integer)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    role: Mapped[str] = mapped_column(String(16))  # retained | forgotten | control
    accuracy: Mapped[float] = mapped_column(Float)
    chance: Mapped[float] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)


class RelapseFindingRow(Base):
    __tablename__ = "relapse_findings"
    __table_args__ = (Index("ix_relapse_findings_model", "model_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    version: Mapped[int] = mapped_column(Integer)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    forgotten_at_version: Mapped[int] = mapped_column(Integer)
    acc_at_forget: Mapped[float] = mapped_column(Float)
    accuracy: Mapped[float] = mapped_column(Float)
    chance: Mapped[float] = mapped_column(Float)
    relapse: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    peak_since_forget: Mapped[float] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class TombstoneRow(Base):
    __tablename__ = "tombstones"
    __table_args__ = (
        UniqueConstraint("model_id", "sample_id"),
        Index("ix_tombstones_subject", "model_id", "subject_hash"),
        Index("ix_tombstones_content", "model_id", "content_digest"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    sample_id: Mapped[str] = mapped_column(String(200))
    subject_hash: Mapped[str | None] = mapped_column(String(64))
    content_digest: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class CertificateRow(Base):
    __tablename__ = "certificates"
    __table_args__ = (Index("ix_certificates_model", "model_id"),)  # an audit reads them per model

    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id"), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    body: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class EventRow(Base):
    """Append-only audit trail: one row per state transition."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_model", "model_id", "id"), UniqueConstraint("model_id", "seq"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    request_id: Mapped[str | None] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict] = mapped_column(JSON)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    seq: Mapped[int] = mapped_column(Integer)
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class ReportRow(Base):
    """A relapse report the service wrote: where, when, and the digests of its files."""

    __tablename__ = "reports"
    __table_args__ = (Index("ix_reports_model", "model_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    model_version: Mapped[int] = mapped_column(Integer)
    written_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    html_path: Mapped[str] = mapped_column(String(1000))
    html_sha256: Mapped[str] = mapped_column(String(64))
    json_sha256: Mapped[str] = mapped_column(String(64))


# ---- rows to records: what leaves the store is a plain dataclass, never a row ----


def model_record(row: ModelRow) -> rec.Model:
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
        encoder=rec.Encoder.of({**row.encoder, "digest": row.encoder_digest}) if row.encoder_digest else None,
        device=row.device,
        max_false_activation=row.max_false_activation,
    )


def task_record(row: TaskRow) -> rec.Task:
    return rec.Task(
        id=row.id,
        model_id=row.model_id,
        name=row.name,
        state=rec.TaskState(row.state),
        classes=tuple(row.classes),
        probe_digest=row.probe_digest,
        forgotten_at_version=row.forgotten_at_version,
        acc_at_forget=row.acc_at_forget,
        peak_since_forget=row.peak_since_forget,
    )


def request_record(row: RequestRow, model_name: str) -> rec.Request:
    return rec.Request(
        id=row.id,
        seq=row.seq,
        model=model_name,
        kind=rec.RequestKind(row.kind),
        target=dict(row.target),
        status=rec.RequestStatus(row.status),
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


def sample_record(row: SampleRow, task_name: str) -> rec.Sample:
    return rec.Sample(
        sample_id=row.sample_id,
        task=task_name,
        label=row.label,
        subject_hash=row.subject_hash,
        status=rec.SampleStatus(row.status),
        data_digest=row.data_digest,
        data_row=row.data_row,
    )


def report_record(row: ReportRow, model: str) -> rec.Report:
    return rec.Report(row.id, model, row.model_version, row.written_at, row.html_path, row.html_sha256,
                      row.json_sha256)


def version_record(row: ModelVersionRow, model_name: str) -> rec.ModelVersion:
    return rec.ModelVersion(model_name, row.version, row.request_id, row.artifact_digest, row.state_purged,
                            row.created_at)


# ---- person-level erasures and API tokens (migration 0010) ----


class ErasureRow(Base):
    """A person's erasure: one request above the per-model forgets it fanned out into."""

    __tablename__ = "erasures"
    __table_args__ = (
        one_of("status", ("pending", "in_progress", "completed", "failed", "cancelled"), "erasures"),
        Index("ix_erasures_status_due", "status", "due_at"),
        Index("ix_erasures_subject", "subject_hash"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # the subject's keyed digest (store.identity), never the subject itself
    subject_hash: Mapped[str] = mapped_column(String(64))
    # a caller's own id for the request (OpenDSR subject_request_id): a repeat returns the first
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    payload_sha: Mapped[str] = mapped_column(String(64))
    requested_by: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    # the public id of the API token that submitted it (api_tokens.id); None from the Python API or CLI
    token_id: Mapped[str | None] = mapped_column(String(32))
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # where a status change is announced (OpenDSR status_callback_urls)
    callbacks: Mapped[list] = mapped_column(JSON, default=list)


class ErasurePartRow(Base):
    """What one model does for an erasure: the forget it queued (or joined), or that it holds nothing."""

    __tablename__ = "erasure_parts"
    __table_args__ = (
        UniqueConstraint("erasure_id", "model_id"),
        one_of("outcome", ("forget", "joined", "none", "already_forgotten"), "erasure_parts"),
        Index("ix_erasure_parts_request", "request_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    erasure_id: Mapped[str] = mapped_column(ForeignKey("erasures.id"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    outcome: Mapped[str] = mapped_column(String(20))
    request_id: Mapped[str | None] = mapped_column(ForeignKey("requests.id"))
    # the subject's samples the model held when the erasure arrived (pending + active, and tombstoned)
    held: Mapped[int] = mapped_column(Integer, default=0)
    tombstoned: Mapped[int] = mapped_column(Integer, default=0)


class ApiTokenRow(Base):
    """An HTTP API token: only the SHA-256 of the secret is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str | None] = mapped_column(String(200))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


# ---- status callbacks of erasures (migration 0011) ----


class CallbackOutboxRow(Base):
    """One status callback to send: written in the transaction of the status change it announces."""

    __tablename__ = "callback_outbox"
    __table_args__ = (
        one_of("state", rec.DeliveryState, "callback_outbox"),
        # a deliverer reads the due rows; a row waits for the earlier ones of its erasure and URL
        Index("ix_callback_outbox_due", "state", "next_attempt_at"),
        Index("ix_callback_outbox_erasure", "erasure_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    erasure_id: Mapped[str] = mapped_column(ForeignKey("erasures.id"))
    url: Mapped[str] = mapped_column(Text)
    # the exact JSON text sent (ASCII), so a retry sends, and is signed over, the same bytes
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # when it may be tried next; a claim moves it to the claim's expiry, so a deliverer that dies holding it
    # gives it back by never recording
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16))
    claimed_by: Mapped[str | None] = mapped_column(String(36))
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class CallbackAttemptRow(Base):
    """One try at delivering a callback, as it ended."""

    __tablename__ = "callback_attempts"
    __table_args__ = (Index("ix_callback_attempts_outbox", "outbox_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    outbox_id: Mapped[int] = mapped_column(ForeignKey("callback_outbox.id"))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    http_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    ok: Mapped[bool] = mapped_column(Boolean)
