"""The Python API: ``lifecycle.connect(url)`` and the ``Lifecycle`` handle."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from lifecycle import strategies
from lifecycle import purge, validation
from lifecycle.signing import Signer
from lifecycle.vault import Vault
from lifecycle.loading import load_strategy
from lifecycle.worker import Worker
from lifecycle.errors import (
    AlreadyForgotten,
    DuplicateSampleIds,
    IdempotencyConflict,
    InvalidConfig,
    InvalidRequest,
    ModelExists,
    NotReady,
    NotRepairable,
    StorageFault,
    RequestNotCancellable,
    TombstonedSample,
    UnknownModel,
    UnknownRequest,
    UnknownSamples,
    UnknownSubject,
    UnknownTask,
    UnsupportedForgetUnit,
)
from lifecycle.store.artifacts import ArtifactStore
from lifecycle.store.errors import ArtifactCorrupt, ArtifactMissing
from lifecycle.migrations.migrate import open_engine
from lifecycle.store.engine import ledger_url
from lifecycle.store.identity import IdKey
from lifecycle.store.keystore import KeyStore
from lifecycle.store.clock import Clock, utcnow
from lifecycle.store.ledger import Ledger
from lifecycle.store.records import (
    Evaluation,
    Model,
    ModelVersion,
    RelapseFinding,
    Request,
    RequestKind,
    SampleStatus,
    Task,
    TaskState,
)

DEFAULT_URL = "sqlite:///lifecycle.db"
PROBE_POLICIES = ("keep", "purge")
REDACTABLE = ("reason", "requested_by")
# a submit writes its files before it commits their rows: the sweep spares files younger than this
SWEEP_GRACE_SECONDS = 3600.0


def connect(url: str | None = None, *, artifacts: str | os.PathLike | None = None,
            keys: str | os.PathLike | None = None, create: bool = True,
            signing_key: str | os.PathLike | None = None, id_key: str | os.PathLike | None = None,
            clock: Clock = utcnow) -> Lifecycle:
    """Open a ledger. A new empty database gets the current schema; an older
    one raises ``SchemaOutOfDate`` naming ``lifecycle db upgrade``.

    SQLite keeps artifacts in a folder beside the database file
    (``ledger.db`` -> ``ledger.db.artifacts``) and their data keys in another
    (``ledger.db.keys``); other backends take ``artifacts`` or the
    ``LIFECYCLE_ARTIFACTS`` environment variable, and keep the keys beside
    it (``<artifacts>.keys``). ``keys`` or ``LIFECYCLE_KEYS`` put the keys
    elsewhere.
    Keep the key folder out of the artifacts' backups: erasing destroys keys
    (see ``lifecycle.vault``). Certificates are signed with the Ed25519 key
    at ``signing_key`` (see ``lifecycle.signing``) and identifiers are
    digested under the secret at ``id_key`` (see ``lifecycle.store.identity``); both
    are created on first use. ``clock`` gives the queue's times (leases,
    claims, commits); tests pass one they can move.
    """
    url = ledger_url(url or os.environ.get("LIFECYCLE_DB", DEFAULT_URL))
    engine = open_engine(url, create=create)
    artifacts = Path(artifacts or default_artifacts(url))
    vault = Vault(ArtifactStore(artifacts), KeyStore(keys or default_keys(url, artifacts)))
    ids = IdKey(id_key)
    return Lifecycle(Ledger(engine, ids, clock), vault, Signer(signing_key), ids)


def _sqlite_file(url: str) -> str | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if not parsed.database or parsed.database == ":memory:":
        raise InvalidRequest("an in-memory SQLite ledger cannot be shared with workers; use a file")
    return parsed.database


def default_artifacts(url: str) -> Path:
    path = _sqlite_file(url)
    return Path(path + ".artifacts") if path else Path(os.environ.get("LIFECYCLE_ARTIFACTS", "lifecycle-artifacts"))


def default_keys(url: str, artifacts: Path) -> Path:
    if os.environ.get("LIFECYCLE_KEYS"):
        return Path(os.environ["LIFECYCLE_KEYS"])
    path = _sqlite_file(url)
    return Path(path + ".keys") if path else artifacts.with_name(artifacts.name + ".keys")


@dataclass(frozen=True)
class Step:
    """One line of a model's history: a request and what its version measured."""

    request: Request
    version: int | None
    evaluations: tuple[Evaluation, ...]


