"""The relapse summary the service writes on a schedule (and `lifecycle relapse` prints)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from lifecycle.api import Lifecycle
from lifecycle.store.clock import utcnow
from lifecycle.store.records import TaskState


def relapse_summary(lc: Lifecycle, model: str | None = None) -> dict[str, Any]:
    models = [lc.model(model)] if model else lc.models()
    out: dict[str, Any] = {"generated_at": utcnow().isoformat(), "models": []}
    for m in models:
        evals = lc.ledger.evaluations(m.id)
        latest = max((e.version for e in evals), default=None)
        now = {e.task: e for e in evals if e.version == latest}
        findings = lc.ledger.findings(m.id)
        forgotten = []
        for t in lc.ledger.tasks(m.id):
            if t.state != TaskState.FORGOTTEN:
                continue
            ev = now.get(t.name)
            relapsed = [f for f in findings if f.task == t.name and f.forgotten_at_version == t.forgotten_at_version]
            forgotten.append({
                "task": t.name,
                "forgotten_at_version": t.forgotten_at_version,
                "acc_at_forget": t.acc_at_forget,
                "accuracy_now": ev.accuracy if ev else None,
                "chance": ev.chance if ev else None,
                "peak_since_forget": t.peak_since_forget,
                "relapsed": bool(relapsed),
                "findings": len(relapsed),
            })
        statuses = Counter(r.status for r in lc.ledger.requests(m.id))
        out["models"].append({
            "model": m.name,
            "strategy": m.strategy,
            "latest_version": latest,
            "requests": dict(sorted(statuses.items())),
            "relapse_threshold": m.relapse_threshold,
            "forgotten_tasks": forgotten,
            "findings_total": len(findings),
        })
    return out
