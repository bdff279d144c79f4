"""HTTP load: erasures submitted over OpenDSR by many clients at once, against real processes.

    .venv/bin/python -m bench.http_load                   # 32 clients, 60 s, 2 workers, PostgreSQL
    .venv/bin/python -m bench.http_load --clients 8 --seconds 10

Everything runs as it would deployed, on this machine: a throwaway
PostgreSQL server, the HTTP API (`lifecycle api`, one uvicorn process), two
`lifecycle serve` workers that apply the forgets and deliver the status
callbacks, and a callback receiver. Models learned beforehand hold a pool of
subjects; each client, with its own API token, submits erasures (a share of
them for subjects the models hold, the rest for people they never saw) and
polls the status of one of its earlier requests after each submit, for the
given time. Then it waits for every erasure to complete and every callback
to be delivered, and checks: no accepted request lost, none duplicated, no
callback missing or delivered twice.

Target (issue 16): >= 300 submits/s on a 2-core machine with p99 < 100 ms
for a submit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import psutil

import lifecycle
from bench.queue_load import stop_processes
from lifecycle.testing.postgres import PostgresServer

REPO = Path(__file__).resolve().parents[1]
TARGET_SUBMITS_PER_S = 300.0
TARGET_P99_S = 0.100


@dataclass
class LoadResult:
    clients: int
    seconds: float
    submits: int
    submit_errors: int
    polls: int
    submits_per_s: float
    submit_p50_s: float
    submit_p99_s: float
    certified_p50_s: float
    certified_p99_s: float
    forgets: int
    lost: int
    duplicated: int
    callbacks_expected: int
    callbacks_missing: int
    callbacks_duplicated: int
    cpu_s: dict[str, float]  # CPU seconds each part spent during the submitting phase



class Receiver:
    """A callback receiver on a loopback port: counts each (erasure, status) it accepted."""

    def __init__(self) -> None:
        self.accepted: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (the standard library's name)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    doc = json.loads(body)
                    key = (str(doc["erasure_id"]), str(doc["lifecycle_status"]))
                except (ValueError, KeyError):
                    self.send_response(400)
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.accepted[key] += 1
                self.send_response(202)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/callback"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(lc, *, models: int, subjects: int, seed: int) -> list[str]:
    """Models that learned a few samples of every subject in the pool; returns the subjects."""
    rng = np.random.default_rng(seed)
    pool = [f"person-{i}@example.org" for i in range(subjects)]
    for m in range(models):
        name = f"m{m}"
        lc.create_model(name, strategy="analytic", n_features=8, n_classes=2, config={"width": 16})
        n = 2 * subjects
        X = rng.random((n, 8), dtype=np.float32)
        y = rng.integers(0, 2, n)
        lc.learn(name, task="t", X=X, y=y, sample_ids=[f"{name}/{i}" for i in range(n)],
                 subjects=[pool[i % subjects] for i in range(n)], probe=(X[:32], y[:32]))
    lc.drain()
    return pool


async def client(k: int, base: str, token: str, pool: list[str], held_share: float, callback: str,
                 stop_at: float, out: dict) -> None:
    rng = random.Random(k)
    mine: list[str] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30.0) as http:
        while time.monotonic() < stop_at:
            rid = str(uuid.uuid4())
            subject = rng.choice(pool) if rng.random() < held_share else f"stranger-{k}-{len(mine)}@example.org"
            body = {"subject_request_id": rid, "subject_request_type": "erasure",
                    "subject_identities": [{"identity_type": "email", "identity_value": subject,
                                            "identity_format": "raw"}],
                    "status_callback_urls": [callback]}
            started = time.perf_counter()
            try:
                r = await http.post("/opengdpr_requests", json=body)
            except httpx.HTTPError:
                out["errors"] += 1
                continue
            took = time.perf_counter() - started
            if r.status_code == 201:
                out["latencies"].append(took)
                out["accepted"].append(rid)
                mine.append(rid)
            else:
                out["errors"] += 1
            if mine:
                try:
                    await http.get(f"/opengdpr_requests/{rng.choice(mine)}")
                    out["polls"] += 1
                except httpx.HTTPError:
                    out["errors"] += 1


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lifecycle.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the HTTP API process exited before it listened")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError("the HTTP API did not start listening")


def cpu_seconds(parts: dict[str, list[int]]) -> dict[str, float]:
    """User plus system CPU seconds so far of each named group of processes and their children (this
    process is counted on its own: the others are its children)."""
    out = {}
    for name, pids in parts.items():
        total = 0.0
        for pid in pids:
            try:
                proc = psutil.Process(pid)
                for p in [proc, *(proc.children(recursive=True) if pid != os.getpid() else [])]:
                    t = p.cpu_times()
                    total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        out[name] = total
    return out


def run(server: PostgresServer, *, clients: int, seconds: float, workers: int, models: int, subjects: int,
        held_share: float, seed: int = 0, progress=print) -> LoadResult:
    url = server.new_database()
    root = Path(tempfile.mkdtemp(prefix="lifecycle-http-load-"))
    env = dict(os.environ, LIFECYCLE_SIGNING_KEY=str(root / "signing.pem"), LIFECYCLE_ID_KEY=str(root / "id-key"),
               LIFECYCLE_CALLBACK_HOSTS="127.0.0.1")
    os.environ.update({k: env[k] for k in ("LIFECYCLE_SIGNING_KEY", "LIFECYCLE_ID_KEY", "LIFECYCLE_CALLBACK_HOSTS")})
    store = ["--db", url, "--artifacts", str(root / "artifacts"), "--keys", str(root / "keys")]
    lc = lifecycle.connect(url, artifacts=root / "artifacts", keys=root / "keys")
    progress(f"learning {models} models over {subjects} subjects")
    pool = prepare(lc, models=models, subjects=subjects, seed=seed)
    tokens = [lc.create_token(f"client-{k}", scopes=["erasure:submit", "read"])[1] for k in range(clients)]
    receiver = Receiver()
    receiver.start()
    port = free_port()
    procs = [start(["api", "--http", f"127.0.0.1:{port}", *store, "--log-level", "ERROR"], env)]
    procs += [start(["serve", *store, "--interval", "0.05", "--log-level", "ERROR"], env) for _ in range(workers)]
    out = {"latencies": [], "accepted": [], "errors": 0, "polls": 0}
    try:
        wait_listening(port, procs[0])
        progress(f"{clients} clients submitting for {seconds:.0f} s")
        parts = {"HTTP API": [procs[0].pid], "workers": [p.pid for p in procs[1:]],
                 "PostgreSQL": [server.postmaster_pid()], "load clients": [os.getpid()]}
        cpu_before = cpu_seconds(parts)
        began = time.monotonic()

        async def all_clients():
            stop_at = time.monotonic() + seconds
            await asyncio.gather(*(client(k, f"http://127.0.0.1:{port}", tokens[k], pool, held_share,
                                          receiver.url, stop_at, out) for k in range(clients)))

        asyncio.run(all_clients())
        elapsed = time.monotonic() - began
        cpu = {k: v - cpu_before[k] for k, v in cpu_seconds(parts).items()}
        progress(f"{len(out['accepted'])} accepted; waiting for every erasure and callback")
        deadline = time.monotonic() + 600
        while lc.erasures(["pending", "in_progress", "failed"]) and time.monotonic() < deadline:
            time.sleep(1.0)
        expected = _expected_callbacks(lc)
        while time.monotonic() < deadline:
            with receiver.lock:
                if all(receiver.accepted[k] for k in expected):
                    break
            time.sleep(0.5)
        time.sleep(2.0)  # a duplicate delivery, if any were coming, has time to land
    finally:
        stop_processes(procs)
        receiver.stop()
    return _check(lc, out, receiver, expected, clients, elapsed, cpu)


def _expected_callbacks(lc) -> set[tuple[str, str]]:
    """Every (erasure, status) the ledger's outbox says was announced."""
    from lifecycle.store.outbox import Outbox

    announced = (json.loads(d.body) for d in Outbox(lc.ledger).list())
    return {(doc["erasure_id"], doc["lifecycle_status"]) for doc in announced}