class Lifecycle:
    def __init__(self, ledger: Ledger, vault: Vault, signer: Signer, ids: IdKey) -> None:
        self.ledger = ledger
        self.vault = vault
        self.signer = signer
        self.ids = ids

    # ---- models --------------------------------------------------------------

    def create_model(
        self,
        name: str,
        *,
        strategy: str,
        n_features: int,
        n_classes: int,
        config: dict[str, Any] | None = None,
        relapse_threshold: float = 0.05,
        forget_due_days: float = 30.0,
        keep_states: int = 3,
        forgotten_probes: str = "keep",
    ) -> Model:
        """Register a model.

        ``keep_states``: how many of the latest model states are kept (at
        least 1); older ones, and every state trained on forgotten data, are
        erased.
        ``forgotten_probes``: what a task forget does to the task's probe
        set: ``"keep"`` it to watch the task for relapse (certificates say
        so), or ``"purge"`` it with the task (relapse is then not watched).
        """
        validation.name(name, "model name")
        try:
            spec = strategies.get(strategy)
            cfg = spec.make_config(config)
        except (strategies.UnknownStrategy, strategies.StrategyConfigError, TypeError) as exc:
            raise InvalidConfig(str(exc)) from None
        for value, what, hi in ((n_features, "n_features", 10_000_000), (n_classes, "n_classes", 100_000)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 1 <= value <= hi:
                raise InvalidRequest(f"{what} must be an integer in 1..{hi}, not {value!r}")
        if n_classes < 2:
            raise InvalidRequest("n_classes must be at least 2")
        if not isinstance(relapse_threshold, (int, float)) or not 0 < relapse_threshold < 1:
            raise InvalidRequest(f"relapse_threshold is a fraction of accuracy in (0, 1), not {relapse_threshold!r}")
        if not isinstance(forget_due_days, (int, float)) or not 0 < forget_due_days <= 3650:
            raise InvalidRequest(f"forget_due_days must be in (0, 3650], not {forget_due_days!r}")
        if isinstance(keep_states, bool) or not isinstance(keep_states, int) or not 1 <= keep_states <= 1000:
            raise InvalidRequest(f"keep_states must be an integer in 1..1000, not {keep_states!r}")
        if forgotten_probes not in PROBE_POLICIES:
            raise InvalidRequest(f"forgotten_probes must be one of {', '.join(PROBE_POLICIES)}, not "
                                 f"{forgotten_probes!r}")
        if self.ledger.model(name) is not None:
            raise ModelExists(f"a model named {name!r} already exists")
        try:
            return self.ledger.create_model(name, strategy, strategies.base.config_to_dict(cfg), int(n_features),
                                            int(n_classes), float(relapse_threshold), float(forget_due_days),
                                            keep_states, forgotten_probes)
        except IntegrityError:
            raise ModelExists(f"a model named {name!r} already exists") from None

    def model(self, name: str) -> Model:
        found = self.ledger.model(validation.name(name, "model name"))
        if found is None:
            known = ", ".join(m.name for m in self.ledger.models()[:10]) or "none"
            raise UnknownModel(f"no model named {name!r} (models: {known})")
        return found

    def models(self) -> list[Model]:
        return self.ledger.models()

    def tasks(self, model: str) -> list[Task]:
        return self.ledger.tasks(self.model(model).id)

    # ---- submitting ----------------------------------------------------------

    def learn(
        self,
        model: str,
        *,
        task: str,
        X: Any,
        y: Any,
        sample_ids: Any = None,
        subjects: Any = None,
        probe: tuple[Any, Any] | None = None,
        idempotency_key: str | None = None,
        requested_by: str | None = None,
        reason: str | None = None,
    ) -> Request:
        """Queue a learn request. Raises a typed error and writes nothing when invalid."""
        m = self.model(model)
        validation.name(task, "task")
        Xa = self._inputs(m, X)
        ya = validation.labels(y, len(Xa), m.n_classes)
        key = None if idempotency_key is None else validation.name(idempotency_key, "idempotency_key")
        requested_by = validation.optional_text(requested_by, "requested_by", 200)
        reason = validation.optional_text(reason, "reason")
        ids = (
            validation.id_list(sample_ids, "sample_ids", len(Xa))
            if sample_ids is not None
            else None
        )
        subs = validation.subjects(subjects, len(Xa)) if subjects is not None else [None] * len(Xa)
        existing_task = self.ledger.task(m.id, task)
        probe_arrays = None
        if probe is not None:
            if not isinstance(probe, (tuple, list)) or len(probe) != 2:
                raise InvalidRequest("probe must be a pair (X_probe, y_probe)")
            Xp = self._inputs(m, probe[0], "probe X")
            probe_arrays = (Xp, validation.labels(probe[1], len(Xp), m.n_classes, "probe y"))
        elif existing_task is None or existing_task.probe_digest is None:
            raise InvalidRequest(f"task {task!r} has no probe set yet: pass probe=(X_probe, y_probe) to evaluate it")

        hashes = self._subject_digests(m, subs)
        digests = None if ids is None else [self.ids.sample(i) for i in ids]
        sha = _sha(kind=RequestKind.LEARN, task=task, X=Xa, y=ya, ids=digests, subjects=hashes,
                   probe=None if probe_arrays is None else list(probe_arrays))
        if key is not None:
            prior = self._by_key(m, key, sha)
            if prior is not None:
                return prior
        if digests is None:
            digests = [self.ids.sample(f"{task}/{sha[:16]}/{i}") for i in range(len(Xa))]
        if len(set(digests)) != len(digests):
            raise DuplicateSampleIds("sample_ids repeats ids that differ only in Unicode normalisation")
        positions = {d: i for i, d in enumerate(digests)}
        tomb = self.ledger.tombstoned(m.id, digests)
        if tomb:
            raise TombstonedSample(
                f"{len(tomb)} sample(s) of this learn request were forgotten earlier and may not be learned "
                f"again, e.g. rows {sorted(positions[d] for d in tomb)[:3]}"
            )
        known = self.ledger.samples(m.id, digests)
        if known:
            raise DuplicateSampleIds(
                f"{len(known)} sample id(s) are already in model {m.name!r}, e.g. rows "
                f"{sorted(positions[d] for d in known)[:3]}"
            )
        contents = self.ids.rows(Xa)
        again = self.ledger.tombstoned_content(m.id, contents)
        if again:
            rows = [i for i, c in enumerate(contents) if c in again]
            raise TombstonedSample(
                f"{len(rows)} row(s) of this learn request have the same content as samples forgotten earlier "
                f"(under other ids), e.g. rows {rows[:3]}; forgotten data may not be learned again"
            )
        written = []
        try:
            payload = self._seal(written, Xa, ya, digests)
            probe_digest = None
            if probe_arrays is not None:
                probe_digest = self._seal(written, *probe_arrays)
            classes = set(ya.tolist()) | (set(probe_arrays[1].tolist()) if probe_arrays else set())
            return self.ledger.submit_learn(
                m, task=task, classes=sorted(classes), probe_digest=probe_digest, payload_digest=payload,
                payload_sha=sha, sample_ids=digests, labels=ya.tolist(), subject_hashes=hashes,
                content_digests=contents, idempotency_key=key, requested_by=requested_by, reason=reason,
            )
        except IntegrityError:
            self._discard(written)
            if key is not None and (prior := self._by_key(m, key, sha)) is not None:
                return prior
            raise DuplicateSampleIds("a concurrent request took some of these sample ids first") from None
        except BaseException:
            self._discard(written)
            raise

    def forget(
        self,
        model: str,
        *,
        task: str | None = None,
        samples: Any = None,
        subject: str | None = None,
        reason: str | None = None,
        requested_by: str | None = None,
        idempotency_key: str | None = None,
        due_at: dt.datetime | None = None,
    ) -> Request:
        """Queue a forget of a task, a list of sample ids, or everything of a subject."""
        m = self.model(model)
        given = [k for k, v in (("task", task), ("samples", samples), ("subject", subject)) if v is not None]
        if len(given) != 1:
            raise InvalidRequest(f"forget takes exactly one of task=, samples=, subject=; got {given or 'none'}")
        reason = validation.optional_text(reason, "reason")
        requested_by = validation.optional_text(requested_by, "requested_by", 200)
        key = None if idempotency_key is None else validation.name(idempotency_key, "idempotency_key")
        received = self.ledger.clock()
        due = validation.due(due_at, received) if due_at is not None else received + dt.timedelta(days=m.forget_due_days)
        spec = strategies.get(m.strategy)
        if given[0] != "task" and spec.tags.forget_unit == "task":
            why = f" Why: {spec.sample_forget_refusal}." if spec.sample_forget_refusal else ""
            raise UnsupportedForgetUnit(
                f"model {m.name!r} uses strategy {m.strategy!r}, which forgets whole tasks only; a "
                f"{given[0]}-level forget cannot be honoured exactly and is not approximated.{why} Forget the "
                f"task instead, or use a sample-level strategy ({', '.join(sample_level_strategies())})."
            )

        if task is not None:
            validation.name(task, "task")
            target: dict[str, Any] = {"task": task}
        elif samples is not None:
            ids = [self.ids.sample(i) for i in validation.id_list(samples, "samples")]
            if len(set(ids)) != len(ids):
                raise DuplicateSampleIds("samples repeats ids that differ only in Unicode normalisation")
            target = {"samples": ids}
        else:
            validation.name(subject, "subject")
            target = {"subject_hash": self._subject_digests(m, [subject])[0]}
        sha = _sha(kind=RequestKind.FORGET, target=target)
        if key is not None:
            prior = self._by_key(m, key, sha)
            if prior is not None:
                return prior

        if task is not None:
            t = self.ledger.task(m.id, task)
            if t is None:
                names = ", ".join(x.name for x in self.ledger.tasks(m.id)[:10]) or "none"
                raise UnknownTask(f"model {m.name!r} has no task {task!r} (tasks: {names})")
            if t.state == TaskState.FORGOTTEN:
                raise AlreadyForgotten(f"task {task!r} was already forgotten at version {t.forgotten_at_version}")
        elif samples is not None:
            ids = target["samples"]
            asked = list(samples)
            tomb = self.ledger.tombstoned(m.id, ids)
            if tomb:
                raise AlreadyForgotten(f"{len(tomb)} sample(s) were already forgotten, e.g. "
                                       f"{[asked[i] for i, d in enumerate(ids) if d in tomb][:3]}")
            known = self.ledger.samples(m.id, ids)
            missing = [asked[i] for i, d in enumerate(ids) if d not in known]
            if missing:
                raise UnknownSamples(f"{len(missing)} sample id(s) were never learned by {m.name!r}, "
                                     f"e.g. {missing[:3]}")
        else:
            counts = self.ledger.subject_counts(m.id, target["subject_hash"])
            if counts.get(SampleStatus.PENDING, 0) + counts.get(SampleStatus.ACTIVE, 0) == 0:
                if counts.get("tombstoned", 0):
                    raise AlreadyForgotten("every sample of this subject was already forgotten")
                raise UnknownSubject(f"model {m.name!r} holds no sample of this subject")
        open_id = self.ledger.open_forget_overlapping(m.id, target)
        if open_id is not None:
            raise AlreadyForgotten(f"a forget of the same {given[0]} is already queued or running: request {open_id}")
        return self.ledger.submit_forget(m, target=target, payload_sha=sha, received_at=received, due_at=due,
                                         idempotency_key=key,
                                         requested_by=requested_by, reason=reason)

    def cancel(self, request_id: str) -> Request:
        current = self.status(request_id)
        request_id = current.id
        cancelled = self.ledger.cancel(request_id)
        if cancelled is None:
            raise RequestNotCancellable(f"request {request_id} is {current.status}; only queued requests can be "
                                        "cancelled")
        request, freed = cancelled
        purge.discard(self.ledger, self.vault, freed)
        return request

    def extend_deadline(self, request_id: str, *, until: dt.datetime, reason: str,
                        requested_by: str | None = None) -> Request:
        """Postpone an open forget's due date, with a reason; the change is audited.

        GDPR art. 12(3) allows up to two further months for complex requests,
        provided the subject is told why within the first month.
        """
        req = self.status(request_id)
        request_id = req.id
        validation.name(reason, "reason")
        requested_by = validation.optional_text(requested_by, "requested_by", 200)
        if req.kind != RequestKind.FORGET:
            raise InvalidRequest(f"request {request_id} is a {req.kind} request; only forgets have deadlines")
        if req.done:
            raise RequestNotCancellable(f"request {request_id} is already {req.status}; its deadline is moot")
        if not isinstance(until, dt.datetime) or until.tzinfo is None:
            raise InvalidRequest("until must be a timezone-aware datetime")
        if until <= req.due_at:
            raise InvalidRequest(f"until {until.isoformat()} is not later than the current due date "
                                 f"{req.due_at.isoformat()}; deadlines are only extended")
        extended = self.ledger.extend_deadline(request_id, until, reason, requested_by)
        if extended is None:
            raise RequestNotCancellable(f"request {request_id} finished while its deadline was being extended")
        return extended

    def redact(self, request_id: str, *, fields: tuple[str, ...] = ("reason",), why: str,
               requested_by: str | None = None) -> Request:
        """Erase free text (``reason``, ``requested_by``) from a request, e.g. a
        name someone typed into a reason. Audited; the audit chain still verifies."""
        request_id = self.status(request_id).id
        validation.name(why, "why")
        requested_by = validation.optional_text(requested_by, "requested_by", 200)
        unknown = set(fields) - set(REDACTABLE)
        if not fields or unknown:
            raise InvalidRequest(f"fields must be some of {', '.join(REDACTABLE)}, not {sorted(unknown) or 'none'}")
        return self.ledger.redact(request_id, sorted(set(fields)), why, requested_by)

    # ---- following requests ------------------------------------------------

    def status(self, request_id: str) -> Request:
        """A request by its id, or by a unique prefix of it (at least 4 characters), as git takes commits."""
        if not isinstance(request_id, str):
            raise InvalidRequest(f"request id must be a string, not {type(request_id).__name__}")
        try:
            uuid.UUID(request_id)
        except ValueError:
            if len(request_id) < 4 or any(c not in "0123456789abcdef-" for c in request_id.lower()):
                raise UnknownRequest(f"no request with id {request_id!r} (request ids are UUIDs, or a unique "
                                     "prefix of one of at least 4 characters)") from None
            matches = self.ledger.request_ids_starting(request_id.lower(), limit=2)
            if len(matches) > 1:
                raise UnknownRequest(f"{request_id!r} is the start of several request ids; give more of it")
            if not matches:
                raise UnknownRequest(f"no request id starts with {request_id!r}")
            request_id = matches[0]
        found = self.ledger.request(request_id)
        if found is None:
            raise UnknownRequest(f"no request with id {request_id!r}")
        return found

    def wait(self, request_id: str, timeout: float | None = None, poll: float = 0.2) -> Request:
        """Block until the request is applied, failed, rejected or cancelled."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            req = self.status(request_id)
            if req.done:
                return req
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"request {request_id} is still {req.status} after {timeout} s")
            time.sleep(poll)

    def requests(self, model: str | None = None, statuses: list[str] | None = None) -> list[Request]:
        model_id = None if model is None else self.model(model).id
        return self.ledger.requests(model_id, statuses)

    def drain(self, model: str | None = None, max_steps: int | None = None,
              sweep_grace_seconds: float = SWEEP_GRACE_SECONDS) -> list[Request]:
        """Apply queued requests in this process until none is left; return them.

        Finishes what the service would: re-queues requests whose lease
        expired, completes purges a crash interrupted, and sweeps artifacts
        nothing references (older than ``sweep_grace_seconds``).
        """
        model_id = None if model is None else self.model(model).id
        worker = self.worker()
        worker.maintain()
        done = worker.drain(model_id, max_steps=max_steps)
        self.sweep(sweep_grace_seconds)
        return done

    def worker(self, **settings: Any) -> Worker:
        """A worker on this ledger, vault and signer (``settings``: see ``Worker``)."""
        return Worker(self.ledger, self.vault, self.signer, **settings)

    def sweep(self, grace_seconds: float = SWEEP_GRACE_SECONDS) -> list[str]:
        """Erase stored artifacts and keys that nothing in the ledger references
        (left by a crash), older than ``grace_seconds``; returns their digests."""
        return purge.sweep(self.ledger, self.vault, grace_seconds)

    def repair(self, model: str, *, requested_by: str | None = None) -> Request:
        """Check every stored file the model needs and queue the repair that
        brings it back: a state rebuilt from the retained data (exact strategies;
        rows of unreadable data files are then lost, and tombstoned), unreadable
        probe sets dropped, the quarantine lifted. The repair is applied ahead
        of the model's queue. Raises ``NotRepairable`` naming what to restore
        (or the last good version) when the strategy cannot be rebuilt."""
        m = self.model(model)
        requested_by = validation.optional_text(requested_by, "requested_by", 200)
        if (open_id := self.ledger.open_repair(m.id)) is not None:
            return self.status(open_id)
        latest = self.ledger.latest_version(m.id)
        state_ok = latest is None or _readable(lambda: self.vault.blob(latest.artifact_digest))
        bad_probes = sorted(t.name for t in self.ledger.tasks(m.id)
                            if t.probe_digest and not _readable(lambda: self.vault.rows(t.probe_digest)))
        bad_files = sorted(d for d in self.ledger.data_files(m.id)
                           if not (_readable(lambda: self.vault.artifacts.get(d)) and self.vault.keys.exists(d)))
        rebuild = not state_ok or bool(bad_files)
        if rebuild and strategies.get(m.strategy).tags.exactness != "exact":
            good = next((v.version for v in reversed(self.ledger.versions(m.id))
                         if not v.state_purged and _readable(lambda: self.vault.blob(v.artifact_digest))), None)
            what = [f"its state (version {latest.version})"] if not state_ok else []
            what += [f"data file {d}" for d in bad_files]
            raise NotRepairable(
                f"model {m.name!r} uses {m.strategy!r}, which cannot be rebuilt from stored data; unreadable: "
                f"{', '.join(what)}. Restore those files from a backup of the artifact folder (the key folder still "
                f"opens them) and run lifecycle repair again; the last version whose state opens is "
                f"{good if good is not None else 'none'}.")
        if not rebuild and not bad_probes and m.quarantine is None:
            raise InvalidRequest(f"model {m.name!r} is not quarantined and every stored file it needs opens: "
                                 "nothing to repair")
        target = {"rebuild": rebuild, "drop_probes": bad_probes, "lost_files": bad_files}
        why = "; ".join(filter(None, [
            "state unreadable" if not state_ok else "",
            f"{len(bad_files)} data file(s) unreadable" if bad_files else "",
            f"probe set(s) of {', '.join(bad_probes)} unreadable" if bad_probes else "",
            "quarantine lifted" if m.quarantine is not None else ""]))
        return self.ledger.submit_repair(m.id, target, requested_by, why)

    def sample_digest(self, sample_id: str) -> str:
        """The keyed digest that stands for ``sample_id`` in the ledger and in certificates."""
        return self.ids.sample(validation.name(sample_id, "sample id"))

    def subject_digest(self, model: str, subject: str) -> str:
        """The keyed digest that stands for ``subject`` in ``model``'s ledger rows and certificates."""
        return self._subject_digests(self.model(model), [validation.name(subject, "subject")])[0]

    # ---- reading results ---------------------------------------------------

    def history(self, model: str) -> list[Step]:
        m = self.model(model)
        by_version: dict[int, list[Evaluation]] = {}
        for ev in self.ledger.evaluations(m.id):
            by_version.setdefault(ev.version, []).append(ev)
        return [
            Step(r, r.result_version, tuple(by_version.get(r.result_version, ())))
            for r in self.ledger.requests(m.id)
        ]

    def versions(self, model: str) -> list[ModelVersion]:
        return self.ledger.versions(self.model(model).id)

    def relapse(self, model: str) -> list[RelapseFinding]:
        return self.ledger.findings(self.model(model).id)

    def certificate(self, request_id: str) -> dict[str, Any]:
        """The signed receipt of an applied forget: ``{"certificate": ..., "signature": ...}``."""
        req = self.status(request_id)
        cert = self.ledger.certificate(req.id)
        if cert is None:
            raise NotReady(f"request {request_id} is a {req.kind} request in state {req.status}; certificates "
                           "exist for applied forget requests only")
        return cert

    def events(self, model: str):
        return self.ledger.events(self.model(model).id)

    @staticmethod
    def _inputs(m: Model, X: Any, what: str = "X") -> np.ndarray:
        """A model's inputs as submitted (learn rows, probe sets, predict), checked: the one place their shape is known."""
        return validation.features(X, m.n_features, what)

    def predict(self, model: str, X: Any, task: str | None = None) -> np.ndarray:
        m = self.model(model)
        Xa = self._inputs(m, X)
        version = self.ledger.latest_version(m.id)
        if version is None:
            raise NotReady(f"model {m.name!r} has no applied version yet; drain the queue or start the service")
        spec = strategies.get(m.strategy)
        if spec.tags.needs_task_id:
            if task is None:
                raise InvalidRequest(f"strategy {m.strategy!r} needs task= at inference")
            if self.ledger.task(m.id, validation.name(task, "task")) is None:
                raise UnknownTask(f"model {m.name!r} has no task {task!r}")
        try:
            strategy = load_strategy(self.vault, m, version)
        except (ArtifactCorrupt, ArtifactMissing) as exc:
            raise StorageFault(f"model {m.name!r} cannot be loaded: {exc}. Restore the file from a backup of the "
                               f"artifact folder, or run: lifecycle repair {m.name}") from None
        return strategy.predict(Xa, task=task)

    # ---- helpers -------------------------------------------------------------

    def _by_key(self, m: Model, key: str, sha: str) -> Request | None:
        found = self.ledger.request_by_key(m.id, key)
        if found is None:
            return None
        request, prior_sha = found
        if prior_sha != sha:
            raise IdempotencyConflict(
                f"idempotency key {key!r} was used for request {request.id} with a different payload"
            )
        return request

    def _seal(self, written: list[str], X: np.ndarray, y: np.ndarray, aad: list[str] | None = None) -> str:
        digest = self.vault.put_rows(X, y, aad)
        written.append(digest)
        return digest

    def _discard(self, written: list[str]) -> None:
        purge.discard(self.ledger, self.vault, written)

    def _subject_digests(self, m: Model, subjects: list[str | None]) -> list[str | None]:
        salt = self.ledger.subject_salt(m.id) if any(s is not None for s in subjects) else None
        if salt is None:
            return [None if s is None else self.ids.subject(s) for s in subjects]
        # a model from before keyed identifiers keeps its subjects' old digests, now keyed (migration 0006)
        return [None if s is None else self.ids.legacy_subject(hashlib.sha256(f"{salt}:{s}".encode()).hexdigest())
                for s in subjects]



def _readable(read) -> bool:
    try:
        read()
        return True
    except (ArtifactCorrupt, ArtifactMissing):
        return False


def sample_level_strategies() -> list[str]:
    return [n for n in strategies.names() if strategies.get(n).tags.forget_unit == "sample"]


def _sha(**fields: Any) -> str:
    """Digest of a request's payload, for idempotency comparisons."""
    h = hashlib.sha256()
    for k in sorted(fields):
        v = fields[k]
        h.update(k.encode() + b"\0")
        if isinstance(v, np.ndarray):
            h.update(f"{v.dtype.str}{v.shape}".encode() + v.tobytes())
        elif isinstance(v, list) and v and isinstance(v[0], np.ndarray):
            for a in v:
                h.update(f"{a.dtype.str}{a.shape}".encode() + a.tobytes())
        else:
            h.update(json.dumps(v, sort_keys=True).encode())
        h.update(b"\1")
    return h.hexdigest()
