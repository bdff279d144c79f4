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


class DeliveryState(StrEnum):
    """Where a status callback stands in the outbox."""

    PENDING = "pending"  # not yet accepted by the receiver; retried on a back-off
    DELIVERED = "delivered"  # the receiver answered 2xx
    GAVE_UP = "gave_up"  # the retry limit was reached, or its host left the allow-list


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
class Encoder:
    """A model's frozen feature extractor, as the ledger records it.

    ``digest`` is the sha256 of the stored file (a TorchScript or
    ``torch.export`` program, or the weights a ``factory`` loads); loading
    checks it. ``kind`` is "torchscript", "export" or "factory"; ``factory``
    names ``"package.module:callable"`` for the last. Inputs are
    ``input_shape`` arrays of ``input_dtype`` ("float32", or "int64" for token
    ids); the encoder turns each into ``out_features`` numbers. It is encoded
    in batches of exactly ``batch_size`` (the last padded), so a sample's
    features never depend on the samples batched with it. ``trained_on`` is
    the user's declaration of its training data (outside the deletion scope).
    ``fingerprint``: features of fixed inputs at registration, to catch a
    factory that builds another network later.
    """

    digest: str
    kind: str
    input_shape: tuple[int, ...]
    out_features: int
    trained_on: str
    input_dtype: str = "float32"
    factory: str | None = None
    batch_size: int = 128
    fingerprint: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "kind": self.kind, "input_shape": list(self.input_shape),
                "out_features": self.out_features, "trained_on": self.trained_on, "input_dtype": self.input_dtype,
                "factory": self.factory, "batch_size": self.batch_size, "fingerprint": list(self.fingerprint)}

    @classmethod
    def of(cls, values: dict[str, Any]) -> Encoder:
        return cls(digest=values["digest"], kind=values["kind"], input_shape=tuple(values["input_shape"]),
                   out_features=int(values["out_features"]), trained_on=values["trained_on"],
                   input_dtype=values.get("input_dtype", "float32"), factory=values.get("factory"),
                   batch_size=int(values.get("batch_size", 128)),
                   fingerprint=tuple(float(v) for v in values.get("fingerprint", ())))


@dataclass(frozen=True)
class Model:
    id: int
    name: str
    strategy: str
    config: dict[str, Any]
    n_features: int  # width of a stored row: with an encoder, the product of its input shape
    n_classes: int
    relapse_threshold: float
    forget_due_days: float
    created_at: dt.datetime
    keep_states: int = 3
    forgotten_probes: str = "keep"
    quarantine: str | None = None  # why only repairs are applied to it now
    encoder: Encoder | None = None  # a frozen feature extractor in front of the strategy
    device: str = "cpu"  # where the encoder runs
    # a gated strategy whose forget gate fires on more than this share of a retained task's probes is a finding
    max_false_activation: float = 0.05

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input as submitted (without the batch dimension)."""
        return self.encoder.input_shape if self.encoder is not None else (self.n_features,)


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
    samples: list[Sample]  # the samples a forget removes
    tombstones: frozenset[str]  # a forget's: every sample id the model forgot before
    learn_ids: list[str] = field(default_factory=list)  # a learn's sample ids, in data-file order

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
