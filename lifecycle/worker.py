"""The worker: claim a request, apply it through the strategy, verify, commit.

A step never holds a database transaction while it trains: the claim commits
a lease, a heartbeat thread renews it, and the completion is fenced on the
lease (and on the model version the step started from).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import types
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from typing import Any
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from sqlalchemy.exc import SQLAlchemyError

from lifecycle import strategies
from lifecycle import arrays, certificates, checkpoints, mia, purge
from lifecycle import relapse as relapse_check
from lifecycle.loading import build_strategy, chance, load_strategy
from lifecycle.errors import InvalidConfig
from lifecycle.signing import Signer
from lifecycle.strategies.executor import LOCAL, Executor, ExecutorLost
from lifecycle.store.erasures import Erasures
from lifecycle.store.ledger import Ledger
from lifecycle.vault import Erased, Vault
from lifecycle.store.errors import (
    DATABASE_UNREACHABLE,
    ArtifactCorrupt,
    ArtifactMissing,
    LeaseLost,
    StorageUnavailable,
)
from lifecycle.store.records import (
    Claim,
    Evaluation,
    Model,
    ModelVersion,
    Request,
    RequestKind,
    RequestStatus,
    Role,
    Sample,
    SampleStatus,
    StepContext,
    StepOutcome,
    StepResult,
    TaskState,
)

log = logging.getLogger("lifecycle.worker")

MIA_MAX_MEMBERS = 2000  # enough for a stable AUC; bounds the cost on huge forgets


class Rejected(Exception):
    """The request is no longer valid against the ledger as it stands now."""


@dataclass(frozen=True)
class Verification:
    """What the pass after a step measured: every task's accuracy, the relapse
    findings, and for gated strategies the gate's recall and false activations."""

    evaluations: list[Evaluation]
    findings: list[dict]
    gate: dict | None


@dataclass
class _Step:
    """A step that ran, waiting for its batch's commit (no result: the model was quarantined)."""

    result: StepResult | None
    strategy: strategies.Strategy | None = None  # the updated model, when the step applied


