"""Plain dataclasses returned by the ledger (never ORM rows)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

class RequestKind(StrEnum):
    LEARN = "learn"
    FORGET = "forget"
    RETRAIN = "retrain"  # filed by the worker: rebuild parts a forget left unusable
    REPAIR = "repair"  # filed by `lifecycle repair`: lift a quarantine


class RequestStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    APPLIED = "applied"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        return self in (RequestStatus.APPLIED, RequestStatus.FAILED, RequestStatus.REJECTED, RequestStatus.CANCELLED)


OPEN = (RequestStatus.QUEUED, RequestStatus.RUNNING)  # a request not yet ended


class TaskState(StrEnum):
    PENDING = "pending"  # its first learn is queued
    LEARNED = "learned"
    FORGOTTEN = "forgotten"
    RELEARNED = "relearned"  # learned again after a forget

    @property
    def learned(self) -> bool:
        return self in (TaskState.LEARNED, TaskState.RELEARNED)


class SampleStatus(StrEnum):
    PENDING = "pending"  # its learn is queued
    ACTIVE = "active"
    FORGOTTEN = "forgotten"


class Role(StrEnum):
    """What an evaluation measured: a task the model keeps, or one it forgot."""

    RETAINED = "retained"
    FORGOTTEN = "forgotten"


class TargetUnit(StrEnum):
    """What a forget names."""

    TASK = "task"
    SUBJECT = "subject"
    SAMPLES = "samples"


@dataclass(frozen=True)
class ForgetTarget:
    """A forget's target as a typed value; the ledger stores it as ``to_dict()``."""

    unit: TargetUnit
    task: str | None = None
    subject_hash: str | None = None
    samples: tuple[str, ...] = ()

    @classmethod
    def of(cls, target: dict[str, Any]) -> ForgetTarget:
        if "task" in target:
            return cls(TargetUnit.TASK, task=target["task"])
        if "subject_hash" in target:
            return cls(TargetUnit.SUBJECT, subject_hash=target["subject_hash"])
        if "samples" in target:
            return cls(TargetUnit.SAMPLES, samples=tuple(target["samples"]))
        raise ValueError(f"not a forget target: {sorted(target)}")

    def to_dict(self) -> dict[str, Any]:
        return {TargetUnit.TASK: {"task": self.task}, TargetUnit.SUBJECT: {"subject_hash": self.subject_hash},
                TargetUnit.SAMPLES: {"samples": list(self.samples)}}[self.unit]

    def describe(self) -> str:
        """The one way a forget target is shown: never more of a digest than a prefix."""
        if self.unit is TargetUnit.TASK:
            return f"task {self.task}"
        if self.unit is TargetUnit.SUBJECT:
            return f"subject {self.subject_hash[:12]}"
        return f"{len(self.samples)} sample(s)"


@dataclass(frozen=True)
class Model:
    id: int
    name: str
    strategy: str
    config: dict[str, Any]
    n_features: int
    n_classes: int
    relapse_threshold: float
    forget_due_days: float
    created_at: dt.datetime
    keep_states: int = 3
    forgotten_probes: str = "keep"
    quarantine: str | None = None  # why only repairs are applied to it now


@dataclass(frozen=True)
class Task:
    id: int
    model_id: int
    name: str
    state: TaskState
    classes: tuple[int, ...]
    probe_digest: str | None
    forgotten_at_version: int | None
    acc_at_forget: float | None
    peak_since_forget: float | None


@dataclass(frozen=True)
class Request:
    id: str
    seq: int
    model: str
    kind: RequestKind
    target: dict[str, Any]
    status: RequestStatus
    received_at: dt.datetime
    due_at: dt.datetime | None
    requested_by: str | None
    reason: str | None
    idempotency_key: str | None
    attempt: int
    lease_owner: str | None
    lease_expires_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    step_seconds: float | None
    error: str | None
    result_version: int | None

    @property
    def done(self) -> bool:
        return self.status.done

    @property
    def forget_target(self) -> ForgetTarget | None:
        return ForgetTarget.of(self.target) if self.kind is RequestKind.FORGET else None

    def describe_target(self) -> str:
        """What the request is about, in a few words (tables, reports)."""
        if self.kind is RequestKind.FORGET:
            return ForgetTarget.of(self.target).describe()
        if self.kind is RequestKind.LEARN:
            return f"task {self.target['task']}"
        if self.kind is RequestKind.RETRAIN:
            return f"unit(s) {', '.join(str(u) for u in self.target.get('units', ()))}"
        return "rebuild" if self.target.get("rebuild") else "check"


