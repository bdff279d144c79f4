"""What several test modules share, so that no test module imports another.

The data sets and model shortcuts stay in ``tests.data``; the test-only
strategies in ``tests.slow_strategy`` (worker subprocesses import that one by
name to register them).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import text

REPO = Path(__file__).resolve().parents[1]

LEDGER_TABLES = ("models", "tasks", "samples", "requests", "model_versions", "evaluations",
                 "relapse_findings", "tombstones", "certificates", "events")


class ManualClock:
    """A ledger clock that stands still until the test moves it.

    Pass it as ``lifecycle.connect(url, clock=...)``: the queue's claims,
    lease renewals, expiry checks and commits then read this time, so a test
    expires a lease by advancing the clock past it instead of sleeping.
    """

    def __init__(self, start: dt.datetime | None = None) -> None:
        if start is None:
            start = dt.datetime.now(dt.timezone.utc)
        if start.tzinfo is None or start.utcoffset() is None:
            raise ValueError("a ManualClock starts at a timezone-aware datetime")
        self.now = start.astimezone(dt.timezone.utc)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> dt.datetime:
        """Move the clock ``seconds`` forward (never back); return the new time."""
        if seconds < 0:
            raise ValueError(f"a clock only moves forward, not by {seconds} s")
        self.now = self.now + dt.timedelta(seconds=seconds)
        return self.now

    def __repr__(self) -> str:
        return f"ManualClock({self.now.isoformat()})"


def snapshot(lc) -> tuple[dict[str, list[tuple[str, ...]]], dict[str, str]]:
    """Every row of every ledger table, and every artifact and key file's digest."""
    tables = {}
    with lc.ledger.engine.connect() as conn:
        for name in LEDGER_TABLES:
            rows = conn.execute(text(f"SELECT * FROM {name} ORDER BY 1")).all()
            tables[name] = [tuple(map(str, r)) for r in rows]
    files = {}
    for root in (lc.vault.artifacts.root, lc.vault.keys.root):
        for dirpath, _, names in os.walk(root):
            for n in names:
                p = os.path.join(dirpath, n)
                with open(p, "rb") as f:
                    files[p] = hashlib.sha256(f.read()).hexdigest()
    return tables, files


def start_worker(db_url: str, artifacts: Path, *extra: str) -> subprocess.Popen:
    """`lifecycle serve` in a process of its own, with the test-only strategies registered."""
    code = "import tests.slow_strategy; from lifecycle.cli import main; main()"
    return subprocess.Popen(
        [sys.executable, "-c", code, "serve", "--db", db_url, "--artifacts", str(artifacts), "--interval", "0.1",
         *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def wait_for(predicate, timeout: float, what: str, poll: float = 0.05):
    """Poll ``predicate`` until it returns something true, and return that.

    For waiting on another thread or process; ``timeout`` only bounds how
    long a broken run hangs, it is not something the test asserts about.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def at_once(*calls):
    """Run the calls in threads released together; their results and their errors, each in
    the order they ended."""
    start, results, errors = threading.Barrier(len(calls)), [], []

    def run(call):
        start.wait()
        try:
            results.append(call())
        except Exception as exc:  # handed to the test, which asserts on it
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors
