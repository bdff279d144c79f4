"""Queue load and fault test against a real PostgreSQL server.

    .venv/bin/python -m bench.queue_load                      # 10,000 requests, 20 models, 4 workers
    .venv/bin/python -m bench.queue_load --requests 1000 --workers 2

Runs two phases side by side: steady (no faults) and chaos (a worker killed
with SIGKILL every few seconds and restarted, and the database restarted once
mid-run). A submitter feeds learn and forget requests while the workers
drain; every submit carries an idempotency key and is retried on connection
errors, so a submit the database dropped is neither lost nor doubled. At the
end every request must be applied exactly once and each model's versions must
follow its ledger order.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy.exc import OperationalError

import lifecycle
from lifecycle.store.records import RequestStatus, StepResult
from lifecycle.testing.postgres import PostgresServer

REPO = Path(__file__).resolve().parents[1]
SUBMITTERS = 4  # threads feeding the queue, so that submission does not cap what the workers can show


@dataclass
class LoadResult:
    phase: str
    requests: int
    unsubmitted: int  # submits that failed for good: the submitter thread died
    workers: int
    kills: int
    db_restarts: int
    claims_per_s: float
    applied_per_s: float
    p50_s: float
    p99_s: float
    lost: int
    duplicated: int
    out_of_order: int
    wall_s: float


def retrying(call, patience: float = 120.0):
    """Retry a call through a database restart (connection errors and deadlocks only).

    Safe for submits because each carries an idempotency key: a retry of one
    that committed before the connection dropped returns the same request.
    """
    give_up = time.monotonic() + patience
    while True:
        try:
            return call()
        except OperationalError:
            if time.monotonic() > give_up:
                raise
            time.sleep(0.1)


def stop_processes(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each, then wait a minute for each to finish its step before killing it."""
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()