@dataclass(frozen=True)
class Claim:
    """A request a worker holds under a lease; ``attempt`` fences its completion."""

    request: Request
    model: Model
    owner: str
    attempt: int
    payload_digest: str | None
    payload_sha: str
    # the model's audit chain head right after this claim's event: where the step began
    audit_anchor: tuple[int, str] = (0, "")


@dataclass(frozen=True)
class StepContext:
    """What a step reads from the ledger when it begins, in one read."""

    base: ModelVersion | None  # the version the step starts from (None before the first)
    tasks: dict[str, Task]
    samples: list[Sample]  # a learn's samples in data-file order, or the samples a forget removes
    tombstones: frozenset[str]  # a forget's: every sample id the model forgot before

    @property
    def base_version(self) -> int:
        return self.base.version if self.base is not None else 0


@dataclass(frozen=True)
class Sample:
    sample_id: str
    task: str
    label: int
    subject_hash: str | None
    status: SampleStatus
    data_digest: str | None
    data_row: int | None


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: int
    request_id: str
    artifact_digest: str
    state_purged: bool
    created_at: dt.datetime


@dataclass(frozen=True)
class Evaluation:
    version: int
    task: str
    role: Role
    accuracy: float
    chance: float
    n: int


@dataclass(frozen=True)
class RelapseFinding:
    model: str
    version: int
    task: str
    forgotten_at_version: int
    acc_at_forget: float
    accuracy: float
    chance: float
    relapse: float
    threshold: float
    peak_since_forget: float
    created_at: dt.datetime


@dataclass(frozen=True)
class Event:
    id: int
    model: str
    request_id: str | None
    kind: str
    detail: dict[str, Any]
    at: dt.datetime


@dataclass(frozen=True)
class ChainLink:
    """One event of a model's audit chain: what a certificate's anchor points at."""

    model: str
    seq: int
    request_id: str | None
    kind: str
    hash: str


@dataclass(frozen=True)
class StepOutcome:
    """Everything one applied step commits together."""

    artifact_digest: str
    step_seconds: float
    evaluations: list[Evaluation]
    findings: list[dict[str, Any]] = field(default_factory=list)
    forgotten_sample_ids: list[str] = field(default_factory=list)
    task_states: dict[str, TaskState] = field(default_factory=dict)
    certificate: dict[str, Any] | None = None
    tasks_forgotten: dict[str, float] = field(default_factory=dict)  # task -> accuracy right after


@dataclass(frozen=True)
class StepResult:
    """How a claimed step ended, for ``Ledger.commit_steps``.

    ``status`` is applied (with ``outcome`` and the ``base_version`` the step
    started from) or failed / rejected (with ``error``).
    """

    claim: Claim
    status: RequestStatus
    base_version: int = 0
    outcome: StepOutcome | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if self.status == RequestStatus.APPLIED:
            if self.outcome is None:
                raise ValueError(f"request {self.claim.request.id}: an applied step needs its outcome")
        elif self.status in (RequestStatus.FAILED, RequestStatus.REJECTED):
            if not self.error:
                raise ValueError(f"request {self.claim.request.id}: a {self.status} step needs an error message")
        else:
            raise ValueError(f"a step ends applied, failed or rejected, not {self.status!r}")


@dataclass(frozen=True)
class Committed:
    """What ``Ledger.commit_steps`` did with one step."""

    request_id: str
    version: ModelVersion | None  # the new version, when the step applied
    lost: str | None = None  # why nothing was committed: the worker no longer held the request
    freed: tuple[str, ...] = ()  # artifacts a learn that ended unapplied may have left unreferenced


@dataclass(frozen=True)
class Report:
    id: int
    model: str
    model_version: int
    written_at: dt.datetime
    html_path: str
    html_sha256: str
    json_sha256: str


@dataclass(frozen=True)
class PurgePlan:
    """What one purge of a model erases: (sample pk, data file, row) of
    forgotten samples, (version, digest) of states, (task, digest) of probes."""

    model_id: int
    rows: list[tuple[int, str, int]]
    states: list[tuple[int, str]]
    probes: list[tuple[str, str]]

    @property
    def empty(self) -> bool:
        return not (self.rows or self.states or self.probes)

    def rows_by_file(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for _, digest, row in self.rows:
            out.setdefault(digest, []).append(row)
        return out

    def digests(self) -> list[str]:
        return sorted({d for _, d, _ in self.rows} | {d for _, d in self.states} | {d for _, d in self.probes})
