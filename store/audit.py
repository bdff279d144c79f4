"""The tamper-evident audit chain over each model's events.

Every event stores its per-model sequence number, the hash of the event
before it and the hash of its own content including that link. Changing,
removing or slipping in a row breaks the chain at that row; the model row
keeps the chain's head, so even the last event cannot vanish unnoticed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any


def event_hash(model_id: int, seq: int, request_id: str | None, kind: str, detail: dict[str, Any],
               at: dt.datetime, prev_hash: str | None) -> str:
    content = {
        "model_id": model_id,
        "seq": seq,
        "request_id": request_id,
        "kind": kind,
        "detail": detail,
        "at": at.astimezone(dt.timezone.utc).isoformat(),
        "prev": prev_hash,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class ChainEvent:
    id: int
    model_id: int
    seq: int
    request_id: str | None
    kind: str
    detail: dict[str, Any]
    at: dt.datetime
    prev_hash: str | None
    hash: str


@dataclass(frozen=True)
class ChainProblem:
    model: str
    event_id: int | None
    seq: int | None
    problem: str

    def __str__(self) -> str:
        where = f"event id {self.event_id} (seq {self.seq})" if self.event_id is not None else "end of chain"
        return f"model {self.model!r}, {where}: {self.problem}"


def first_problem(model: str, events: list[ChainEvent], head_seq: int, head_hash: str | None) -> ChainProblem | None:
    """Walk one model's events in sequence order; name the first broken row."""
    prev, expected = None, 1
    for ev in events:
        if event_hash(ev.model_id, ev.seq, ev.request_id, ev.kind, ev.detail, ev.at, ev.prev_hash) != ev.hash:
            return ChainProblem(model, ev.id, ev.seq, "its content does not match its hash: the row was altered "
                                                      "or forged")
        if ev.seq != expected:
            return ChainProblem(model, ev.id, ev.seq, f"sequence jumps from {expected - 1} to {ev.seq}: "
                                                      f"{ev.seq - expected} row(s) before it were deleted or it "
                                                      "was inserted")
        if ev.prev_hash != prev:
            return ChainProblem(model, ev.id, ev.seq, "it does not link to the event before it: a row was deleted "
                                                      "or inserted here")
        prev, expected = ev.hash, ev.seq + 1
    if head_seq != expected - 1 or head_hash != prev:
        return ChainProblem(model, None, None, f"the chain ends at seq {expected - 1} but the model's head says "
                                               f"{head_seq}: trailing rows were deleted (or the head was altered)")
    return None
