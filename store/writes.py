"""What every write transaction shares: locking a model row, appending to
its audit chain, and dropping a learn that ended without being applied."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session

from lifecycle.store import audit
from lifecycle.store.clock import utcnow
from lifecycle.store.records import RequestKind, SampleStatus, TaskState
from lifecycle.store.schema import EventRow, ModelRow, RequestRow, SampleRow, TaskRow


def lock_model(s: Session, model_id: int, *, skip_locked: bool = False) -> ModelRow | None:
    # FOR NO KEY UPDATE, not FOR UPDATE: rows this transaction already inserted
    # with a foreign key to the model hold KEY SHARE on it, and two such
    # transactions upgrading to FOR UPDATE deadlock each other
    return s.scalar(
        select(ModelRow).where(ModelRow.id == model_id).with_for_update(key_share=True, skip_locked=skip_locked)
    )


def append_event(s: Session, model_id: int, request_id: str | None, kind: str, *, locked: ModelRow | None = None,
           **detail: Any) -> None:
    """Append an event to the model's audit chain.

    Locking the model row serialises appends per model (PostgreSQL; SQLite
    already has one writer), so two transactions never fork the chain.
    ``locked`` is the model row when this transaction already holds its lock.
    """
    model = locked if locked is not None else lock_model(s, model_id)
    at = utcnow()
    seq = model.audit_seq + 1
    digest = audit.event_hash(model_id, seq, request_id, kind, detail, at, model.audit_head)
    s.add(EventRow(model_id=model_id, request_id=request_id, kind=kind, detail=detail, at=at, seq=seq,
                   prev_hash=model.audit_head, hash=digest))
    model.audit_seq, model.audit_head = seq, digest


def drop_unlearned(s: Session, row: RequestRow) -> tuple[tuple[str, ...], dict[str, Any]]:
    """A learn that ends without being applied takes its sample rows with it,
    and its task too when nothing else was ever learned or queued for it.
    Returns the artifacts it may have freed (its data file, that task's probe
    set), for the caller to erase once the transaction commits, and what the
    ending event records of it."""
    if row.kind != RequestKind.LEARN:
        return (), {}
    s.execute(delete(SampleRow).where(SampleRow.learn_request_seq == row.seq, SampleRow.status == SampleStatus.PENDING))
    freed = (row.payload_digest,) if row.payload_digest else ()
    task = s.scalar(select(TaskRow).where(TaskRow.model_id == row.model_id, TaskRow.name == row.target["task"]))
    if task is None or task.state != TaskState.PENDING:
        return freed, {}
    if s.scalar(select(exists().where(SampleRow.task_id == task.id))):
        return freed, {}
    s.delete(task)
    return freed + ((task.probe_digest,) if task.probe_digest else ()), {"task_dropped": task.name}


def chunks(items: Sequence, size: int):
    items = list(items)
    for i in range(0, len(items), size):
        yield items[i : i + size]