def _check(lc, out, receiver: Receiver, expected, clients: int, elapsed: float, cpu: dict[str, float]) -> LoadResult:
    from lifecycle.http.opendsr import KEY_PREFIX

    erasures = lc.erasures()
    by_key = Counter(e.idempotency_key for e in erasures)
    accepted = out["accepted"]
    lost = sum(1 for rid in accepted if by_key[KEY_PREFIX + rid] == 0)
    done = [e for e in erasures if e.status == "completed"]
    lost += sum(1 for e in erasures if e.status != "completed")
    duplicated = sum(n - 1 for n in by_key.values() if n > 1) + len(accepted) - len(set(accepted))
    certified = sorted((e.finished_at - e.received_at).total_seconds() for e in done
                       if any(p.request_id for p in e.parts))
    forgets = len({p.request_id for e in erasures for p in e.parts if p.request_id})
    lat = sorted(out["latencies"])
    with receiver.lock:
        got = dict(receiver.accepted)
    return LoadResult(
        clients=clients, seconds=elapsed, submits=len(accepted), submit_errors=out["errors"], polls=out["polls"],
        submits_per_s=len(accepted) / elapsed,
        submit_p50_s=_pct(lat, 50), submit_p99_s=_pct(lat, 99),
        certified_p50_s=_pct(certified, 50), certified_p99_s=_pct(certified, 99),
        forgets=forgets, lost=lost, duplicated=duplicated,
        callbacks_expected=len(expected), callbacks_missing=sum(1 for k in expected if not got.get(k)),
        callbacks_duplicated=sum(1 for n in got.values() if n > 1), cpu_s=cpu)


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def report(r: LoadResult) -> str:
    met_rate = r.submits_per_s >= TARGET_SUBMITS_PER_S
    met_p99 = r.submit_p99_s < TARGET_P99_S
    clean = r.lost == r.duplicated == r.callbacks_missing == r.callbacks_duplicated == 0
    return "\n".join([
        f"clients {r.clients}, {r.seconds:.1f} s: {r.submits} erasures accepted, {r.submit_errors} errors, "
        f"{r.polls} status polls, {r.forgets} per-model forgets",
        f"submits/s            {r.submits_per_s:8.1f}   target >= {TARGET_SUBMITS_PER_S:.0f}: "
        f"{'met' if met_rate else 'NOT met'}",
        f"submit p50 / p99     {r.submit_p50_s * 1000:8.1f} / {r.submit_p99_s * 1000:.1f} ms   target p99 < "
        f"{TARGET_P99_S * 1000:.0f} ms: {'met' if met_p99 else 'NOT met'}",
        f"submit-to-certified  p50 {r.certified_p50_s:.2f} s, p99 {r.certified_p99_s:.2f} s (erasures with forgets)",
        f"lost {r.lost}, duplicated {r.duplicated}, callbacks expected {r.callbacks_expected}, missing "
        f"{r.callbacks_missing}, delivered twice {r.callbacks_duplicated}: {'clean' if clean else 'NOT clean'}",
        "CPU while submitting (ms per accepted submit): " + ", ".join(
            f"{name} {1000 * s / max(r.submits, 1):.1f}" for name, s in r.cpu_s.items()),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--subjects", type=int, default=300, help="people the models learned from")
    parser.add_argument("--held-share", type=float, default=0.2,
                        help="share of erasures naming a person the models hold (the rest name strangers)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    server = PostgresServer()
    if not server.available:
        sys.exit("PostgreSQL server binaries not found (Debian package 'postgresql')")
    server.start()
    try:
        result = run(server, clients=args.clients, seconds=args.seconds, workers=args.workers, models=args.models,
                     subjects=args.subjects, held_share=args.held_share, progress=lambda line: print(line, flush=True))
    finally:
        server.stop()
    print()
    print(report(result))


if __name__ == "__main__":
    main()
