"""Erasure at scale: purge latency, stored bytes and leftovers as the ledger grows, and what encryption costs.

    .venv/bin/python bench/erasure_scale.py --quick             # 20,000 samples, about a minute
    .venv/bin/python bench/erasure_scale.py                     # 200,000 samples at 2 requests/s (~8 min)
    .venv/bin/python bench/erasure_scale.py --samples 100000 --rate 4 --workers 2
    .venv/bin/python bench/erasure_scale.py --skip-scale --overhead-repeats 20   # only the A/B overhead

Part 1, the service under steady load on PostgreSQL (a throwaway server from
``lifecycle/testing/postgres.py``; one model, strategy ``analytic`` with width 64 on 64
random float32 features, so steps are cheap and the figures are the
service's, not the strategy's). A submitter thread sends requests at a fixed
rate (``--rate``, default 2/s), ``--forget-share`` of them (default half)
subject forgets, the rest learns of ``--rows`` (500) rows with distinct
random rows, sample ids and a subject per row; ``--workers`` real
``lifecycle serve`` processes drain the queue. It stops submitting when the
ledger holds ``--samples`` sample rows (forgotten ones count: their rows stay,
as tombstoned samples).

Subjects: a pool of ``--subject-pool`` (100) live subjects; every row of a
learn belongs to one drawn at random from the pool, and a subject leaves the
pool after ``--subject-learns`` (10) learns, so each subject has ~50 rows
spread over ~10 data files. A forget names a subject drawn uniformly from
all subjects that have rows and were not forgotten yet (live or retired), so
erasures reach old data as often as new, and a forget's size does not drift
as the ledger grows.

When is a forget "purged"? A purge (``lifecycle.purge.purge_model``) takes the
model's purge lease, reads the plan (every forgotten sample that still has
data), destroys the keys and records a ``purged`` event with the number of
rows it cleared. Plans run one at a time per model and each takes everything
outstanding, so the set of cleared rows is always a prefix, in commit order,
of the forgotten rows. A forget is therefore purged at the first ``purged``
event (in the model's audit order) at which the rows cleared so far reach the
rows forgotten by this forget and every forget applied before it (counted
from the tombstones, which carry the request id). That is exact, with any
number of workers, without polling; the event's time is after its keys were
destroyed. The figure per band is submit (the request's ``received_at``) to
that event, for the forgets submitted while the ledger size was in that band.

Per band of ``--band`` (20,000) samples it prints: submit->purged p50/p99,
applied->purged p50, rows per forget, data files touched per purge (the
``files`` of the purge events that completed the band's forgets), artifact
+ key folder bytes and model states kept (``model_versions`` not purged)
and open requests and purge backlog, sampled when the ledger reached the
band's size, and learn submit->applied p50/p99.

Then a byte scan: up to ``--scan-rows`` (2,000) erased rows' plaintext
float32 bytes (sought raw and as hex text), their sample ids and their
subjects' names are kept in memory (a uniform sample of all erased rows) and
searched for in every file of the artifact folder, the key folder and the
PostgreSQL data directory (after a CHECKPOINT; WAL included), and in a
``pg_dump`` of the database (where values PostgreSQL stored compressed appear
in clear). The target is 0 found. Two checks keep a 0 honest: a self-test
plants needles at every alignment and across read chunks, and a positive
control writes a plaintext row and string into a table of the database just
before the CHECKPOINT, which the scan must find in the data directory and in
the dump. The server log and the worker logs are scanned too, for
information.

The first forget after a worker starts is slower by the worker's first
import of scikit-learn (membership inference); it shows in the first band's
p99.

Part 2, the cost of hashing and encryption, side by side with them off, in
this process on SQLite: the real ``Lifecycle`` against one whose vault
stores plain bytes with no keys (so its forget erases nothing: it has no
keys to destroy) and whose identifiers are plain SHA-256 instead of HMAC.
``--overhead-repeats`` pairs of a 500-row learn and a 50-sample forget, each
timed from submit to applied (the forget's purge included), with a
persistent ``Worker`` as in the service, alternating which side goes first.
The figure is the median of the paired ratios; the target is under 10 %.

Every server and worker this starts is stopped at the end, also on Ctrl-C
or SIGTERM; temporary folders are removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

from sqlalchemy import func, select, text  # noqa: E402

import lifecycle  # noqa: E402
from lifecycle import arrays  # noqa: E402
from lifecycle.api import Lifecycle  # noqa: E402
from lifecycle.errors import LifecycleError  # noqa: E402
from lifecycle.signing import Signer  # noqa: E402
from lifecycle.vault import Vault  # noqa: E402
from lifecycle.store.artifacts import ArtifactStore, FolderArtifactStore  # noqa: E402
from lifecycle.migrations.migrate import open_engine  # noqa: E402
from lifecycle.store.errors import ArtifactMissing  # noqa: E402
from lifecycle.store.identity import IdKey, normalise  # noqa: E402
from lifecycle.store.keystore import KeyStore  # noqa: E402
from lifecycle.store.ledger import Ledger  # noqa: E402
from lifecycle.store.schema import EventRow, ModelVersionRow, RequestRow, SampleRow, TombstoneRow  # noqa: E402
from lifecycle.testing.postgres import PostgresServer, find_bin  # noqa: E402

MODEL = "erasure"
TASK = "stream"
N_FEATURES = 64
N_CLASSES = 10
WIDTH = 64
PROBE_ROWS = 200


def say(line: str) -> None:
    print(line, flush=True)


def pct(values, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def fmt(value: float, spec: str = ".2f") -> str:
    return "-" if value != value else format(value, spec)  # NaN -> "-"


# ---------------------------------------------------------------- the synthetic stream


class Feed:
    """Learn batches of distinct random rows, each row of a subject drawn from a live pool.

    Row ``j`` of learn ``k`` is a pure function of (seed, k, j), so an erased
    row's plaintext can be rebuilt for the byte scan without keeping them all.
    """

    def __init__(self, seed: int, rows: int, pool: int, subject_learns: int) -> None:
        self.seed, self.rows, self.span = seed, rows, subject_learns
        self.rng = np.random.default_rng([seed, 0])
        self.names: list[str] = []
        self.members: list[list[int]] = []  # subject -> global row numbers (learn * rows + j)
        self.open: list[int] = []  # subjects with rows, not forgotten: what a forget may name
        self.open_at: dict[int, int] = {}
        self.pool: list[int] = []
        self.age: list[int] = []
        self.pool_at: dict[int, int] = {}
        for i in range(pool):
            s = self._new()
            self.pool.append(s)
            self.pool_at[s] = i
            self.age.append(i % subject_learns)  # staggered, so the pool turns over evenly

    def _new(self) -> int:
        n = len(self.names)
        self.names.append("subj-" + hashlib.blake2b(f"{self.seed}:subject:{n}".encode(), digest_size=8).hexdigest())
        self.members.append([])
        return n

    def sample_id(self, k: int, j: int) -> str:
        return "smp-" + hashlib.blake2b(f"{self.seed}:{k}:{j}".encode(), digest_size=10).hexdigest()

    def data(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        g = np.random.default_rng([self.seed, 1, k])
        return g.random((self.rows, N_FEATURES), dtype=np.float32), g.integers(0, N_CLASSES, self.rows)

    def row_bytes(self, row: int) -> bytes:
        k, j = divmod(row, self.rows)
        return self.data(k)[0][j].tobytes()

    def probe(self) -> tuple[np.ndarray, np.ndarray]:
        g = np.random.default_rng([self.seed, 2])
        return g.random((PROBE_ROWS, N_FEATURES), dtype=np.float32), g.integers(0, N_CLASSES, PROBE_ROWS)

    def learn(self, k: int) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
        X, y = self.data(k)
        picks = self.rng.integers(0, len(self.pool), self.rows)
        subjects = []
        for j, p in enumerate(picks):
            s = self.pool[p]
            if not self.members[s]:
                self.open_at[s] = len(self.open)
                self.open.append(s)
            self.members[s].append(k * self.rows + j)
            subjects.append(self.names[s])
        for i in range(len(self.pool)):  # age the pool; a subject leaves it after its span of learns
            self.age[i] += 1
            if self.age[i] >= self.span:
                self._replace(i)
        return X, y, [self.sample_id(k, j) for j in range(self.rows)], subjects

    def _replace(self, i: int) -> None:
        del self.pool_at[self.pool[i]]
        s = self._new()
        self.pool[i], self.age[i], self.pool_at[s] = s, 0, i

    def take_forget(self) -> int | None:
        """A subject to forget, uniformly among those with rows not forgotten yet."""
        if not self.open:
            return None
        i = int(self.rng.integers(len(self.open)))
        s = self.open[i]
        last = self.open.pop()
        if last != s:
            self.open[i] = last
            self.open_at[last] = i
        del self.open_at[s]
        if s in self.pool_at:  # a live subject: it leaves the pool, a new one takes its place
            self._replace(self.pool_at[s])
        return s


class Reservoir:
    """A uniform sample (algorithm R) of erased rows: (request id, sample id, subject, plaintext bytes)."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seen = size, 0
        self.rng = np.random.default_rng([seed, 3])
        self.items: list[tuple[str, str, str, bytes]] = []

    def offer(self, request_id: str, feed: Feed, subject: int) -> None:
        for row in feed.members[subject]:
            self.seen += 1
            if len(self.items) < self.size:
                slot = len(self.items)
                self.items.append(None)  # type: ignore[arg-type]
            else:
                slot = int(self.rng.integers(self.seen))
                if slot >= self.size:
                    continue
            k, j = divmod(row, feed.rows)
            self.items[slot] = (request_id, feed.sample_id(k, j), feed.names[subject], feed.row_bytes(row))