def start_worker(url: str, artifacts: Path, lease: float, claim_batch: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lifecycle.cli", "serve", "--db", url, "--artifacts", str(artifacts),
         "--interval", "0.02", "--lease-seconds", str(lease), "--claim-batch", str(claim_batch),
         "--log-level", "ERROR"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def run(server: PostgresServer, *, phase: str, requests: int, models: int, workers: int, kill_every: float = 0.0,
        max_kills: int | None = None, restart_db: bool = False, lease: float = 3.0, claim_batch: int = 1,
        seed: int = 0, progress=print) -> LoadResult:
    """Feed ``requests`` through ``workers`` serve processes on a new database and check the outcome.

    With ``kill_every`` a random worker is SIGKILLed (and replaced) every so
    many seconds, at most ``max_kills`` times; with ``restart_db`` the server
    is restarted once, when half the requests are in. Each worker claims up
    to ``claim_batch`` requests at a time.
    """
    url = server.new_database()
    root = Path(tempfile.mkdtemp(prefix="lifecycle-load-"))
    lc = lifecycle.connect(url, artifacts=root / "artifacts", signing_key=root / "key.pem")
    rng = np.random.default_rng(seed)
    probe = (rng.random((4, 4), dtype=np.float32), np.array([0, 1, 0, 1]))
    names = [f"m{i}" for i in range(models)]
    for name in names:
        lc.create_model(name, strategy="analytic", n_features=4, n_classes=2, config={"width": 8})

    submitted: list[str] = []
    lock = threading.Lock()

    def submit_share(k: int) -> None:
        # a submitter forgets only samples it learned itself, so each forget follows its learn
        rng_k = np.random.default_rng([seed, k])
        learned = defaultdict(list)
        for i in range(k, requests, SUBMITTERS):
            name = names[i % models]
            key = f"load-{i}"
            if i % 10 == 9 and learned[name]:  # one request in ten forgets a sample learned earlier
                sample = learned[name].pop(0)
                req = retrying(lambda: lc.forget(name, samples=[sample], idempotency_key=key))
            else:
                sid = f"{name}/{i}"
                X, y = rng_k.random((1, 4), dtype=np.float32), rng_k.integers(0, 2, 1)
                req = retrying(lambda: lc.learn(name, task="t", X=X, y=y, sample_ids=[sid], probe=probe,
                                                idempotency_key=key))
                learned[name].append(sid)
            with lock:
                submitted.append(req.id)

    submitters = [threading.Thread(target=submit_share, args=(k,), daemon=True) for k in range(SUBMITTERS)]

    procs = [start_worker(url, root / "artifacts", lease, claim_batch) for _ in range(workers)]
    started = time.monotonic()
    for t in submitters:
        t.start()
    kills = restarts = 0
    next_kill = started + kill_every if kill_every else float("inf")
    restarted = not restart_db
    try:
        while True:
            time.sleep(0.2)
            open_count = retrying(lambda: len(lc.requests(statuses=["queued", "running"])))
            if not any(t.is_alive() for t in submitters) and open_count == 0:
                break
            now = time.monotonic()
            if now >= next_kill and (max_kills is None or kills < max_kills):
                victim = random.Random(kills).randrange(len(procs))
                procs[victim].send_signal(signal.SIGKILL)
                procs[victim].wait()
                procs[victim] = start_worker(url, root / "artifacts", lease, claim_batch)
                kills += 1
                next_kill = now + kill_every
            if not restarted and len(submitted) >= requests // 2:
                server.restart()
                restarts, restarted = restarts + 1, True
            if now - started > 3600:
                raise TimeoutError("the queue did not drain within an hour")
            progress(f"{phase}: {len(submitted)}/{requests} submitted, {open_count} open, {kills} kills")
    finally:
        stop_processes(procs)
    wall = time.monotonic() - started
    return _check(lc, phase, submitted, requests, workers, kills, restarts, wall)


def _claim_loop(url: str, artifacts: str, batch: int, results) -> None:
    """One claimer process: claim ``batch`` models at a time and commit them at once, until the queue is empty."""
    lc = lifecycle.connect(url, artifacts=artifacts, create=False)
    owner, n = f"claimer-{os.getpid()}", 0
    while claims := lc.ledger.queue.claim_many(owner, 30.0, limit=batch):
        lc.ledger.queue.commit_steps([StepResult(claim, RequestStatus.REJECTED, error="claim benchmark") for claim in claims])
        n += len(claims)
    results.put(n)


def claim_capacity(server: PostgresServer, *, requests: int, models: int, workers: int, batch: int = 1,
                   seed: int = 0, progress=print) -> tuple[int, float]:
    """The queue's own ceiling: ``workers`` processes that claim and complete with no strategy step.

    Each claim is the real one (SKIP LOCKED, per-model order, lease, audit
    event), ``batch`` models at a time as a worker started with that
    --claim-batch takes them, and each batch's completion the real fenced
    commit; only the steps between them are left out. Returns (claims, claims
    per second).
    """
    url = server.new_database()
    root = Path(tempfile.mkdtemp(prefix="lifecycle-claims-"))
    lc = lifecycle.connect(url, artifacts=root / "artifacts")
    rng = np.random.default_rng(seed)
    probe = (rng.random((4, 4), dtype=np.float32), np.array([0, 1, 0, 1]))
    names = [f"m{i}" for i in range(models)]
    for name in names:
        lc.create_model(name, strategy="analytic", n_features=4, n_classes=2, config={"width": 8})
    for i in range(requests):
        name = names[i % models]
        lc.learn(name, task="t", X=rng.random((1, 4), dtype=np.float32), y=rng.integers(0, 2, 1),
                 sample_ids=[f"{name}/{i}"], probe=probe)
        if i % 1000 == 999:
            progress(f"claims: {i + 1}/{requests} queued")
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_claim_loop, args=(url, str(root / "artifacts"), batch, results))
             for _ in range(workers)]
    started = time.monotonic()
    for p in procs:
        p.start()
    claimed = sum(results.get(timeout=3600) for _ in procs)
    for p in procs:
        p.join()
    # from the first claim to the last completion, as the ledger recorded them
    events = [e.at for e in lc.ledger.events() if e.kind in ("claimed", RequestStatus.REJECTED)]
    span = (max(events) - min(events)).total_seconds() if events else time.monotonic() - started
    return claimed, claimed / span


def _check(lc, phase, submitted, requests, workers, kills, restarts, wall) -> LoadResult:
    final = {r.id: r for r in lc.requests()}
    lost = sum(1 for rid in submitted if rid not in final or final[rid].status != "applied")
    for rid in submitted:
        r = final.get(rid)
        if r is None or r.status != "applied":
            print(f"NOT RequestStatus.APPLIED {rid}: {r.kind if r else '?'} {r.status if r else 'missing'} "
                  f"attempt {r.attempt if r else '-'}: {r.error if r else ''}", flush=True)
    applied_events = Counter(e.request_id for e in lc.ledger.events() if e.kind == "applied")
    duplicated = sum(1 for n in applied_events.values() if n > 1)
    duplicated += len(submitted) - len(set(submitted))
    out_of_order = 0
    by_model = defaultdict(list)
    for r in sorted(final.values(), key=lambda r: r.seq):
        by_model[r.model].append(r.result_version)
    for versions in by_model.values():
        out_of_order += sum(1 for a, b in zip(versions, versions[1:]) if a is None or b is None or b != a + 1)
    claims = [e.at for e in lc.ledger.events() if e.kind == "claimed"]
    latencies = sorted((r.finished_at - r.received_at).total_seconds() for r in final.values() if r.finished_at)
    span = (max(r.finished_at for r in final.values()) - min(claims)).total_seconds()
    return LoadResult(
        phase=phase, requests=requests, unsubmitted=requests - len(submitted), workers=workers, kills=kills,
        db_restarts=restarts,
        claims_per_s=len(claims) / span, applied_per_s=len(latencies) / span,
        p50_s=float(np.percentile(latencies, 50)), p99_s=float(np.percentile(latencies, 99)),
        lost=lost, duplicated=duplicated, out_of_order=out_of_order, wall_s=wall,
    )


def table(results: list[LoadResult]) -> str:
    head = (f"{'phase':<8}{'requests':>9}{'unsubm.':>8}{'workers':>8}{'kills':>6}{'db restarts':>12}{'claims/s':>10}"
            f"{'applied/s':>10}{'p50 s':>8}{'p99 s':>8}{'lost':>6}{'dup':>5}{'order':>6}")
    rows = [f"{r.phase:<8}{r.requests:>9}{r.unsubmitted:>8}{r.workers:>8}{r.kills:>6}{r.db_restarts:>12}{r.claims_per_s:>10.1f}"
            f"{r.applied_per_s:>10.1f}{r.p50_s:>8.2f}{r.p99_s:>8.2f}{r.lost:>6}{r.duplicated:>5}"
            f"{r.out_of_order:>6}" for r in results]
    return "\n".join([head, "-" * len(head), *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--kill-every", type=float, default=5.0, help="seconds between SIGKILLs in the chaos phase")
    parser.add_argument("--lease", type=float, default=3.0)
    parser.add_argument("--claim-batch", type=int, default=5,
                        help="requests a worker claims at once (one per model) and commits together")
    args = parser.parse_args()
    # on SIGTERM run the finally blocks: they stop the worker processes and the server
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    server = PostgresServer()
    if not server.available:
        sys.exit("PostgreSQL server binaries not found (Debian package 'postgresql')")
    server.start()
    last = [0.0]

    def progress(line):
        if time.monotonic() - last[0] > 5:
            print(line, flush=True)
            last[0] = time.monotonic()

    try:
        claims, claims_per_s = claim_capacity(server, requests=args.requests, models=args.models,
                                              workers=args.workers, batch=args.claim_batch, progress=progress)
        results = [
            run(server, phase="steady", requests=args.requests, models=args.models, workers=args.workers,
                lease=args.lease, claim_batch=args.claim_batch, progress=progress),
            run(server, phase="chaos", requests=args.requests, models=args.models, workers=args.workers,
                kill_every=args.kill_every, restart_db=True, lease=args.lease, claim_batch=args.claim_batch,
                progress=progress),
        ]
    finally:
        server.stop()
    print()
    print(f"queue load on PostgreSQL: {args.requests} requests over {args.models} models, analytic width 8, "
          f"claim batch {args.claim_batch}")
    print("targets: >= 500 claims/s with 4 workers; zero lost, duplicated or out of order")
    print(f"queue ceiling (claim + fenced completion, no step): {claims} claims by {args.workers} processes, "
          f"{claims_per_s:.1f} claims/s")
    print(table(results))


if __name__ == "__main__":
    main()
