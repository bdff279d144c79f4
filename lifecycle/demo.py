"""`lifecycle demo`: the whole path of requests on split digits, with the service running."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from lifecycle.api import Lifecycle, connect
from lifecycle.datasets import split_digits
from lifecycle.service import Service
from lifecycle.store.records import Role

SUBJECTS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]


def run_demo(db: str | None = None, *, width: int = 1024, console: Console | None = None) -> Lifecycle:
    console = console or Console()
    if db is None:
        folder = Path(tempfile.mkdtemp(prefix="lifecycle-demo-"))
        db = f"sqlite:///{folder / 'ledger.db'}"
    console.print(f"[bold]lifecycle demo[/bold]: ledger {db}")
    lc = connect(db)
    lc.create_model("digits", strategy="analytic", n_features=64, n_classes=10, config={"width": width})
    service = Service(lc, interval=0.1, lease_seconds=30, summary_interval=3600)
    service.start()
    try:
        stream = split_digits()
        held_back = {}  # samples kept aside for the two later learns
        plan = []
        for i, t in enumerate(stream):
            keep = len(t.y) * 3 // 4
            ids = [f"{t.name}/{j}" for j in range(len(t.y))]
            subjects = [SUBJECTS[(j + i) % len(SUBJECTS)] for j in range(len(t.y))]
            held_back[t.name] = (t.X[keep:], t.y[keep:], ids[keep:], subjects[keep:])
            plan.append((f"learn task {t.name}", lambda t=t, k=keep, ids=ids, s=subjects: lc.learn(
                "digits", task=t.name, X=t.X[:k], y=t.y[:k], sample_ids=ids[:k], subjects=s[:k],
                probe=(t.X_probe, t.y_probe), requested_by="demo")))
        plan.append(("forget task 4-5 (licence revoked)", lambda: lc.forget(
            "digits", task="4-5", reason="licence revoked", requested_by="legal")))
        plan.append(("forget subject alice (GDPR art. 17)", lambda: lc.forget(
            "digits", subject="alice", reason="GDPR art. 17", requested_by="dpo")))
        X, y, ids, subjects = held_back["0-1"]
        plan.append(("learn more of task 0-1", lambda: lc.learn(
            "digits", task="0-1", X=X, y=y, sample_ids=ids, subjects=subjects, requested_by="demo")))
        X2, y2, ids2, _ = held_back["4-5"]
        plan.append(("re-learn task 4-5 from new samples", lambda: lc.learn(
            "digits", task="4-5", X=X2, y=y2, sample_ids=ids2, requested_by="demo")))

        for title, submit in plan:
            started = time.perf_counter()
            req = lc.wait(submit().id, timeout=120)
            _print_step(lc, console, title, req, time.perf_counter() - started)
        alice = next(r for r in lc.requests("digits") if r.target.get("subject_hash"))
        cert = lc.certificate(alice.id)["certificate"]
        console.print(
            f"certificate for {alice.id}: {cert['removed']['count']} samples removed, exactness "
            f"{cert['exactness']}, v{cert['version_before']} -> v{cert['version_after']}, relapse "
            f"{cert['verification']['relapse_status']}"
        )
        console.print(f"relapse findings: {len(lc.relapse('digits'))}")
    finally:
        service.stop()
    console.print(f"\nThe ledger stays at {db}. Look at it with:\n"
                  f"  lifecycle status --db {db}\n"
                  f"  lifecycle history --model digits --db {db}\n"
                  f"  lifecycle certificate show {alice.id[:8]} --db {db}\n"
                  f"  lifecycle audit verify --db {db}\n"
                  f"  lifecycle report --model digits --out reports --db {db}", highlight=False, soft_wrap=True)
    return lc


def _print_step(lc: Lifecycle, console: Console, title: str, req, wall: float) -> None:
    evals = [e for s in lc.history("digits") if s.request.id == req.id for e in s.evaluations]
    flagged = {f.task for f in lc.relapse("digits") if f.version == req.result_version}
    console.print(f"\n[bold]v{req.result_version}: {title}[/bold] - {req.status}, step {req.step_seconds or 0:.3f} s, "
                  f"submit to applied {wall:.2f} s")
    table = Table("task", "role", "accuracy", "chance", "relapse")
    for e in evals:
        table.add_row(e.task, e.role, f"{e.accuracy:.3f}", f"{e.chance:.2f}", "RELAPSE" if e.task in flagged else "")
    if req.error:
        console.print(f"[red]{req.error}[/red]")
    console.print(table)
    if evals:
        retained = [e.accuracy for e in evals if e.role == Role.RETAINED]
        console.print(f"  mean accuracy over retained tasks: {np.mean(retained):.3f}")