# ---------------------------------------------------------------- submitting at a steady rate


@dataclass
class Sent:
    kind: str
    request_id: str | None
    band: int  # index of the ledger-size band at submission
    at: float  # monotonic time the submit started
    lag: float  # how late against the schedule it started
    seconds: float  # how long the submit call took
    rows: int
    error: str | None = None


@dataclass
class Crossing:
    samples: int
    at: float  # monotonic
    snapshot: dict | None = None


@dataclass
class Load:
    sent: list[Sent] = field(default_factory=list)
    crossings: deque = field(default_factory=deque)  # new ones, for the main thread to snapshot
    learned: int = 0
    forget_subjects: dict[str, int] = field(default_factory=dict)  # request id -> subject
    done: bool = False
    failure: BaseException | None = None


def submit_loop(lc: Lifecycle, feed: Feed, reservoir: Reservoir, args, load: Load, stop: threading.Event) -> None:
    period = 1.0 / args.rate
    start = time.monotonic()
    probe = feed.probe()
    k = n_learns = 0
    next_cross = args.band
    try:
        while not stop.is_set() and load.learned < args.samples:
            due = start + k * period
            if stop.wait(max(0.0, due - time.monotonic())):
                break
            began = time.monotonic()
            band = max(0, load.learned - 1) // args.band
            forget = n_learns > 0 and int((k + 1) * args.forget_share) > int(k * args.forget_share)
            subject = feed.take_forget() if forget else None
            try:
                if subject is not None:
                    req = lc.forget(MODEL, subject=feed.names[subject])
                    load.forget_subjects[req.id] = subject
                    reservoir.offer(req.id, feed, subject)
                    load.sent.append(Sent("forget", req.id, band, began, began - due, time.monotonic() - began,
                                          len(feed.members[subject])))
                else:
                    X, y, ids, subjects = feed.learn(n_learns)
                    req = lc.learn(MODEL, task=TASK, X=X, y=y, sample_ids=ids, subjects=subjects,
                                   probe=probe if n_learns == 0 else None)
                    n_learns += 1
                    load.learned += len(ids)
                    band = (load.learned - 1) // args.band
                    load.sent.append(Sent("learn", req.id, band, began, began - due, time.monotonic() - began,
                                          len(ids)))
                    while load.learned >= next_cross:
                        load.crossings.append(Crossing(next_cross, time.monotonic()))
                        next_cross += args.band
                    if load.learned >= args.samples and load.learned > next_cross - args.band:
                        load.crossings.append(Crossing(load.learned, time.monotonic()))  # a last, partial band
            except LifecycleError as exc:
                load.sent.append(Sent("forget" if subject is not None else "learn", None, band, began, began - due,
                                      time.monotonic() - began, 0, f"{type(exc).__name__}: {exc}"))
            k += 1
    except BaseException as exc:  # the main thread reports it
        load.failure = exc
    finally:
        load.done = True


# ---------------------------------------------------------------- the scale run


def dir_bytes(*roots: Path) -> int:
    total = 0
    for root in roots:
        for folder, _, files in os.walk(root):
            for name in files:
                try:
                    total += os.lstat(os.path.join(folder, name)).st_size
                except FileNotFoundError:
                    pass
    return total


class Scale:
    """The server, the workers and the ledger of one scale run, and everything to stop them."""

    def __init__(self, args) -> None:
        self.args = args
        self.server: PostgresServer | None = None
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.root = Path(tempfile.mkdtemp(prefix="lifecycle-erasure-"))
        self.artifacts = self.root / "artifacts"
        self.keys = self.root / "keys"
        self.stop_submit = threading.Event()
        self.submitter: threading.Thread | None = None
        self.restarts = 0

    # ---- start and stop

    def start(self) -> None:
        self.server = PostgresServer()
        if not self.server.available:
            raise SystemExit("PostgreSQL server binaries not found (Debian package 'postgresql')")
        self.server.start()
        self.url = self.server.new_database()
        self.env = {**os.environ, "LIFECYCLE_SIGNING_KEY": str(self.root / "signing-key.pem"),
                    "LIFECYCLE_ID_KEY": str(self.root / "id-key")}
        self.lc = lifecycle.connect(self.url, artifacts=self.artifacts, keys=self.keys,
                                    signing_key=self.root / "signing-key.pem", id_key=self.root / "id-key")
        # create the signing key and the identifier secret here, so that workers starting at once load the same
        self.lc.signer.key()
        self.lc.ids.secret()
        self.model = self.lc.create_model(MODEL, strategy="analytic", n_features=N_FEATURES, n_classes=N_CLASSES,
                                          config={"width": WIDTH})
        for i in range(self.args.workers):
            self.procs.append(self.start_worker(i))
        time.sleep(self.args.warmup)  # let the workers import and start polling before the clock starts

    def start_worker(self, i: int) -> subprocess.Popen:
        log = self.root / f"worker-{i}.log"
        if log not in self.logs:
            self.logs.append(log)
        with open(log, "ab") as out:
            # a session of its own: a Ctrl-C at the terminal reaches only us, and we stop the workers
            return subprocess.Popen(
                [sys.executable, "-m", "lifecycle.cli", "serve", "--db", self.url, "--artifacts", str(self.artifacts),
                 "--keys", str(self.keys), "--interval", str(self.args.interval),
                 "--claim-batch", str(self.args.claim_batch), "--log-level", self.args.worker_log_level,
                 "--log-format", "text"],
                cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def stop_workers(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def close(self) -> None:
        self.stop_submit.set()
        if self.submitter is not None:
            self.submitter.join(30)
        try:
            self.stop_workers()
        except BaseException as exc:  # keep going: the server must stop too
            say(f"could not stop every worker: {exc!r}")
        if self.server is not None:
            try:
                if self.args.keep:
                    self.server._run(self.server.pg_ctl, "-D", self.server.data, "-m", "fast", "-w", "stop")
                else:
                    self.server.stop()
            except BaseException as exc:
                say(f"could not stop the PostgreSQL server cleanly: {exc!r}")
                if not self.args.keep:
                    shutil.rmtree(self.server.dir, ignore_errors=True)
        if self.args.keep:
            say(f"kept: {self.root} (artifacts, keys, worker logs)"
                + (f" and {self.server.dir} (PostgreSQL)" if self.server else ""))
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    # ---- reading the ledger

    def sql(self, query):
        with self.lc.ledger.engine.connect() as c:
            return c.execute(query).all()

    def open_requests(self) -> int:
        return sum(n for _, status, n in self.lc.ledger.request_counts() if status in ("queued", "running"))

    def purge_backlog(self) -> int:
        """Forgotten samples whose data is not purged yet."""
        return self.sql(select(func.count()).select_from(SampleRow).where(
            SampleRow.model_id == self.model.id, SampleRow.status == "forgotten",
            SampleRow.data_digest.is_not(None)))[0][0]

    def snapshot(self) -> dict:
        states = self.sql(select(func.count()).select_from(ModelVersionRow).where(
            ModelVersionRow.model_id == self.model.id, ModelVersionRow.state_purged.is_(False)))[0][0]
        db_bytes = self.sql(text("SELECT pg_database_size(current_database())"))[0][0]
        return {"open": self.open_requests(), "backlog": self.purge_backlog(), "states": states,
                "artifact_bytes": dir_bytes(self.artifacts), "key_bytes": dir_bytes(self.keys),
                "db_bytes": db_bytes}

    def check_workers(self) -> None:
        for i, p in enumerate(self.procs):
            if p.poll() is not None:
                say(f"PROBLEM: worker {i} exited with status {p.returncode}; restarting it (see {self.logs[i]})")
                self.procs[i] = self.start_worker(i)
                self.restarts += 1

    # ---- the run

    def run(self) -> dict:
        args = self.args
        self.start()
        feed = Feed(args.seed, args.rows, args.subject_pool, args.subject_learns)
        reservoir = Reservoir(args.scan_rows, args.seed)
        load = Load()
        say(f"scale: PostgreSQL on port {self.server.port}, {args.workers} worker(s), submitting at "
            f"{args.rate:g} requests/s ({args.forget_share:.0%} subject forgets) up to {args.samples:,} samples")
        self.submitter = threading.Thread(target=submit_loop, args=(self.lc, feed, reservoir, args, load,
                                                                    self.stop_submit), daemon=True)
        started = time.monotonic()
        self.submitter.start()
        crossings: list[Crossing] = []
        last_progress = started
        while not load.done:
            time.sleep(0.25)
            while load.crossings:
                c = load.crossings.popleft()
                c.snapshot = self.snapshot()
                crossings.append(c)
                s = c.snapshot
                say(f"  reached {c.samples:,} samples at {c.at - started:.0f} s: open requests {s['open']}, "
                    f"purge backlog {s['backlog']} rows, states kept {s['states']}, artifacts+keys "
                    f"{(s['artifact_bytes'] + s['key_bytes']) / 1e6:.1f} MB, database {s['db_bytes'] / 1e6:.1f} MB")
            if time.monotonic() - last_progress >= args.progress:
                last_progress = time.monotonic()
                self.check_workers()
                self.progress(load, started)
        if load.failure is not None:
            raise RuntimeError(f"the submitter failed: {load.failure!r}") from load.failure
        submit_end = time.monotonic()
        say(f"submitted {len(load.sent)} requests in {submit_end - started:.0f} s; waiting for the queue to drain "
            "and the purges to finish")
        drained_in = None
        while time.monotonic() - submit_end < args.drain_timeout:
            if self.open_requests() == 0 and self.purge_backlog() == 0:
                drained_in = time.monotonic() - submit_end
                break
            time.sleep(0.25)
            if time.monotonic() - last_progress >= args.progress:
                last_progress = time.monotonic()
                self.check_workers()
                self.progress(load, started)
        final = self.snapshot()
        say(f"drained {'in %.1f s' % drained_in if drained_in is not None else 'NOT within %.0f s' % args.drain_timeout}"
            f"; stopping the workers")
        self.stop_submit.set()
        self.stop_workers()
        result = self.analyse(load, crossings, final, started, submit_end, drained_in)
        result["scan"] = self.scan(load, reservoir, feed)
        result["worker_problems"] = self.worker_problems()
        return result

    def progress(self, load: Load, started: float) -> None:
        sent = list(load.sent)
        learns = sum(1 for s in sent if s.kind == "learn" and s.error is None)
        forgets = sum(1 for s in sent if s.kind == "forget" and s.error is None)
        lag = sent[-1].lag if sent else 0.0
        alive = sum(1 for p in self.procs if p.poll() is None)
        say(f"[{time.monotonic() - started:6.0f} s] samples {load.learned:,}/{self.args.samples:,}; submitted "
            f"{learns} learns, {forgets} forgets (schedule lag {lag:.2f} s); open requests {self.open_requests()}; "
            f"purge backlog {self.purge_backlog()} rows; workers alive {alive}/{len(self.procs)}")

    def analyse(self, load: Load, crossings: list[Crossing], final: dict, started: float, submit_end: float,
                drained_in: float | None) -> dict:
        mid = self.model.id
        requests = {r.id: r for r in self.sql(select(
            RequestRow.id, RequestRow.kind, RequestRow.status, RequestRow.received_at, RequestRow.finished_at,
            RequestRow.error).where(RequestRow.model_id == mid))}
        events = self.sql(select(EventRow.seq, EventRow.kind, EventRow.request_id, EventRow.at, EventRow.detail)
                          .where(EventRow.model_id == mid, EventRow.kind.in_(("applied", "purged")))
                          .order_by(EventRow.seq))
        removed = dict(self.sql(select(TombstoneRow.request_id, func.count()).where(TombstoneRow.model_id == mid)
                                .group_by(TombstoneRow.request_id)))
        # a forget is purged by the first purge whose cumulative cleared rows reach its cumulative target (docstring)
        forgotten_total = cleared = 0
        waiting: deque = deque()
        purged_at: dict[str, tuple[dt.datetime, int]] = {}
        applied_at: dict[str, dt.datetime] = {}
        purge_files: dict[int, int] = {}
        for seq, kind, rid, at, detail in events:
            if kind == "applied" and rid in requests and requests[rid].kind == "forget":
                applied_at[rid] = at
                forgotten_total += removed.get(rid, 0)
                waiting.append((forgotten_total, rid))
            elif kind == "purged":
                cleared += int(detail.get("rows", 0))
                purge_files[seq] = int(detail.get("files", 0))
            while waiting and waiting[0][0] <= cleared and kind == "purged":
                purged_at[waiting.popleft()[1]] = (at, seq)
        # sanity: a forget cannot be purged by an event before its own applied event
        early = 0
        applied_seq = {rid: seq for seq, kind, rid, _, _ in events if kind == "applied"}
        for rid, (_, seq) in purged_at.items():
            early += seq < applied_seq[rid]
        statuses: dict[tuple[str, str], int] = {}
        for r in requests.values():
            statuses[(r.kind, r.status)] = statuses.get((r.kind, r.status), 0) + 1

        bands: dict[int, dict] = {}

        def band(i: int) -> dict:
            return bands.setdefault(i, {"forgets": 0, "purge": [], "lag": [], "rows": [], "purges": set(),
                                        "learn": [], "unpurged": 0})

        for s in load.sent:
            if s.error is not None or s.request_id is None:
                continue
            r = requests.get(s.request_id)
            b = band(s.band)
            if s.kind == "learn":
                if r is not None and r.finished_at is not None and r.status == "applied":
                    b["learn"].append((r.finished_at - r.received_at).total_seconds())
                continue
            b["forgets"] += 1
            b["rows"].append(removed.get(s.request_id, 0))
            if s.request_id in purged_at:
                at, seq = purged_at[s.request_id]
                b["purge"].append((at - r.received_at).total_seconds())
                b["lag"].append((at - applied_at[s.request_id]).total_seconds())
                b["purges"].add(seq)
            else:
                b["unpurged"] += 1
        labels = {i: c.samples for i, c in enumerate(crossings)}
        snaps = {i: c.snapshot for i, c in enumerate(crossings)}
        rows = []
        for i in sorted(bands):
            b = bands[i]
            files = [purge_files[q] for q in b["purges"]]
            rows.append({
                "samples": labels.get(i, load.learned), "forgets": b["forgets"], "unpurged": b["unpurged"],
                "rows_per_forget": float(np.mean(b["rows"])) if b["rows"] else float("nan"),
                "p50": pct(b["purge"], 50), "p99": pct(b["purge"], 99), "lag_p50": pct(b["lag"], 50),
                "files_mean": float(np.mean(files)) if files else float("nan"), "files_max": max(files, default=0),
                "snapshot": snaps.get(i, final), "learn_p50": pct(b["learn"], 50), "learn_p99": pct(b["learn"], 99),
            })
        ok = [s for s in load.sent if s.error is None]
        span = (max(s.at for s in ok) - min(s.at for s in ok)) if len(ok) > 1 else float("nan")
        return {"bands": rows, "statuses": statuses, "purged_before_applied": early, "final": final, "drained_in": drained_in,
                "submitted": len(ok), "submit_errors": [s.error for s in load.sent if s.error],
                "rate": (len(ok) - 1) / span if span == span and span > 0 else float("nan"),
                "wall": submit_end - started, "learned": load.learned, "restarts": self.restarts,
                "max_lag": max((s.lag for s in load.sent), default=0.0),
                "submit_learn_p50": pct([s.seconds for s in ok if s.kind == "learn"], 50),
                "submit_forget_p50": pct([s.seconds for s in ok if s.kind == "forget"], 50)}

    def scan(self, load: Load, reservoir: Reservoir, feed: Feed) -> dict:
        applied = {rid for rid, in self.sql(select(RequestRow.id).where(
            RequestRow.model_id == self.model.id, RequestRow.kind == "forget", RequestRow.status == "applied"))}
        items = [it for it in reservoir.items if it[0] in applied]
        subjects = sorted({feed.names[s] for rid, s in load.forget_subjects.items() if rid in applied})
        # (kind, which, bytes): a row is sought as raw float32 bytes and as hex text (bytea in a dump, JSON)
        needles = ([("row", i, it[3]) for i, it in enumerate(items)]
                   + [("row", i, it[3].hex().encode()) for i, it in enumerate(items)]
                   + [("sample id", i, it[1].encode()) for i, it in enumerate(items)]
                   + [("subject", i, name.encode()) for i, name in enumerate(subjects)])
        # a positive control: plaintext written to the database now must be found, or the scan proves nothing
        control = np.random.default_rng([self.args.seed, 4]).random(N_FEATURES, dtype=np.float32).tobytes()
        control_text = "control-" + hashlib.blake2b(control, digest_size=12).hexdigest()
        needles += [("control", 0, control), ("control", 0, control.hex().encode()),
                    ("control", 1, control_text.encode())]
        with self.lc.ledger.engine.begin() as c:
            c.execute(text("CREATE TABLE erasure_scan_control (b bytea, t text)"))
            c.execute(text("INSERT INTO erasure_scan_control VALUES (:b, :t)"), {"b": control, "t": control_text})
        with self.lc.ledger.engine.connect() as c:
            c.execute(text("CHECKPOINT"))
        # a logical dump too: values PostgreSQL stored compressed (TOAST) appear there in clear
        dump = Path(self.server.dir) / "erasure-dump.sql"
        self.server._run(find_bin("pg_dump"), "-h", "127.0.0.1", "-p", str(self.server.port), "-U", "postgres",
                         "-f", str(dump), self.url.rsplit("/", 1)[1])
        say(f"byte scan: {len(items)} erased rows (raw and hex), {len(items)} sample ids, {len(subjects)} subject "
            "names, in the artifact folder, the key folder, the PostgreSQL data directory and a pg_dump")
        where = {"artifacts": [self.artifacts], "keys": [self.keys], "pgdata": [Path(self.server.data)],
                 "pg_dump": [dump]}
        raw = [n for _, _, n in needles]
        found = {name: scan_files(paths, raw) for name, paths in where.items()}
        logs = scan_files([Path(self.server.dir) / "log", *self.logs], raw)

        def by_kind(result: ScanResult) -> dict[str, int]:
            hit = {needles[i][:2] for i in result.hits}
            return {kind: sum(1 for k, _ in hit if k == kind) for kind in ("row", "sample id", "subject", "control")}

        return {"rows": len(items), "ids": len(items), "subjects": len(subjects),
                "found": {name: by_kind(f) for name, f in found.items()},
                "files": {name: (f.files, f.bytes) for name, f in found.items()},
                "examples": [(name, needles[i][0], path) for name, f in found.items() for i, path in f.where
                             if needles[i][0] != "control"][:10],
                "logs": by_kind(logs)}

    def worker_problems(self) -> list[str]:
        lines = []
        for log in self.logs:
            try:
                for line in log.read_text(errors="replace").splitlines():
                    if any(w in line for w in (" ERROR ", " CRITICAL ", "Traceback", " WARNING ")):
                        lines.append(f"{log.name}: {line.strip()}")
            except FileNotFoundError:
                pass
        return lines


# ---------------------------------------------------------------- the byte scan


@dataclass
class ScanResult:
    hits: set = field(default_factory=set)  # needle indices found
    where: list = field(default_factory=list)  # (needle index, path) of the first hits
    files: int = 0
    bytes: int = 0


class Needles:
    """Finds many byte strings at any offset in one pass per buffer.

    Each needle is keyed by its last 8 bytes read as a little-endian uint64;
    a buffer is read as uint64 at each of the 8 alignments, filtered through
    a 2^24-bit table of the keys' low bits, then the survivors are looked up
    exactly and compared in full.
    """

    def __init__(self, needles: list[bytes]) -> None:
        if any(len(n) < 8 for n in needles):
            raise ValueError("needles must be at least 8 bytes long")
        self.needles = needles
        self.longest = max((len(n) for n in needles), default=8)
        keys = np.array([int.from_bytes(n[-8:], "little") for n in needles], dtype=np.uint64)
        self.by_key: dict[int, list[int]] = {}
        for i, k in enumerate(keys.tolist()):
            self.by_key.setdefault(k, []).append(i)
        self.sorted = np.unique(keys)
        self.table = np.zeros(1 << 24, dtype=bool)
        self.table[(keys & np.uint64((1 << 24) - 1)).astype(np.int64)] = True

    def find(self, buf: bytes) -> list[tuple[int, int]]:
        """(needle index, end offset) of every occurrence in ``buf``."""
        out = []
        if not self.needles or len(buf) < 8:
            return out
        mask = np.uint64((1 << 24) - 1)
        for shift in range(8):
            n = (len(buf) - shift) // 8
            if n <= 0:
                continue
            words = np.frombuffer(buf, dtype="<u8", count=n, offset=shift)
            maybe = np.flatnonzero(self.table[(words & mask).astype(np.int64)])
            if not len(maybe):
                continue
            cand = words[maybe]
            pos = np.searchsorted(self.sorted, cand)
            pos[pos >= len(self.sorted)] = 0
            for i in maybe[self.sorted[pos] == cand].tolist():
                end = shift + 8 * i + 8
                for k in self.by_key[int(words[i])]:
                    needle = self.needles[k]
                    if end >= len(needle) and buf[end - len(needle):end] == needle:
                        out.append((k, end))
        return out


def scan_files(roots: list[Path], needles: list[bytes], chunk: int = 64 << 20) -> ScanResult:
    result = ScanResult()
    finder = Needles(needles)
    overlap = finder.longest - 1
    for root in roots:
        paths = [root] if root.is_file() else [Path(d) / f for d, _, fs in os.walk(root) for f in fs]
        for path in paths:
            if path.is_symlink() or not path.is_file():
                continue
            try:
                with open(path, "rb") as fh:
                    carry = b""
                    while block := fh.read(chunk):
                        buf = carry + block
                        for k, _ in finder.find(buf):
                            if k not in result.hits:
                                result.where.append((k, str(path)))
                            result.hits.add(k)
                        result.bytes += len(block)
                        carry = buf[-overlap:] if overlap else b""
                result.files += 1
            except (FileNotFoundError, PermissionError):
                continue
    return result


def scan_self_test() -> None:
    """The scanner must find needles planted at every alignment, and nothing in random bytes."""
    rng = np.random.default_rng(7)
    needles = [rng.random(N_FEATURES, dtype=np.float32).tobytes() for _ in range(50)]
    needles += [f"smp-{i:020x}".encode() for i in range(50)]
    buf = bytearray(rng.integers(0, 256, 1 << 20, dtype=np.uint8).tobytes())
    planted = {}
    for i in range(0, len(needles), 3):
        at = 1000 + i * 7919 + i % 8
        buf[at:at + len(needles[i])] = needles[i]
        planted[i] = at + len(needles[i])
    found = {k for k, _ in Needles(needles).find(bytes(buf))}
    if found != set(planted):
        raise AssertionError(f"byte scanner self-test failed: planted {sorted(planted)}, found {sorted(found)}")
    # across a chunk boundary too
    with tempfile.NamedTemporaryFile() as fh:
        fh.write(bytes(buf))
        fh.flush()
        got = scan_files([Path(fh.name)], needles, chunk=4096).hits
    if got != set(planted):
        raise AssertionError(f"byte scanner self-test (chunked) failed: found {sorted(got)}")


# ---------------------------------------------------------------- overhead: encryption and HMAC off


class NoKeys(KeyStore):
    """A key store that keeps nothing (the baseline vault has no keys)."""

    def create(self, digest, keys):
        pass

    def read(self, digest):
        raise ArtifactMissing("the plain vault keeps no keys")

    def exists(self, digest):
        return False

    def shred(self, digest, records):
        pass

    def destroy(self, digest):
        pass

    def digests(self):
        return []

    def age_seconds(self, digest, now):
        return 0.0


class PlainVault(Vault):
    """Rows and states stored as plain bytes: no encryption, no keys, and so no crypto-shredding."""

    def __init__(self, artifacts: ArtifactStore) -> None:
        super().__init__(artifacts, NoKeys(artifacts.root.with_name(artifacts.root.name + ".nokeys")))

    def put_rows(self, X, y, aad=None):
        return self.artifacts.put(arrays.pack({"X": np.ascontiguousarray(X, dtype=np.float32),
                                               "y": np.ascontiguousarray(y, dtype=np.int64)}))

    def rows(self, digest, positions=None, aad=None):
        data = arrays.unpack(self.artifacts.get(digest))
        if positions is None:
            return data["X"], data["y"]
        at = np.fromiter(positions, dtype=np.int64)
        return data["X"][at], data["y"][at]

    def put_blob(self, plain):
        return self.artifacts.put(plain)

    def blob(self, digest):
        return self.artifacts.get(digest)


class PlainIds(IdKey):
    """Identifiers digested with plain SHA-256: no secret, no HMAC."""

    def __init__(self) -> None:
        super().__init__(Path(os.devnull))

    @staticmethod
    def _sha(domain: bytes, data: bytes) -> str:
        return hashlib.sha256(domain + b"\0" + data).hexdigest()

    def sample(self, sample_id):
        return self._sha(b"sample", normalise(sample_id).encode())

    def subject(self, subject):
        return self._sha(b"subject", normalise(subject).encode())

    def legacy_subject(self, salted_sha256):
        return self._sha(b"legacy-subject", salted_sha256.encode())

    def rows(self, X):
        X = np.ascontiguousarray(X, dtype=np.float32) + np.float32(0.0)
        return [self._sha(b"row", row.tobytes()) for row in X]


def overhead(args) -> dict:
    root = Path(tempfile.mkdtemp(prefix="lifecycle-overhead-"))
    try:
        signer_key = root / "signing-key.pem"
        real_url = f"sqlite:///{root / 'real.db'}"
        real = lifecycle.connect(real_url, signing_key=signer_key, id_key=root / "id-key")
        base_url = f"sqlite:///{root / 'plain.db'}"
        plain = PlainVault(FolderArtifactStore(root / "plain.db.artifacts"))
        base = Lifecycle(Ledger(open_engine(base_url)), plain, Signer(signer_key), PlainIds())
        sides = {"real": real, "plain": base}
        workers = {name: lc.worker() for name, lc in sides.items()}
        g = np.random.default_rng([args.seed, 9])
        probe = (g.random((PROBE_ROWS, N_FEATURES), dtype=np.float32), g.integers(0, N_CLASSES, PROBE_ROWS))

        def batch(i: int):
            h = np.random.default_rng([args.seed, 10, i + 1])
            X = h.random((args.rows, N_FEATURES), dtype=np.float32)
            return X, h.integers(0, N_CLASSES, args.rows), [f"ovh-{i}-{j}" for j in range(args.rows)]

        def apply(name: str, submit) -> float:
            t = time.perf_counter()
            req = submit(sides[name])
            done = workers[name].drain()
            seconds = time.perf_counter() - t
            mine = [r for r in done if r.id == req.id]
            if not mine or mine[0].status != "applied":
                raise RuntimeError(f"{name}: request {req.id} ended {mine[0].status if mine else 'unapplied'}: "
                                   f"{mine[0].error if mine else ''}")
            return seconds

        for name, lc in sides.items():  # set-up and warm-up, untimed
            lc.create_model(MODEL, strategy="analytic", n_features=N_FEATURES, n_classes=N_CLASSES,
                            config={"width": WIDTH})
            X, y, ids = batch(-1)
            apply(name, lambda lc: lc.learn(MODEL, task=TASK, X=X, y=y, sample_ids=ids, probe=probe))
            apply(name, lambda lc: lc.forget(MODEL, samples=ids[:args.forget_rows]))
        times = {(side, kind): [] for side in sides for kind in ("learn", "forget")}
        for i in range(args.overhead_repeats):
            X, y, ids = batch(i)
            order = ["real", "plain"] if i % 2 == 0 else ["plain", "real"]
            for name in order:
                times[(name, "learn")].append(
                    apply(name, lambda lc: lc.learn(MODEL, task=TASK, X=X, y=y, sample_ids=ids)))
            for name in order:
                times[(name, "forget")].append(
                    apply(name, lambda lc: lc.forget(MODEL, samples=ids[:args.forget_rows])))
            if (i + 1) % 5 == 0 or i + 1 == args.overhead_repeats:
                say(f"  overhead: {i + 1}/{args.overhead_repeats} pairs")
        out = {}
        for kind in ("learn", "forget"):
            r, p = times[("real", kind)], times[("plain", kind)]
            ratios = [a / b for a, b in zip(r, p)]
            out[kind] = {"real": statistics.median(r), "plain": statistics.median(p),
                         "ratio": statistics.median(ratios), "q1": pct(ratios, 25), "q3": pct(ratios, 75)}
        return out
    finally:
        if args.keep:
            say(f"kept: {root} (overhead ledgers)")
        else:
            shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- report


def print_scale(args, res: dict) -> None:
    say("")
    say(f"erasure at scale on PostgreSQL: {res['learned']:,} samples, {args.rate:g} requests/s requested "
        f"({res['rate']:.2f}/s achieved, max schedule lag {res['max_lag']:.2f} s), {args.workers} worker(s), "
        f"analytic width {WIDTH}, {N_FEATURES} features, learns of {args.rows} rows, subject pool "
        f"{args.subject_pool} x {args.subject_learns} learns")
    say(f"submit call p50: learn {res['submit_learn_p50'] * 1000:.0f} ms, forget {res['submit_forget_p50'] * 1000:.0f} ms")
    head = (f"{'samples':>9}{'forgets':>8}{'rows/fgt':>9}{'purged p50':>11}{'p99':>7}{'appl>prg':>9}"
            f"{'files/prg':>10}{'max':>5}{'store MB':>9}{'db MB':>7}{'states':>7}{'open':>6}{'backlog':>8}"
            f"{'learn p50':>10}{'p99':>7}")
    say("per band of ledger size (purge and learn times in seconds, submit->purged / submit->applied; store, "
        "states, open and backlog sampled when the ledger reached that size):")
    say(head)
    say("-" * len(head))
    for b in res["bands"]:
        s = b["snapshot"]
        say(f"{b['samples']:>9,}{b['forgets']:>8}{fmt(b['rows_per_forget'], '.1f'):>9}{fmt(b['p50']):>11}"
            f"{fmt(b['p99']):>7}{fmt(b['lag_p50']):>9}{fmt(b['files_mean'], '.1f'):>10}{b['files_max']:>5}"
            f"{(s['artifact_bytes'] + s['key_bytes']) / 1e6:>9.1f}{s['db_bytes'] / 1e6:>7.1f}{s['states']:>7}"
            f"{s['open']:>6}{s['backlog']:>8}{fmt(b['learn_p50']):>10}{fmt(b['learn_p99']):>7}"
            + (f"   ({b['unpurged']} forget(s) never purged)" if b["unpurged"] else ""))
    f = res["final"]
    say(f"after the drain: open requests {f['open']}, purge backlog {f['backlog']} rows, states kept {f['states']}, "
        f"artifacts {f['artifact_bytes'] / 1e6:.1f} MB, keys {f['key_bytes'] / 1e6:.1f} MB, database "
        f"{f['db_bytes'] / 1e6:.1f} MB")
    say("requests by kind and status: " + ", ".join(f"{k} {s} {n}" for (k, s), n in sorted(res["statuses"].items())))
    if res["submit_errors"]:
        say(f"PROBLEM: {len(res['submit_errors'])} submit(s) refused, e.g. {res['submit_errors'][:3]}")
    if res["purged_before_applied"]:
        say(f"PROBLEM: {res['purged_before_applied']} forget(s) matched to a purge event older than their applied "
            "event: the purge accounting (rows in purged events vs tombstones) does not add up")
    if res["restarts"]:
        say(f"PROBLEM: {res['restarts']} worker restart(s) after a worker exited")
    if res["worker_problems"]:
        say(f"worker log: {len(res['worker_problems'])} warning/error line(s), first ones:")
        for line in res["worker_problems"][:10]:
            say("  " + line[:300])
    else:
        say("worker log: no warning or error")


def scale_targets(args, res: dict) -> list[str]:
    lines = []
    bands = [b for b in res["bands"] if b["p50"] == b["p50"]]
    if len(bands) >= 2:
        ratio = bands[-1]["p50"] / bands[0]["p50"]
        lines.append(f"purge time flat in ledger size: p50 at the last band within 1.5x of the first band: "
                     f"{'MET' if ratio <= 1.5 else 'NOT MET'} ({ratio:.2f}; {bands[0]['p50']:.3f} s at "
                     f"{bands[0]['samples']:,} -> {bands[-1]['p50']:.3f} s at {bands[-1]['samples']:,})")
    else:
        lines.append("purge time flat in ledger size: NOT MET (fewer than two bands with purged forgets)")
    limit = max(5, 10 * args.rate)
    worst_open = max((b["snapshot"]["open"] for b in res["bands"]), default=0)
    last_p50 = res["bands"][-1]["learn_p50"] if res["bands"] else float("nan")
    failed = sum(n for (_, s), n in res["statuses"].items() if s not in ("applied",))
    why = []
    if not res["rate"] >= 0.95 * args.rate:
        why.append(f"submitted at {res['rate']:.2f}/s")
    if worst_open > limit:
        why.append(f"{worst_open} open requests at a band boundary (limit {limit:g}, 10 s of load)")
    if not last_p50 <= 10:
        why.append(f"learn submit->applied p50 {fmt(last_p50)} s in the last band (limit 10 s)")
    if res["drained_in"] is None or res["drained_in"] > 60:
        why.append("the queue and purges did not finish within 60 s of the last submit")
    if failed:
        why.append(f"{failed} request(s) not applied")
    lines.append(f"service keeps up at {args.rate:g} requests/s to {res['learned']:,} samples: "
                 f"{'MET' if not why else 'NOT MET'} (max open at a band boundary {worst_open}, last-band learn "
                 f"p50 {fmt(last_p50)} s, drained in {fmt(res['drained_in'] if res['drained_in'] is not None else float('nan'), '.1f')} s"
                 + (f"; {'; '.join(why)}" if why else "") + ")")
    sc = res["scan"]
    total = sum(n for v in sc["found"].values() for kind, n in v.items() if kind != "control")
    control = {name: sc["found"][name]["control"] for name in ("pgdata", "pg_dump")}
    files = sum(n for n, _ in sc["files"].values())
    size = sum(b for _, b in sc["files"].values())
    per = "; ".join(f"{name} {n} files {b / 1e6:.1f} MB: {sc['found'][name]['row']} rows, "
                    f"{sc['found'][name]['sample id']} ids, {sc['found'][name]['subject']} subjects"
                    for name, (n, b) in sc["files"].items())
    lines.append(f"byte scan of erased data: {total} found (target 0): {'MET' if total == 0 else 'NOT MET'} "
                 f"({sc['rows']} erased rows, {sc['ids']} sample ids, {sc['subjects']} subject names sought in "
                 f"{files} files, {size / 1e6:.1f} MB: {per})")
    lines.append(f"  positive control (a plaintext row and string written to the database before the CHECKPOINT): "
                 f"found {control['pgdata']}/2 in pgdata, {control['pg_dump']}/2 in pg_dump"
                 + ("" if control["pgdata"] == 2 and control["pg_dump"] == 2 else
                    " -- the scan did NOT see what it should have: its 0 is not evidence"))
    for name, kind, path in sc["examples"]:
        lines.append(f"  found a {kind} in {name}: {path}")
    logs = sc["logs"]
    lines.append(f"  (for information: server and worker logs hold {logs['row']} rows, {logs['sample id']} ids, "
                 f"{logs['subject']} subjects)")
    return lines


def overhead_targets(args, res: dict) -> list[str]:
    lines = [f"hashing + encryption cost, SQLite, in-process, {args.overhead_repeats} alternating pairs, submit + "
             f"apply (+ purge), median times and median of paired ratios:"]
    for kind, what in (("learn", f"{args.rows}-row learn"), ("forget", f"{args.forget_rows}-sample forget")):
        r = res[kind]
        lines.append(f"  {what:>18}: real {r['real'] * 1000:7.1f} ms, plain {r['plain'] * 1000:7.1f} ms, ratio "
                     f"{r['ratio']:.3f} ({(r['ratio'] - 1) * 100:+.1f} %; paired ratios' quartiles "
                     f"{r['q1']:.3f}-{r['q3']:.3f})")
    worst = max(res["learn"]["ratio"], res["forget"]["ratio"]) - 1
    lines.append(f"added cost of hashing and encryption on a learn and a forget under 10 %: "
                 f"{'MET' if worst < 0.10 else 'NOT MET'} (learn {(res['learn']['ratio'] - 1) * 100:+.1f} %, "
                 f"forget {(res['forget']['ratio'] - 1) * 100:+.1f} %)")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="a small run: 20,000 samples in bands of 5,000 and 10 overhead pairs (about a minute)")
    p.add_argument("--samples", type=int, help="stop submitting when the ledger holds this many samples "
                                               "(default 200,000; 20,000 with --quick)")
    p.add_argument("--band", type=int, help="ledger-size band per table row (default 20,000; 5,000 with --quick)")
    p.add_argument("--rate", type=float, default=2.0, help="requests submitted per second, learns and forgets")
    p.add_argument("--forget-share", type=float, default=0.5, help="share of the requests that are subject forgets")
    p.add_argument("--rows", type=int, default=500, help="rows per learn")
    p.add_argument("--subject-pool", type=int, default=100, help="live subjects a learn's rows are drawn from")
    p.add_argument("--subject-learns", type=int, default=10, help="learns a subject stays in the pool")
    p.add_argument("--workers", type=int, default=1, help="lifecycle serve processes")
    p.add_argument("--interval", type=float, default=0.05, help="the workers' --interval (queue poll, seconds)")
    p.add_argument("--claim-batch", type=int, default=1, help="the workers' --claim-batch")
    p.add_argument("--worker-log-level", default="WARNING")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds the workers get to start before submitting")
    p.add_argument("--drain-timeout", type=float, default=300.0,
                   help="seconds to wait, after the last submit, for the queue and the purges to finish")
    p.add_argument("--scan-rows", type=int, default=2000, help="erased rows kept for the byte scan")
    p.add_argument("--overhead-repeats", type=int, help="learn/forget pairs per side (default 20; 10 with --quick)")
    p.add_argument("--forget-rows", type=int, default=50, help="samples per forget in the overhead comparison")
    p.add_argument("--skip-scale", action="store_true", help="only the overhead comparison")
    p.add_argument("--skip-overhead", action="store_true", help="only the scale run")
    p.add_argument("--progress", type=float, default=10.0, help="seconds between progress lines")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the temporary folders (ledger, artifacts, keys, logs)")
    args = p.parse_args()
    args.samples = args.samples or (20_000 if args.quick else 200_000)
    args.band = args.band or (5_000 if args.quick else 20_000)
    if args.overhead_repeats is None:
        args.overhead_repeats = 10 if args.quick else 20
    if not (args.rate > 0 and 0 <= args.forget_share < 1 and args.rows >= 1 and args.samples >= args.rows
            and args.band >= 1 and args.workers >= 1 and args.subject_pool >= 1 and args.subject_learns >= 1
            and 1 <= args.forget_rows <= args.rows and args.overhead_repeats >= 1):
        p.error("rate > 0, 0 <= forget-share < 1, samples >= rows >= forget-rows >= 1, and counts >= 1")

    logging.getLogger("lifecycle").setLevel(logging.ERROR)  # in-process: key-creation notices and step logs
    # on SIGTERM run the finally blocks: they stop the workers and the server
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    scan_self_test()
    targets: list[str] = []
    began = time.monotonic()
    if not args.skip_scale:
        scale = Scale(args)
        try:
            res = scale.run()
        finally:
            scale.close()
        print_scale(args, res)
        targets += scale_targets(args, res)
    if not args.skip_overhead:
        say("")
        say(f"overhead: {args.overhead_repeats} pairs of a {args.rows}-row learn and a {args.forget_rows}-sample "
            "forget, real vs plain (no encryption, no HMAC), SQLite")
        targets += overhead_targets(args, overhead(args))
    say("")
    say(f"targets ({time.monotonic() - began:.0f} s in all):")
    for line in targets:
        say(line)


if __name__ == "__main__":
    main()