class Worker:
    """Drains the queue: works on the ledger, the vault of artifacts and the
    signer of certificates, and on nothing else."""

    def __init__(self, ledger: Ledger, vault: Vault, signer: Signer, *, owner: str | None = None,
                 lease_seconds: float = 60.0, max_attempts: int = 5, claim_batch: int = 1,
                 state_cache_bytes: int | None = None, probe_cache_bytes: int | None = None,
                 executor: Executor | None = None) -> None:
        self.ledger = ledger
        self.vault = vault
        self.signer = signer
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        # Where the strategies run the independent jobs inside a step (see
        # lifecycle.strategies.executor): in this process, or e.g. on Ray.
        self.executor = executor or LOCAL
        # Requests claimed at once (one per model): they run one after another
        # and commit together, which pays off when steps are cheap.
        self.claim_batch = claim_batch
        # Purge after each batch (drain()), or leave the models to purge in
        # ``pending_purges`` for a job of their own (the service), so that a
        # purge never delays the next model's step.
        self.purge_after_batch = True
        self.pending_purges: set[int] = set()
        # where the service writes signed chain checkpoints; certificates name the newest
        self.checkpoints: Path | None = None
        self._pending_lock = threading.Lock()
        self.stopping = threading.Event()
        self.current: list[Claim] = []  # the batch being worked on
        # called as on_step(strategy, kind, seconds) after each applied step (metrics)
        self.on_step: Callable[[str, str, float], None] | None = None
        # Models kept loaded between steps (by model id: their version's digest and the strategy) and
        # probe sets kept read (by digest), each bounded in bytes, least recently used out first:
        # ``state_cache_bytes`` / ``probe_cache_bytes``, or $LIFECYCLE_STATE_CACHE_BYTES /
        # $LIFECYCLE_PROBE_CACHE_BYTES (defaults: 1 GiB and 256 MiB; 0 keeps nothing).
        self._cache = LruBytes(_cache_limit(state_cache_bytes, "LIFECYCLE_STATE_CACHE_BYTES", 1 << 30,
                                            "state_cache_bytes"))
        self._probes = LruBytes(_cache_limit(probe_cache_bytes, "LIFECYCLE_PROBE_CACHE_BYTES", 256 << 20,
                                             "probe_cache_bytes"))

    def drain(self, model_id: int | None = None, max_steps: int | None = None) -> list[Request]:
        done: list[Request] = []
        if not self.executor.ready():
            # claim nothing: the requests stay queued, untouched, for a worker that can run them
            log.warning("the executor %r is not available; claiming nothing", self.executor)
            return done
        while not self.stopping.is_set() and (max_steps is None or len(done) < max_steps):
            limit = self.claim_batch if max_steps is None else min(self.claim_batch, max_steps - len(done))
            batch = self.run_batch(model_id, limit)
            if not batch:
                break
            done.extend(batch)
        return done

    def run_batch(self, model_id: int | None = None, limit: int | None = None) -> list[Request]:
        """Claim up to ``limit`` requests (one per model), apply them in turn, commit them together.

        Returns the requests whose steps ran, as the ledger has them now. A
        worker told to stop mid-batch hands the requests it has not started
        back to the queue.
        """
        claims = self.ledger.queue.claim_many(self.owner, self.lease_seconds, limit=limit or self.claim_batch,
                                        model_id=model_id)
        if not claims:
            return []
        self.current = list(claims)
        stop_beat = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(claims, stop_beat), daemon=True)
        beat.start()
        steps: list[_Step] = []
        applied: list[_Step] = []
        try:
            try:
                for claim in claims:
                    if self.stopping.is_set():
                        break
                    steps.append(self._step(claim))
            except Exception:
                # Commit what ran. The request whose step raised keeps its
                # lease until it runs out, so max_attempts still bounds retries.
                self._commit(steps)
                self._release(claims[len(steps) + 1:], "an earlier step of the batch raised")
                raise
            applied = self._commit(steps)
            self._release(claims[len(steps):], "the worker is stopping")
        finally:
            stop_beat.set()
            beat.join()
            self.current = []
        # Purges run after the batch, off the leases, or in the service's own job.
        models = {step.result.claim.model.id: step.result.claim.model for step in applied}
        if self.purge_after_batch:
            for model in models.values():
                self.purge(model)
        else:
            with self._pending_lock:
                self.pending_purges |= set(models)
        forgets = [step for step in applied if step.result.claim.request.kind == RequestKind.FORGET]
        for step in forgets:
            self._schedule_retrain(step.result.claim.model, step.strategy)
        if forgets:
            self._refresh_erasures([step.result.claim.request.id for step in forgets])
        return [self.ledger.request(claim.request.id) for claim in claims[:len(steps)]]

    def _refresh_erasures(self, forget_ids: list[str]) -> None:
        """Bring the person-level erasures these forgets belong to up to date now (their
        completion callbacks go out without waiting for the service's periodic refresh,
        which still catches any this misses)."""
        store = Erasures(self.ledger)
        try:
            for erasure_id in store.open_ids_of(forget_ids):
                store.refresh(erasure_id)
        except SQLAlchemyError:
            log.exception("could not refresh the erasures of forgets %s", ", ".join(forget_ids))

    def _release(self, claims: list[Claim], why: str) -> None:
        for claim in claims:
            try:
                self.ledger.queue.release(claim, why)
            except LeaseLost:
                pass

    def maintain(self) -> None:
        """Upkeep: re-queue expired leases (a failed learn's data is erased),
        finish purges a crash interrupted."""
        for rid, freed in self.ledger.queue.requeue_expired(self.max_attempts):
            log.info("request %s: its lease expired", rid, extra={"request_id": rid})
            purge.discard(self.ledger, self.vault, freed)
        for m in self.ledger.models():
            self.purge(m)

    def _heartbeat(self, claims: list[Claim], stop: threading.Event) -> None:
        held = list(claims)
        while held and not stop.wait(self.lease_seconds / 3):
            for claim in list(held):
                try:
                    if not self.ledger.queue.renew(claim, self.lease_seconds):
                        log.warning("lease taken over; the step's commit will be refused",
                                    extra={"request_id": claim.request.id})
                        held.remove(claim)
                except Exception as exc:  # the database may be restarting: keep trying until the batch ends
                    log.warning("could not renew the lease: %s", exc, extra={"request_id": claim.request.id})

    # ---- one step ------------------------------------------------------------

    def _step(self, claim: Claim) -> _Step:
        """Apply one claimed request and verify the result; commits nothing."""
        model, req = claim.model, claim.request
        spec = strategies.get(model.strategy)
        ctx = {"request_id": req.id, "model": model.name}
        try:
            context = self.ledger.step_context(claim)
            base, base_no, tasks = context.base, context.base_version, context.tasks
            log.info("applying %s to %s v%d (attempt %d)", req.kind, model.name, base_no, claim.attempt, extra=ctx)
            started = time.perf_counter()
            forgotten, forgotten_data = [], None
            if req.kind == RequestKind.REPAIR:
                strategy, forgotten = self._repair(claim, base)
                task_states, forgotten_now = {}, set()
                # probe sets the repair drops are not read again
                tasks = {n: replace(t, probe_digest=None) if n in req.target.get("drop_probes", ()) else t
                         for n, t in tasks.items()}
            else:
                strategy = self._strategy(model, base)
            if req.kind == RequestKind.LEARN:
                task_states, forgotten_now = self._learn(claim, strategy, context), set()
            elif req.kind == RequestKind.RETRAIN:
                task_states, forgotten_now = self._retrain(claim, strategy), set()
            elif req.kind == RequestKind.FORGET:
                forgotten, forgotten_data = self._forget(claim, strategy, spec.tags, context)
                task = req.target.get("task")
                task_states, forgotten_now = {}, ({task} if task is not None else set())
            step_seconds = time.perf_counter() - started
            checked = self.verify(model, spec.tags, strategy, tasks, task_states, forgotten_now, base_no + 1)
        except Rejected as exc:
            log.info("rejected: %s", exc, extra=ctx)
            return _Step(StepResult(claim, RequestStatus.REJECTED, error=str(exc) or "rejected"))
        except (ExecutorLost, StorageUnavailable) as exc:
            return self._hand_back(claim, exc, ctx)
        except (ArtifactCorrupt, ArtifactMissing) as exc:
            if req.kind == RequestKind.REPAIR:
                why = f"the repair could not read what it needs: {exc}"
                return _Step(StepResult(claim, RequestStatus.FAILED, error=why))
            # nothing queued is failed for a storage fault: the model waits, quarantined, for a repair
            log.error("quarantined %s: %s; run: lifecycle repair %s", model.name, exc, model.name, extra=ctx)
            self.ledger.queue.quarantine(claim, f"{exc}")
            return _Step(None)
        except DATABASE_UNREACHABLE:
            # The ledger went away mid-step (a restart, a failover): nothing of the step is kept and
            # nothing can be recorded now. The request keeps its lease until it runs out and is then
            # queued again, its attempt counted, as if this worker had died.
            log.warning("the ledger did not answer during the step; the request goes back to the queue when its "
                        "lease runs out", extra=ctx)
            raise
        except Exception as exc:  # a strategy failure must not take the worker down
            log.exception("step failed", extra=ctx)
            return _Step(StepResult(claim, RequestStatus.FAILED, error=f"{type(exc).__name__}: {exc}"))
        evaluations, findings = checked.evaluations, checked.findings
        removed = [s.sample_id for s in forgotten]
        try:
            digest = self.vault.put_blob(arrays.pack(strategy.state_dict()))
        except StorageUnavailable as exc:
            return self._hand_back(claim, exc, ctx)
        cert = None
        if req.kind == RequestKind.FORGET:
            provenance = (strategy.verify_forgotten(context.tombstones | frozenset(removed))
                          if spec.tags.provenance else None)
            cert = self.signer.sign(certificates.build(
                claim, tags=spec.tags, version_before=base_no, removed_ids=removed, evaluations=evaluations,
                findings=findings, forgotten_tasks=sorted(forgotten_now), applied_at=self.ledger.clock().isoformat(),
                data_touched={"nothing": "none", "forget data": "the forgotten samples' stored data only",
                              "ids only": "the forgotten samples' ids only"}[spec.tags.forget_needs],
                audit_anchor=claim.audit_anchor,
                membership=self._membership(model, spec.tags, strategy, tasks, forgotten, forgotten_data),
                provenance=provenance,
                gate=checked.gate,
                notes=strategy.certificate_notes(),
                forgotten_probes=model.forgotten_probes,
                checkpoint=checkpoints.latest(self.checkpoints),
                encoder=certificates.encoder_declaration(model),
                text_digest=self.ledger.ids.text,
            ))
        outcome = StepOutcome(
            artifact_digest=digest,
            step_seconds=step_seconds,
            evaluations=evaluations,
            findings=findings,
            forgotten_sample_ids=removed,
            task_states=task_states,
            certificate=cert,
            tasks_forgotten={t: next(e.accuracy for e in evaluations if e.task == t) for t in forgotten_now},
        )
        return _Step(StepResult(claim, RequestStatus.APPLIED, base_version=base_no, outcome=outcome), strategy)

    def _hand_back(self, claim: Claim, exc: ExecutorLost | StorageUnavailable, ctx: dict) -> _Step:
        """A step that lost its executor or could not reach the artifact store applied nothing:
        the strategy it changed is dropped (it was taken out of the cache) and the request goes
        back to the queue, to run again from the stored state as often as a worker that died would
        have it; the error is raised again to end the drain. In its last attempt it fails."""
        what = "the executor was lost" if isinstance(exc, ExecutorLost) else "the artifact store did not answer"
        if claim.attempt >= self.max_attempts:
            log.error("%s in the last attempt: %s", what, exc, extra=ctx)
            return _Step(StepResult(claim, RequestStatus.FAILED,
                                    error=f"{what} in each of {claim.attempt} attempts: {exc}"))
        log.warning("%s: %s; the request goes back to the queue", what, exc, extra=ctx)
        self._release([claim], f"{what}: {exc}")
        raise exc

    def _commit(self, steps: list[_Step]) -> list[_Step]:
        """Commit a batch's steps together; return the applied ones."""
        steps = [step for step in steps if step.result is not None]
        committed = self.ledger.queue.commit_steps([step.result for step in steps])
        applied = []
        for step, done in zip(steps, committed):
            claim = step.result.claim
            model, req = claim.model, claim.request
            ctx = {"request_id": req.id, "model": model.name}
            if done.lost is not None:
                log.warning("lost the lease: %s", done.lost, extra=ctx)
                if step.result.outcome is not None:
                    purge.discard(self.ledger, self.vault, [step.result.outcome.artifact_digest])
                continue
            purge.discard(self.ledger, self.vault, done.freed)
            if done.version is None:
                continue
            applied.append(step)
            outcome = step.result.outcome
            self._cache.put(model.id, (outcome.artifact_digest, step.strategy),
                            max(footprint(step.strategy), self.vault.artifacts.size(outcome.artifact_digest)))
            log.info("applied -> %s v%d in %.3f s", model.name, done.version.version, outcome.step_seconds,
                     extra={**ctx, "version": done.version.version, "step_seconds": outcome.step_seconds})
            if self.on_step is not None:
                self.on_step(model.strategy, req.kind, outcome.step_seconds)
        return applied

    def _strategy(self, model: Model, version: ModelVersion | None) -> strategies.Strategy:
        # Taken out of the cache: the step changes it in place, and only a
        # committed step puts it back under its new version's digest.
        cached = self._cache.pop(model.id, None)
        if cached is not None and version is not None and cached[0] == version.artifact_digest:
            strategy = cached[1]
        else:
            strategy = load_strategy(self.vault, model, version)
        strategy.executor = self.executor
        return strategy

    def _learn(self, claim: Claim, strategy, context: StepContext) -> dict[str, str]:
        name = claim.request.target["task"]
        ids = context.learn_ids
        # read a block at a time straight into X (float32, the one full copy of the rows this step makes)
        X, y = self.vault.rows(claim.payload_digest, range(len(ids)), ids)
        strategy.learn(strategies.TaskData(name, X, y, tuple(ids)))
        state = context.tasks[name].state
        return {name: TaskState.RELEARNED if state in (TaskState.FORGOTTEN, TaskState.RELEARNED) else TaskState.LEARNED}

    def _retrain(self, claim: Claim, strategy) -> dict[str, str]:
        """Apply an internal retrain request: rebuild every part the strategy reports
        as needing it now, from the retained samples' stored data (tombstoned
        samples are not active, and their data is purged)."""
        for plan in (strategy.retrain_plan() if strategy.tags.background_retrain else []):
            found = self.ledger.samples(claim.model.id, plan.sample_ids)
            missing = [sid for sid in plan.sample_ids if sid not in found or found[sid].status != SampleStatus.ACTIVE]
            if missing:
                raise RuntimeError(f"retrain of unit {plan.unit}: {len(missing)} sample(s) are not active in "
                                   f"the ledger, e.g. {missing[0]!r}")
            X, y = self._sample_data([found[sid] for sid in plan.sample_ids]) if plan.sample_ids else (
                np.zeros((0, claim.model.n_features), np.float32), np.zeros(0, np.int64))
            strategy.retrain(plan, strategies.TaskData("retrain", X, y, tuple(plan.sample_ids)))
        return {}

    def _repair(self, claim: Claim, base: ModelVersion | None):
        """Apply a repair: rebuild the state from the retained data where the
        strategy is exact (the rows of unreadable data files are then lost and
        tombstoned), or carry the readable state over; unreadable probe sets
        are dropped when the step commits. Returns the strategy and the lost samples."""
        model, target = claim.model, claim.request.target
        if not target.get("rebuild"):
            return self._strategy(model, base), []
        strategy = build_strategy(self.vault, model)  # behind its encoder, if it has one
        strategy.executor = self.executor
        lost_files = set(target.get("lost_files", ()))
        lost, by_task = [], defaultdict(list)
        for digest, samples in self.ledger.data_files(model.id).items():
            if digest in lost_files:
                lost += samples
            else:
                for sample in samples:
                    by_task[sample.task].append(sample)
        for task in [t.name for t in self.ledger.tasks(model.id) if t.name in by_task]:
            X, y = self._sample_data(by_task[task])
            strategy.learn(strategies.TaskData(task, X, y, tuple(s.sample_id for s in by_task[task])))
        return strategy, lost

    def _schedule_retrain(self, model: Model, strategy) -> None:
        """After a forget: enqueue a retrain request when the strategy has parts left unusable."""
        plans = strategy.retrain_plan() if strategy.tags.background_retrain else []
        if not plans:
            return
        units = [p.unit for p in plans]
        req = self.ledger.submit_retrain(model.id, units=units,
                                         reason=f"{model.strategy}: unit(s) {units} need a retrain after a forget")
        if req is not None:
            log.info("scheduled retrain %s of unit(s) %s", req.id, units, extra={"model": model.name})

    def _forget(self, claim: Claim, strategy, tags, context: StepContext):
        """Apply a forget; returns the samples removed and their data when it was loaded."""
        task = claim.request.target.get("task")
        if task is not None and not context.tasks[task].state.learned:
            raise Rejected(f"task {task!r} is {context.tasks[task].state}: there is nothing learned to forget")
        samples = context.samples
        data = None
        if tags.forget_needs == "forget data" and samples:
            data = self._sample_data(samples)
        X, y = data if data is not None else (None, None)
        strategy.forget(strategies.ForgetSet(tuple(s.sample_id for s in samples), task=task, X=X, y=y,
                                             tasks=tuple(s.task for s in samples)))
        return samples, data

    def _sample_data(self, samples: list[Sample]) -> tuple[np.ndarray, np.ndarray]:
        by_blob: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(samples):
            if s.data_digest is None:
                raise RuntimeError(f"sample {s.sample_id!r} has no stored data left to forget with")
            by_blob[s.data_digest].append(i)
        X, y = None, np.empty(len(samples), np.int64)
        for digest, positions in by_blob.items():
            if X is None:
                shape = self.vault.row_shape(digest)
                X = np.empty((len(samples), shape[1] if shape else 0), np.float32)
            # decrypted straight into place: no per-file copy of the rows, nor of the file
            self.vault.rows_into(digest, [samples[i].data_row for i in positions],
                                 [samples[i].sample_id for i in positions], X, y, positions)
        return (X if X is not None else np.empty((0, 0), np.float32)), y

    def verify(self, model, tags, strategy, tasks, task_states, forgotten_now, version: int) -> Verification:
        """Evaluate every task's probe set at ``version`` and run the relapse check."""
        evaluations, watch, just_forgotten, gates, retained = [], [], [], {}, []
        for name, task in tasks.items():
            state = task_states.get(name, task.state)
            if name in forgotten_now:
                state = TaskState.FORGOTTEN
            if state == TaskState.PENDING or task.probe_digest is None:
                continue
            try:
                Xp, yp = self._probe(task.probe_digest)
            except Erased:
                continue  # a forgotten task's probe set, purged by the model's policy while this step ran
            acc = float(np.mean(strategy.predict(Xp, task=name) == yp))
            role = Role.FORGOTTEN if state == TaskState.FORGOTTEN else Role.RETAINED
            c = chance(model, task, tags)
            evaluations.append(Evaluation(0, name, role, acc, c, len(yp)))
            weights = strategy.gate_weights(Xp) if tags.gated else None
            if weights is not None:
                gates[name] = (role, float(np.mean(np.asarray(weights) >= 0.5)))
            if role == Role.RETAINED:
                retained.append(relapse_check.Retained(name, acc, c))
            if role == Role.FORGOTTEN and name not in forgotten_now:
                watch.append(relapse_check.Forgotten(name, task.forgotten_at_version, task.acc_at_forget,
                                                     task.peak_since_forget or task.acc_at_forget, acc, c))
            elif role == Role.FORGOTTEN:
                just_forgotten.append(relapse_check.Forgotten(name, version, acc, acc, acc, c))
        findings = relapse_check.findings(watch, model.relapse_threshold)
        gate = relapse_check.gate_report(gates, model.max_false_activation) if gates else None
        if gates:
            # a gate that misses the task it has just forgotten is as much a relapse as a later miss
            findings += relapse_check.gate_misses(watch + just_forgotten, gates, strategy.gate_recall_floor,
                                                  {f["task"] for f in findings})
            # and one that fires on retained tasks' inputs suppresses what the model keeps
            since = max((t.forgotten_at_version for t in watch + just_forgotten), default=None)
            findings += relapse_check.gate_false_activations(retained, gates, model.max_false_activation, since)
        return Verification(evaluations, findings, gate)

    def _membership(self, model, tags, strategy, tasks, forgotten: list[Sample], data) -> dict | None:
        """Membership-inference AUC of the forgotten samples against unseen probe samples of their classes.

        Runs before the purge, on data the ledger still holds, whatever the
        strategy itself needed to forget. A failure here is recorded, not raised:
        the step has been applied and must still commit.
        """
        if not forgotten:
            return None
        try:
            X, y = data if data is not None else self._sample_data(forgotten)
            if len(y) > MIA_MAX_MEMBERS:
                keep = np.random.default_rng(0).choice(len(y), MIA_MAX_MEMBERS, replace=False)
                X, y = X[keep], y[keep]
            labels = np.unique(y)
            probes = [self._probe(tasks[t].probe_digest) for t in sorted({s.task for s in forgotten})
                      if tasks[t].probe_digest is not None]
            Xn = np.concatenate([p[0][np.isin(p[1], labels)] for p in probes]) if probes else X[:0]
            yn = np.concatenate([p[1][np.isin(p[1], labels)] for p in probes]) if probes else y[:0]
            if len(yn) == 0:
                return {"skipped": "no unseen probe samples of the forgotten classes"}
            task_ids = {s.task for s in forgotten}
            task = next(iter(task_ids)) if tags.needs_task_id and len(task_ids) == 1 else None
            result = mia.membership_auc(strategy, (X, y), (Xn, yn), task=task)
        except Exception as exc:
            log.warning("membership inference failed: %s", exc, extra={"model": model.name})
            return {"error": f"{type(exc).__name__}: {exc}"}
        return {"auc": result.auc, "attack": result.score, "members": result.n_members,
                "nonmembers": result.n_nonmembers}

    def _probe(self, digest: str) -> tuple[np.ndarray, np.ndarray]:
        found = self._probes.get(digest)
        if found is None:
            found = self.vault.rows(digest)
            self._probes.put(digest, found, found[0].nbytes + found[1].nbytes)
        return found

    # ---- purging -------------------------------------------------------------

    def purge_pending(self) -> None:
        """Purge the models whose steps this worker committed since the last call."""
        with self._pending_lock:
            model_ids, self.pending_purges = self.pending_purges, set()
        for model_id in sorted(model_ids):
            self._purge(model_id)

    def purge(self, model: Model) -> None:
        """Erase what the model may no longer keep (see ``lifecycle.purge``).

        Idempotent: a purge a crash interrupted is finished by the next one,
        and one that another thread or worker is running is left to it.
        """
        self._purge(model.id)

    def _purge(self, model_id: int) -> None:
        purge.purge_model(self.ledger, self.vault, model_id, self.owner)
        self._probes.keep(self.vault.exists)


# ---- the worker's caches ---------------------------------------------------------


class LruBytes:
    """A mapping bounded by the bytes of its values, least recently used out first.
    A value larger than the whole limit is not kept at all."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.bytes = 0
        self._items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Any) -> bool:
        return key in self._items

    def get(self, key: Any, default: Any = None) -> Any:
        with self._lock:
            if key not in self._items:
                return default
            self._items.move_to_end(key)
            return self._items[key][0]

    def pop(self, key: Any, default: Any = None) -> Any:
        with self._lock:
            if key not in self._items:
                return default
            value, size = self._items.pop(key)
            self.bytes -= size
            return value

    def put(self, key: Any, value: Any, size: int) -> None:
        with self._lock:
            if key in self._items:
                self.bytes -= self._items.pop(key)[1]
            if size > self.limit:
                return
            self._items[key] = (value, size)
            self.bytes += size
            while self.bytes > self.limit:
                _, (_, dropped) = self._items.popitem(last=False)
                self.bytes -= dropped

    def keep(self, wanted: Callable[[Any], bool]) -> None:
        """Drop the entries whose key ``wanted`` refuses."""
        with self._lock:
            for key in [k for k in self._items if not wanted(k)]:
                self.bytes -= self._items.pop(key)[1]


def _cache_limit(value: int | None, env: str, default: int, what: str) -> int:
    if value is None:
        text = os.environ.get(env)
        try:
            value = int(text) if text is not None else default
        except ValueError:
            raise InvalidConfig(f"${env} must be a whole number of bytes, not {text!r}") from None
        what = f"${env}"
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidConfig(f"{what} must be a whole number of bytes (0 keeps nothing), not {value!r}")
    return value


def footprint(obj: Any) -> int:
    """Bytes held by the arrays and tensors an object (a strategy) refers to, a few levels deep."""
    torch = sys.modules.get("torch")
    seen: set[int] = set()

    def size(value: Any, depth: int) -> int:
        if id(value) in seen or depth > 4 or isinstance(value, (type, types.ModuleType, types.FunctionType,
                                                                   types.MethodType)):
            return 0
        seen.add(id(value))
        if isinstance(value, np.ndarray):
            return value.nbytes if value.base is None or id(value.base) not in seen else 0
        if torch is not None and isinstance(value, torch.Tensor):
            return value.element_size() * value.nelement()
        if torch is not None and isinstance(value, torch.nn.Module):
            return sum(size(t, depth + 1) for t in (*value.parameters(), *value.buffers()))
        if isinstance(value, dict):
            return sum(size(v, depth + 1) for v in value.values())
        if isinstance(value, (list, tuple, set, frozenset)):
            return sum(size(v, depth + 1) for v in value)
        if hasattr(value, "__dict__") and not isinstance(value, type):
            return sum(size(v, depth + 1) for v in vars(value).values())
        return 0

    return size(obj, 0)
