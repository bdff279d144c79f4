"""Audit verify at scale, and what the row digests in the audit chain add to a step.

    .venv/bin/python bench/audit_verify.py --quick          # ledgers of 2,000 and 20,000 requests, 20 pairs
    .venv/bin/python bench/audit_verify.py                  # 10,000 and 100,000 requests, 40 pairs
    .venv/bin/python bench/audit_verify.py --postgres       # part 1 on a throwaway PostgreSQL server
    .venv/bin/python bench/audit_verify.py --skip-overhead  # part 1 only (--skip-scale: part 2 only)

Part 1, the time ``lifecycle audit verify`` takes (``Ledger.audit_problems``:
every model's chain walked and hashed, then replayed against every table) as
the ledger grows. One ledger (SQLite in a temporary folder by default,
``--postgres`` for a throwaway server from ``lifecycle/testing/postgres.py``) is built up
to each size of ``--sizes`` in turn (10,000 then 100,000 requests; 2,000 then
20,000 with ``--quick``); at each size but the last a page-for-page copy is
kept (SQLite: the file after a checkpoint; PostgreSQL: CREATE DATABASE ...
TEMPLATE). Then every size is verified ``--repeats`` (3) times, the sizes
interleaved so that a change in the machine's load hits them alike, each
run on a fresh connection with the product's own engine settings; the
figure is the median wall time (CPU time and Python's full garbage
collections during the run are shown too). Target: verify linear in the
ledger, i.e. the largest size's time within 1.2x its share of the
smallest's (12x for 10k -> 100k). The untouched ledger must verify with no
problem at every size; as a positive control, one sample's label is then
changed behind the ledger's back at the smallest size and verify must name
the samples table. For information, one more run per size splits the time
(reading the tables, hashing the chain, the replay, the rest) and one runs
with Python's cyclic garbage collector off.

A ledger of 100,000 requests is too slow to build through real strategy
steps on a small machine, so it is built through the ledger's own writers,
as a worker would drive them, with no strategy in between:
``Ledger.submit_learn`` / ``submit_forget`` (and ``cancel`` and
``extend_deadline``), then ``claim_many`` over every model at once and one
``commit_steps`` with a ``StepResult`` per claim. Each outcome carries what a
real step's does (a state digest, step seconds, an evaluation per task
learned so far, the task state a learn sets, the forgotten sample ids, and
for a forget a deletion certificate built by ``lifecycle.certificates`` and
signed by the ledger's signer), so every event records the same row digests
a real step writes. Identifiers are the ledger's own keyed digests
(``IdKey``). The models (``--models``, 20, strategy ``analytic``) are
created through the API. Each round submits one request per model and then
claims and commits them together; the mix per request is about 87 % learns
of ``--min-samples``..``--max-samples`` (5..10) samples to one of 3 tasks
(70 % of the samples carry a subject, one subject spans ~20 learns), 4.5 %
forgets of 1..5 active samples, 4 % subject forgets (tombstones, with
content digests), 2 % learns whose step fails, 1 % learns and 1 % forgets
cancelled while queued, 0.5 % forgets the step rejects; one forget in 20
has its deadline extended. Requests are counted whatever their end. On
SQLite the building connections skip the fsync per commit (PRAGMA
synchronous=OFF); the verifying ones do not.

Part 2, the cost the wider hashing adds to one real step, side by side, in
this process on SQLite: a fresh ledger per arm (reused across pairs), the
real ``Lifecycle`` with strategy ``analytic`` (64 features, width 128), and
``--pairs`` (40; 20 with ``--quick``) alternating A/B pairs of a 500-row
``lc.learn`` + ``lc.drain()`` and of a 50-sample ``lc.forget`` +
``lc.drain()`` (the purge included), each timed from submit to drained. A is
the code as it is; B is a bench-local baseline in which the functions of
``store.row_digests`` (request, samples, tombstones, evaluations, findings,
certificate; the keyed digest of free text is left in both arms) are swapped, in this process only and for the B runs
only, for ones that return constants (the events then record those
constants). The figure is the median of the paired ratios A/B; target: under
5 % added to a step. For information, the time spent inside the row-digest
functions is also measured directly on a few extra A steps, and the A ledger
(real worker steps, purges included) must verify with no problem. BLAS
runs on one thread (unless ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` say
otherwise): on a small shared machine a threaded BLAS makes step times swing
by tens of percent, far more than what is measured here.

``LIFECYCLE_ID_KEY`` and ``LIFECYCLE_SIGNING_KEY`` point into the temporary
folder, so nothing is written to the home directory. Temporary folders and
the PostgreSQL server are removed at the end, also on Ctrl-C or SIGTERM
(unless ``--keep``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import hashlib
import logging
import os
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# one BLAS thread: on a small shared machine a threaded BLAS makes step times swing far more than the
# digests could move them (set these variables to override)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from sqlalchemy import event, func, select, update  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

import lifecycle  # noqa: E402
from lifecycle import strategies  # noqa: E402
from lifecycle import certificates  # noqa: E402
from lifecycle.store import ledger as ledger_module  # noqa: E402
from lifecycle.store import audit as audit_module  # noqa: E402
from lifecycle.store import ledger_audit, row_digests  # noqa: E402
from lifecycle.store.clock import utcnow  # noqa: E402
from lifecycle.store.records import Evaluation, RequestKind, RequestStatus, StepOutcome, StepResult  # noqa: E402
from lifecycle.store.schema import (  # noqa: E402
    CertificateRow,
    EvaluationRow,
    EventRow,
    ModelVersionRow,
    RequestRow,
    SampleRow,
    TaskRow,
    TombstoneRow,
)

N_TASKS = 3  # tasks per model in the built ledger
BUILD_FEATURES, BUILD_CLASSES = 8, 4
PROBE_ROWS = 50  # the n of the built evaluations
STEP_FEATURES, STEP_CLASSES, STEP_WIDTH = 64, 10, 128  # part 2's model
STEP_PROBE_ROWS = 200
DIGEST_FUNCTIONS = ("request", "samples", "tombstones", "evaluations", "findings", "certificate")


def say(line: str = "") -> None:
    print(line, flush=True)


def size_label(n: int) -> str:
    return f"{n / 1000:g}k" if n >= 1000 else str(n)


def hexdigest(*parts) -> str:
    return hashlib.sha256("/".join(str(p) for p in parts).encode()).hexdigest()


# ---------------------------------------------------------------- part 1: building a large ledger


@dataclass
class ModelState:
    """What the builder keeps in memory of one model, to choose its next request."""

    model: object  # store.records.Model
    version: int = 0
    learns: int = 0
    tasks: set = field(default_factory=set)  # task rows that exist (a probe was given)
    learned: set = field(default_factory=set)  # tasks some applied learn reached
    active: list = field(default_factory=list)  # active sample ids (indexable, for random picks)
    where: dict = field(default_factory=dict)  # sample id -> index in active
    subject_of: dict = field(default_factory=dict)  # active sample id -> subject digest (or None)
    by_subject: dict = field(default_factory=dict)  # subject digest -> set of active sample ids

    def add(self, sid: str, subject: str | None) -> None:
        self.where[sid] = len(self.active)
        self.active.append(sid)
        self.subject_of[sid] = subject
        if subject is not None:
            self.by_subject.setdefault(subject, set()).add(sid)

    def remove(self, sid: str) -> None:
        i = self.where.pop(sid)
        last = self.active.pop()
        if last != sid:
            self.active[i] = last
            self.where[last] = i
        subject = self.subject_of.pop(sid)
        if subject is not None:
            left = self.by_subject[subject]
            left.discard(sid)
            if not left:
                del self.by_subject[subject]


@dataclass
class Plan:
    """How the builder will end a submitted request when it is claimed."""

    state: ModelState
    kind: str  # learn | forget
    end: str  # applied | failed | rejected
    task: str | None = None
    samples: list = field(default_factory=list)  # (sample id, subject digest) a learn brings
    forgotten: list = field(default_factory=list)  # sample ids a forget removes


# share of each kind of request in the built ledger (forgets fall back to learns while nothing is active)
MIX = (("learn", 0.87), ("learn_failed", 0.02), ("learn_cancelled", 0.01), ("forget_samples", 0.045),
       ("forget_subject", 0.04), ("forget_rejected", 0.005), ("forget_cancelled", 0.01))


class Builder:
    """Grows a ledger through ``Ledger``'s own writers, one request per model per round."""

    def __init__(self, lc, n_models: int, min_samples: int, max_samples: int, seed: int) -> None:
        self.lc = lc
        self.ledger = lc.ledger
        self.rng = np.random.default_rng(seed)
        self.min_samples, self.max_samples = min_samples, max_samples
        self.tags = strategies.get("analytic").tags
        self.owner = f"bench-builder:{os.getpid()}"
        self.states = []
        for i in range(n_models):
            m = lc.create_model(f"audit-{i:02d}", strategy="analytic", n_features=BUILD_FEATURES,
                                n_classes=BUILD_CLASSES, config={"width": 16})
            self.states.append(ModelState(m))
        self.kinds = [k for k, _ in MIX]
        self.weights = np.array([w for _, w in MIX]) / sum(w for _, w in MIX)
        self.subjects: dict[str, str] = {}
        self.submitted = 0
        self.counts = Counter()
        self.plans: dict[str, Plan] = {}

    def subject(self, name: str) -> str:
        if name not in self.subjects:
            self.subjects[name] = self.lc.ids.subject(name)
        return self.subjects[name]

    # ---- submitting

    def submit(self, st: ModelState) -> None:
        kind = self.kinds[self.rng.choice(len(self.kinds), p=self.weights)]
        if kind.startswith("forget") and not st.active:
            kind = "learn"
        if kind == "forget_subject" and not st.by_subject:
            kind = "forget_samples"
        if kind.startswith("learn"):
            self.submit_learn(st, kind)
        else:
            self.submit_forget(st, kind)
        self.submitted += 1
        self.counts[kind] += 1

    def submit_learn(self, st: ModelState, kind: str) -> None:
        rng, m = self.rng, st.model
        st.learns += 1
        n = int(rng.integers(self.min_samples, self.max_samples + 1))
        task = f"t{int(rng.integers(N_TASKS))}"
        X = rng.random((n, BUILD_FEATURES), dtype=np.float32)
        labels = rng.integers(0, BUILD_CLASSES, n).tolist()
        ids = [self.lc.ids.sample(f"{m.name}/{st.learns}/{j}") for j in range(n)]
        subjects = [self.subject(f"{m.name}/subject-{st.learns // 20}-{int(rng.integers(3))}")
                    if rng.random() < 0.7 else None for _ in range(n)]
        new_task = task not in st.tasks
        req = self.ledger.submit_learn(
            m, task=task, classes=sorted(set(labels)),
            probe_digest=hexdigest("probe", m.name, task, st.learns) if new_task else None,
            payload_digest=hexdigest("data", m.name, st.learns), payload_sha=hexdigest("sha", m.name, st.learns),
            sample_ids=ids, labels=labels, subject_hashes=subjects, content_digests=self.lc.ids.rows(X),
            idempotency_key=f"learn-{st.learns}" if rng.random() < 0.5 else None,
            requested_by="bench-builder", reason="nightly batch" if rng.random() < 0.3 else None,
        )
        st.tasks.add(task)
        if kind == "learn_cancelled":
            self.cancel(st, req.id, task)
            return
        self.plans[req.id] = Plan(st, "learn", RequestStatus.FAILED if kind == "learn_failed" else RequestStatus.APPLIED, task=task,
                                  samples=list(zip(ids, subjects)))

    def submit_forget(self, st: ModelState, kind: str) -> None:
        rng, m = self.rng, st.model
        if kind == "forget_subject":
            subjects = list(st.by_subject)  # in order of first learn: the same picks whatever the id key
            subject = subjects[int(rng.integers(len(subjects)))]
            target = {"subject_hash": subject}
            forgotten = sorted(st.by_subject[subject], key=st.where.__getitem__)
        else:
            k = min(len(st.active), int(rng.integers(1, 6)))
            picks = rng.choice(len(st.active), size=k, replace=False)
            forgotten = [st.active[int(i)] for i in picks]
            target = {"samples": forgotten}
        received = utcnow()
        req = self.ledger.submit_forget(
            m, target=target, payload_sha=hexdigest("forget", m.name, uuid.uuid4()), received_at=received,
            due_at=received + dt.timedelta(days=m.forget_due_days),
            idempotency_key=f"forget-{uuid.uuid4().hex[:12]}" if rng.random() < 0.5 else None,
            requested_by="privacy desk" if rng.random() < 0.5 else None,
            reason="art. 17 request" if rng.random() < 0.5 else None,
        )
        if rng.random() < 0.05:
            extended = self.ledger.extend_deadline(req.id, req.due_at + dt.timedelta(days=30),
                                                   "complex request", "dpo")
            if extended is None:
                raise RuntimeError(f"extend_deadline refused the queued forget {req.id}")
        if kind == "forget_cancelled":
            self.cancel(st, req.id, None)
            return
        self.plans[req.id] = Plan(st, "forget", RequestStatus.REJECTED if kind == "forget_rejected" else RequestStatus.APPLIED,
                                  forgotten=forgotten)

    def cancel(self, st: ModelState, request_id: str, task: str | None) -> None:
        done = self.ledger.cancel(request_id)
        if done is None:
            raise RuntimeError(f"cancel refused the queued request {request_id}")
        if task is not None and task not in st.learned and self.ledger.task(st.model.id, task) is None:
            st.tasks.discard(task)  # the cancelled learn took its new task with it

    # ---- claiming and committing

    def outcome(self, claim, plan: Plan, version: int) -> StepOutcome:
        rng, st = self.rng, plan.state
        tasks = sorted(st.learned | ({plan.task} if plan.task else set()))
        evaluations = [Evaluation(0, t, "retained", float(rng.random()), 1.0 / BUILD_CLASSES, PROBE_ROWS)
                       for t in tasks]
        cert = None
        if plan.kind == RequestKind.FORGET:
            cert = self.lc.signer.sign(certificates.build(
                claim, tags=self.tags, version_before=version - 1, removed_ids=plan.forgotten,
                evaluations=evaluations, findings=[], forgotten_tasks=[], applied_at=utcnow().isoformat(),
                data_touched="the forgotten samples' stored data only", audit_anchor=claim.audit_anchor,
                membership={"auc": float(rng.random()), "attack": "loss", "members": len(plan.forgotten),
                            "nonmembers": PROBE_ROWS},
                provenance=None, gate=None, notes=[], forgotten_probes=claim.model.forgotten_probes,
                checkpoint=None, text_digest=self.lc.ids.text))
        return StepOutcome(
            artifact_digest=hexdigest("state", st.model.name, version),
            step_seconds=float(rng.uniform(0.01, 0.2)),
            evaluations=evaluations,
            forgotten_sample_ids=list(plan.forgotten),
            task_states={plan.task: "learned"} if plan.kind == RequestKind.LEARN else {},
            certificate=cert,
        )

    def drain_round(self) -> None:
        claims = self.ledger.queue.claim_many(self.owner, 600.0, limit=len(self.states))
        results = []
        for claim in claims:
            plan = self.plans[claim.request.id]
            if plan.end == RequestStatus.APPLIED:
                results.append(StepResult(claim, RequestStatus.APPLIED, base_version=plan.state.version,
                                          outcome=self.outcome(claim, plan, plan.state.version + 1)))
            else:
                results.append(StepResult(claim, plan.end, error=f"bench: the step ended {plan.end}"))
        committed = self.ledger.queue.commit_steps(results)
        for result, done in zip(results, committed):
            plan = self.plans.pop(result.claim.request.id)
            if done.lost is not None:
                raise RuntimeError(f"commit_steps lost request {done.request_id}: {done.lost}")
            st = plan.state
            if result.status != RequestStatus.APPLIED:
                if plan.kind == RequestKind.LEARN and plan.task not in st.learned \
                        and self.ledger.task(st.model.id, plan.task) is None:
                    st.tasks.discard(plan.task)
                continue
            st.version += 1
            if done.version is None or done.version.version != st.version:
                raise RuntimeError(f"request {done.request_id} committed as {done.version}, expected version "
                                   f"{st.version}")
            if plan.kind == RequestKind.LEARN:
                st.learned.add(plan.task)
                for sid, subject in plan.samples:
                    st.add(sid, subject)
            else:
                for sid in plan.forgotten:
                    st.remove(sid)
        if self.plans:
            raise RuntimeError(f"{len(self.plans)} request(s) were submitted but not claimed in their round")

    def grow_to(self, size: int, progress) -> None:
        while self.submitted < size:
            for st in self.states[: size - self.submitted]:
                self.submit(st)
            self.drain_round()
            progress(self.submitted)


def table_counts(lc) -> dict[str, int]:
    tables = {"requests": RequestRow, "events": EventRow, "samples": SampleRow, "tombstones": TombstoneRow,
              "versions": ModelVersionRow, "evaluations": EvaluationRow, "certificates": CertificateRow,
              "tasks": TaskRow}
    with lc.ledger.engine.connect() as conn:
        return {name: conn.execute(select(func.count()).select_from(t)).scalar() for name, t in tables.items()}


def status_counts(lc) -> dict[str, int]:
    out = Counter()
    for kind, status, n in lc.ledger.request_counts():
        out[f"{kind} {status}"] += n
    return dict(sorted(out.items()))


def db_bytes(url: str, lc) -> int:
    if url.startswith("sqlite"):
        path = Path(make_url(url).database)
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())
    with lc.ledger.engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar())


@contextmanager
def breakdown_probes(spent: dict[str, float]):
    """Time the parts of one verify: reading the events, the chain hashes, reading the tables, the replay.

    Wraps functions of our own modules in this process only, for one extra,
    untimed run; restores them on the way out.
    """
    originals = {
        (ledger_module, "_tables"): ledger_module._tables,
        (audit_module, "first_problem"): audit_module.first_problem,
        (ledger_audit, "first_row_problem"): ledger_audit.first_row_problem,
    }
    names = {"_tables": "read the tables", "first_problem": "walk and hash the chain",
             "first_row_problem": "replay against the tables"}

    def timed(fn, label):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - t
        return wrapper

    try:
        for (module, name), fn in originals.items():
            setattr(module, name, timed(fn, names[name]))
        yield
    finally:
        for (module, name), fn in originals.items():
            setattr(module, name, fn)


def snapshot(lc, url: str, size: int, root: Path, server) -> str:
    """A copy of the ledger as it is now, page for page, to verify beside the bigger one at the end
    (SQLite: the file after a checkpoint; PostgreSQL: CREATE DATABASE ... TEMPLATE)."""
    lc.ledger.engine.dispose()  # the pool reconnects when the builder goes on
    if server is None:
        src = Path(make_url(url).database)
        conn = sqlite3.connect(src)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        dst = root / f"ledger-{size}.db"
        shutil.copyfile(src, dst)
        wal = src.with_name(src.name + "-wal")
        if wal.exists() and wal.stat().st_size:
            shutil.copyfile(wal, dst.with_name(dst.name + "-wal"))
        return f"sqlite:///{dst}"
    import psycopg

    name = f"snap_{size}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres",
                         autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{make_url(url).database}"')
    return server.url(name)


def verify_once(lc) -> dict:
    """One ``audit_problems`` run: wall and CPU seconds, Python's full (gen 2) collections during it."""
    gc.collect()
    before = gc.get_stats()[2]["collections"]
    t, c = time.perf_counter(), time.process_time()
    checked, problems = lc.ledger.audit_problems()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    return {"wall": wall, "cpu": cpu, "gen2": gc.get_stats()[2]["collections"] - before, "checked": checked,
            "problems": [str(p) for p in problems]}


def tamper_control(lc) -> dict:
    """A positive control, so that a clean verify means something: change one
    active sample's label behind the ledger's back, verify (it must name the
    samples table), then put the label back."""
    engine = lc.ledger.engine
    with engine.begin() as conn:
        n = conn.execute(select(func.count()).select_from(SampleRow).where(SampleRow.status == "active")).scalar()
        pk, label = conn.execute(select(SampleRow.id, SampleRow.label).where(SampleRow.status == "active")
                                 .order_by(SampleRow.id).offset(n // 2).limit(1)).one()
        conn.execute(update(SampleRow).where(SampleRow.id == pk).values(label=label + 1))
    try:
        t = time.perf_counter()
        _, problems = lc.ledger.audit_problems()
        seconds = time.perf_counter() - t
    finally:
        with engine.begin() as conn:
            conn.execute(update(SampleRow).where(SampleRow.id == pk).values(label=label))
    return {"row": pk, "problems": [str(p) for p in problems], "seconds": seconds,
            "named": any(getattr(p, "table", None) == "samples" for p in problems)}


def scale(args, root: Path) -> dict:
    server = None
    opened = []
    try:
        if args.postgres:
            from lifecycle.testing.postgres import PostgresServer

            server = PostgresServer()
            if not server.available:
                sys.exit("PostgreSQL server binaries not found (Debian package 'postgresql')")
            server.start()
            url = server.new_database()
            backend = "PostgreSQL"
        else:
            url = f"sqlite:///{root / 'ledger.db'}"
            backend = "SQLite"
        artifacts = root / "ledger-artifacts"
        lc = lifecycle.connect(url, artifacts=artifacts, signing_key=root / "signing-key.pem",
                               id_key=root / "id-key")
        if server is None:
            # building only: no fsync per commit (the verifying connections below keep the product's settings)
            lc.ledger.engine.dispose()
            event.listen(lc.ledger.engine, "connect",
                         lambda dbapi_conn, _: dbapi_conn.execute("PRAGMA synchronous=OFF"))
        builder = Builder(lc, args.models, args.min_samples, args.max_samples, args.seed)
        say(f"part 1: verify time as the ledger grows, {backend}, {args.models} models, sizes "
            f"{', '.join(f'{s:,}' for s in args.sizes)} requests")
        began = time.monotonic()
        last = [began]

        def progress(n: int) -> None:
            now = time.monotonic()
            if now - last[0] >= args.progress:
                last[0] = now
                say(f"  build: {n:,}/{args.sizes[-1]:,} requests ({n / (now - began):.0f}/s, "
                    f"{now - began:.0f} s)")

        urls, built = {}, {}
        for size in args.sizes:
            builder.grow_to(size, progress)
            built[size] = time.monotonic() - began
            urls[size] = url if size == args.sizes[-1] else snapshot(lc, url, size, root, server)
            say(f"  ledger at {size:,} requests after {built[size]:.0f} s of building"
                + ("" if size == args.sizes[-1] else "; kept a copy to verify at the end"))
        lc.ledger.engine.dispose()

        # verify every size, interleaved, so that a change in the machine's load hits them alike
        sides = {}
        for size in args.sizes:
            sides[size] = lifecycle.connect(urls[size], create=False, artifacts=artifacts)
            opened.append(sides[size])
        runs = {size: [] for size in args.sizes}
        for i in range(args.repeats):
            for size in args.sizes:
                run = verify_once(sides[size])
                runs[size].append(run)
                say(f"  verify {size:,} run {i + 1}/{args.repeats}: {run['wall']:.2f} s (CPU {run['cpu']:.2f} s, "
                    f"{run['gen2']} full GCs), {run['checked']:,} events, {len(run['problems'])} problem(s)")
        results = []
        for size in args.sizes:
            side = sides[size]
            spent: dict[str, float] = {}
            t = time.perf_counter()
            with breakdown_probes(spent):
                side.ledger.audit_problems()
            total = time.perf_counter() - t
            spent["read the events and the rest"] = total - sum(spent.values())
            gc.disable()
            try:
                no_gc = verify_once(side)
            finally:
                gc.enable()
            rs = runs[size]
            results.append({
                "size": size, "built_s": built[size], "runs": rs,
                "median": statistics.median(r["wall"] for r in rs), "cpu": statistics.median(r["cpu"] for r in rs),
                "gen2": statistics.median(r["gen2"] for r in rs), "checked": rs[-1]["checked"],
                "problems": sorted({p for r in rs for p in r["problems"]}), "breakdown": spent,
                "breakdown_total": total, "no_gc": no_gc["wall"], "no_gc_problems": no_gc["problems"],
                "counts": table_counts(side), "statuses": status_counts(side), "bytes": db_bytes(urls[size], side)})
            say(f"  {size:,} requests: verify median {results[-1]['median']:.2f} s; one more run with Python's "
                f"cyclic GC off: {no_gc['wall']:.2f} s")
        control = tamper_control(sides[args.sizes[0]])
        say(f"  positive control at {args.sizes[0]:,}: one sample's label changed, verify found "
            f"{len(control['problems'])} problem(s) in {control['seconds']:.2f} s; label put back")
        return {"backend": backend, "results": results, "mix": dict(builder.counts), "control": control}
    finally:
        for side in opened:
            side.ledger.engine.dispose()
        if server is not None:
            server.stop()


def print_scale(args, res: dict) -> list[str]:
    say()
    say(f"audit verify on {res['backend']}: {args.models} models, learns of {args.min_samples}-{args.max_samples} "
        f"samples, {args.repeats} interleaved runs per size (median)")
    say("requested mix: " + ", ".join(f"{k} {n:,}" for k, n in sorted(res["mix"].items())))
    head = (f"{'requests':>9}{'events':>10}{'samples':>10}{'tombst.':>9}{'evals':>9}{'certs':>7}{'db MB':>8}"
            f"{'built s':>9}{'verify s':>10}{'min':>8}{'max':>8}{'CPU s':>8}{'full GCs':>9}{'GC off s':>9}"
            f"{'problems':>9}")
    say(head)
    say("-" * len(head))
    for r in res["results"]:
        c = r["counts"]
        walls = [x["wall"] for x in r["runs"]]
        say(f"{r['size']:>9,}{c['events']:>10,}{c['samples']:>10,}{c['tombstones']:>9,}{c['evaluations']:>9,}"
            f"{c['certificates']:>7,}{r['bytes'] / 1e6:>8.1f}{r['built_s']:>9.0f}{r['median']:>10.2f}"
            f"{min(walls):>8.2f}{max(walls):>8.2f}{r['cpu']:>8.2f}{r['gen2']:>9g}{r['no_gc']:>9.2f}"
            f"{len(r['problems']):>9}")
    for r in res["results"]:
        parts = ", ".join(f"{k} {v:.2f} s ({v / r['breakdown_total'] * 100:.0f} %)"
                          for k, v in sorted(r["breakdown"].items(), key=lambda kv: -kv[1]))
        say(f"  where {r['size']:,} goes (one extra run, {r['breakdown_total']:.2f} s): {parts}")
        say(f"  statuses at {r['size']:,}: " + ", ".join(f"{k} {n:,}" for k, n in r["statuses"].items()))
        for p in r["problems"][:5]:
            say(f"  PROBLEM at {r['size']:,}: {p}")
    lines = []
    clean = all(not r["problems"] and not r["no_gc_problems"] for r in res["results"])
    lines.append(f"untouched ledger verifies with no problem at every size: {'MET' if clean else 'NOT MET'} ("
                 + ", ".join(f"{r['size']:,}: {len(r['problems'])} problem(s)" for r in res["results"]) + ")")
    c = res["control"]
    lines.append(f"positive control (one sample's label changed at {res['results'][0]['size']:,} requests, then "
                 f"put back): verify names the samples table: {'MET' if c['named'] else 'NOT MET'} ("
                 + ("; ".join(c["problems"]) or "no problem found") + ")")
    small, big = res["results"][0], res["results"][-1]
    if big["size"] > small["size"]:
        growth = big["size"] / small["size"]
        bound = 1.2 * growth
        ratio = big["median"] / small["median"]
        lines.append(f"verify linear in the ledger ({size_label(big['size'])} within {round(bound, 2):g}x of "
                     f"{size_label(small['size'])}): {'MET' if ratio <= bound else 'NOT MET'} ({ratio:.2f}x for "
                     f"{growth:g}x the requests; {small['median']:.2f} s -> {big['median']:.2f} s, "
                     f"{big['median'] / big['counts']['events'] * 1e6:.1f} us per event at {big['size']:,})")
        lines.append(f"  for information: CPU time of this process {big['cpu'] / small['cpu']:.2f}x "
                     f"({small['cpu']:.2f} s -> {big['cpu']:.2f} s); with Python's cyclic GC off "
                     f"{big['no_gc'] / small['no_gc']:.2f}x ({small['no_gc']:.2f} s -> {big['no_gc']:.2f} s); "
                     f"full GCs per run {small['gen2']:g} -> {big['gen2']:g}")
    return lines


# ---------------------------------------------------------------- part 2: the cost in a step


def _constant_digests() -> dict:
    def request(row):
        return ""

    def samples(rows):
        return {"count": 0, "digest": ""}

    def tombstones(rows):
        return {"count": 0, "digest": ""}

    def evaluations(rows):
        return ""

    def findings(rows):
        return ""

    def certificate(body):
        return ""

    return {"request": request, "samples": samples, "tombstones": tombstones,
            "evaluations": evaluations, "findings": findings, "certificate": certificate}


@contextmanager
def swapped_digests(replacements: dict):
    """Swap functions of ``store.row_digests`` in this process; always put the originals back."""
    originals = {name: getattr(row_digests, name) for name in replacements}
    try:
        for name, fn in replacements.items():
            setattr(row_digests, name, fn)
        yield
    finally:
        for name, fn in originals.items():
            setattr(row_digests, name, fn)


def overhead(args, root: Path) -> dict:
    base = root / "overhead"
    base.mkdir()
    sides = {}
    for arm in ("A", "B"):
        sides[arm] = lifecycle.connect(f"sqlite:///{base / (arm + '.db')}", signing_key=root / "signing-key.pem",
                                       id_key=root / "id-key")
    off = _constant_digests()
    g = np.random.default_rng([args.seed, 1])
    probe = (g.random((STEP_PROBE_ROWS, STEP_FEATURES), dtype=np.float32), g.integers(0, STEP_CLASSES,
                                                                                       STEP_PROBE_ROWS))

    def batch(i: int):
        h = np.random.default_rng([args.seed, 2, i + 10])
        X = h.random((args.rows, STEP_FEATURES), dtype=np.float32)
        return X, h.integers(0, STEP_CLASSES, args.rows), [f"step-{i}-{j}" for j in range(args.rows)]

    def apply(arm: str, submit) -> tuple[float, float]:
        """Submit and drain one request on one arm: (wall seconds, this process's CPU seconds)."""
        lc = sides[arm]
        gc.collect()
        with swapped_digests(off if arm == "B" else {}):
            t, c = time.perf_counter(), time.process_time()
            req = submit(lc)
            done = lc.drain()
            seconds, cpu = time.perf_counter() - t, time.process_time() - c
        mine = [r for r in done if r.id == req.id]
        if not mine or mine[0].status != "applied":
            raise RuntimeError(f"arm {arm}: request {req.id} ended {mine[0].status if mine else 'unapplied'}: "
                               f"{mine[0].error if mine else ''}")
        return seconds, cpu

    def learn(X, y, ids, with_probe=False):
        return lambda lc: lc.learn("step", task="stream", X=X, y=y, sample_ids=ids,
                                   probe=probe if with_probe else None)

    def forget(ids):
        return lambda lc: lc.forget("step", samples=ids[:args.forget_rows])

    for arm, lc in sides.items():  # set-up and warm-up, untimed
        lc.create_model("step", strategy="analytic", n_features=STEP_FEATURES, n_classes=STEP_CLASSES,
                        config={"width": STEP_WIDTH})
        X, y, ids = batch(-1)
        apply(arm, learn(X, y, ids, with_probe=True))
        apply(arm, forget(ids))
    times = {(arm, kind): [] for arm in sides for kind in ("learn", "forget")}
    for i in range(args.pairs):
        X, y, ids = batch(i)
        order = ["A", "B"] if i % 2 == 0 else ["B", "A"]
        for arm in order:
            times[(arm, "learn")].append(apply(arm, learn(X, y, ids)))
        for arm in order:
            times[(arm, "forget")].append(apply(arm, forget(ids)))
        if (i + 1) % 5 == 0 or i + 1 == args.pairs:
            say(f"  overhead: {i + 1}/{args.pairs} pairs")

    # direct measure: the time spent inside the row-digest functions of a few more A steps
    spent = {"learn": 0.0, "forget": 0.0}
    current = ["learn"]

    def timed(fn):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[current[0]] += time.perf_counter() - t
        return wrapper

    direct_steps = 5
    with swapped_digests({name: timed(getattr(row_digests, name)) for name in DIGEST_FUNCTIONS}):
        for i in range(direct_steps):
            X, y, ids = batch(args.pairs + i)
            current[0] = "learn"
            apply("A", learn(X, y, ids))
            current[0] = "forget"
            apply("A", forget(ids))
    checked, problems = sides["A"].ledger.audit_problems()
    out = {"checked": checked, "problems": [str(p) for p in problems]}
    for kind in ("learn", "forget"):
        a, b = times[("A", kind)], times[("B", kind)]
        ratios = [x[0] / y[0] for x, y in zip(a, b)]
        cpu_ratios = [x[1] / y[1] for x, y in zip(a, b)]
        out[kind] = {"A": statistics.median(x[0] for x in a), "B": statistics.median(y[0] for y in b),
                     "ratio": statistics.median(ratios),
                     "q1": float(np.percentile(ratios, 25)), "q3": float(np.percentile(ratios, 75)),
                     "A_cpu": statistics.median(x[1] for x in a), "B_cpu": statistics.median(y[1] for y in b),
                     "cpu_ratio": statistics.median(cpu_ratios), "cpu_q1": float(np.percentile(cpu_ratios, 25)),
                     "cpu_q3": float(np.percentile(cpu_ratios, 75)), "direct": spent[kind] / direct_steps}
    for lc in sides.values():
        lc.ledger.engine.dispose()
    return out


def print_overhead(args, res: dict) -> list[str]:
    say()
    say(f"row digests in a step, SQLite, in-process, {args.pairs} alternating A/B pairs (A: as is; B: "
        "store.row_digests returning constants), submit + drain, median times and median of paired ratios:")
    for kind, what in (("learn", f"{args.rows}-row learn"), ("forget", f"{args.forget_rows}-sample forget")):
        r = res[kind]
        say(f"  {what:>18}: A {r['A'] * 1000:7.1f} ms, B {r['B'] * 1000:7.1f} ms, A/B {r['ratio']:.3f} "
            f"({(r['ratio'] - 1) * 100:+.1f} %; paired ratios' quartiles {r['q1']:.3f}-{r['q3']:.3f}); "
            f"inside the digest functions, measured directly: {r['direct'] * 1000:.2f} ms per step "
            f"({r['direct'] / r['A'] * 100:.2f} % of A)")
        say(f"  {'':>18}  CPU time of this process: A {r['A_cpu'] * 1000:7.1f} ms, B {r['B_cpu'] * 1000:7.1f} ms, "
            f"A/B {r['cpu_ratio']:.3f} ({(r['cpu_ratio'] - 1) * 100:+.1f} %; quartiles "
            f"{r['cpu_q1']:.3f}-{r['cpu_q3']:.3f})")
    lines = []
    worst = max(res["learn"]["ratio"], res["forget"]["ratio"]) - 1
    lines.append(f"under 5 % added to a step: {'MET' if worst < 0.05 else 'NOT MET'} (learn "
                 f"{(res['learn']['ratio'] - 1) * 100:+.1f} %, forget {(res['forget']['ratio'] - 1) * 100:+.1f} %)")
    lines.append(f"ledger of real steps (arm A, purges included) verifies with no problem: "
                 f"{'MET' if not res['problems'] else 'NOT MET'} ({res['checked']:,} events, "
                 f"{len(res['problems'])} problem(s)" + (f": {res['problems'][0]}" if res["problems"] else "") + ")")
    return lines


# ---------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="sizes 2,000 and 20,000 and 20 pairs")
    p.add_argument("--sizes", type=int, nargs="+", help="ledger sizes in requests, verified at each "
                                                        "(default 10000 100000; 2000 20000 with --quick)")
    p.add_argument("--postgres", action="store_true", help="part 1 on a throwaway PostgreSQL server")
    p.add_argument("--models", type=int, default=20, help="models in the built ledger")
    p.add_argument("--min-samples", type=int, default=5, help="fewest samples per built learn")
    p.add_argument("--max-samples", type=int, default=10, help="most samples per built learn")
    p.add_argument("--repeats", type=int, default=3, help="verify runs per size (the median is reported)")
    p.add_argument("--pairs", type=int, help="A/B pairs in part 2 (default 40; 20 with --quick)")
    p.add_argument("--rows", type=int, default=500, help="rows per learn in part 2")
    p.add_argument("--forget-rows", type=int, default=50, help="samples per forget in part 2")
    p.add_argument("--skip-scale", action="store_true", help="only part 2")
    p.add_argument("--skip-overhead", action="store_true", help="only part 1")
    p.add_argument("--progress", type=float, default=10.0, help="seconds between build progress lines")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (ledgers, keys)")
    args = p.parse_args()
    args.sizes = sorted(set(args.sizes or ([2_000, 20_000] if args.quick else [10_000, 100_000])))
    if args.pairs is None:
        args.pairs = 20 if args.quick else 40
    if not (args.sizes[0] >= 1 and args.models >= 1 and 1 <= args.min_samples <= args.max_samples
            and args.repeats >= 1 and args.pairs >= 1 and 1 <= args.forget_rows <= args.rows):
        p.error("sizes, models, repeats and pairs >= 1; 1 <= min-samples <= max-samples; "
                "1 <= forget-rows <= rows")

    logging.getLogger("lifecycle").setLevel(logging.ERROR)  # in-process key-creation notices and step logs
    # on SIGTERM (and SIGHUP) run the finally blocks: they stop the server and remove the temporary folder
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit("terminated"))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even where started with SIGINT ignored
    root = Path(tempfile.mkdtemp(prefix="lifecycle-audit-verify-"))
    os.environ["LIFECYCLE_ID_KEY"] = str(root / "id-key")
    os.environ["LIFECYCLE_SIGNING_KEY"] = str(root / "signing-key.pem")
    began = time.monotonic()
    targets: list[str] = []
    try:
        if not args.skip_scale:
            targets += print_scale(args, scale(args, root))
        if not args.skip_overhead:
            say()
            say(f"part 2: {args.pairs} A/B pairs of a {args.rows}-row learn and a {args.forget_rows}-sample forget, "
                f"analytic width {STEP_WIDTH}, {STEP_FEATURES} features, SQLite")
            targets += print_overhead(args, overhead(args, root))
    finally:
        if args.keep:
            say(f"kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    say()
    say(f"targets ({time.monotonic() - began:.0f} s in all):")
    for line in targets:
        say(line)


if __name__ == "__main__":
    main()
