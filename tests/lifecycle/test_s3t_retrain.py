"""s3t through the ledger: a shard left without a usable sequence gets a background
retrain request, which the worker applies from retained data; on SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
import pytest

import lifecycle
from lifecycle.service import Service
from lifecycle.loading import load_strategy
from tests.data import digits_tasks, learn_task
from tests.helpers import wait_for

# one sequence per shard: a deletion in a shard's first slice leaves it without a usable sequence
CONFIG = {"n_shards": 2, "n_slices": 2, "continual_slices": 1, "n_sequences": 1, "hidden": 32, "rank": 8,
          "epochs": 5}


def current_strategy(lc, model: str):
    m = lc.model(model)
    return load_strategy(lc.vault, m, lc.ledger.latest_version(m.id))


def test_background_retrain_is_scheduled_and_committed(lc):
    lc.create_model("s3t", strategy="s3t", n_features=64, n_classes=10, config=CONFIG)
    t0, t1 = digits_tasks()[:2]
    learn_task(lc, "s3t", t0, n=120)
    learn_task(lc, "s3t", t1, n=120)
    assert [r.status for r in lc.drain()] == ["applied", "applied"]

    victims = [f"{t0.name}/{i}" for i in range(12)]
    forget = lc.forget("s3t", samples=victims, reason="erasure")
    done = lc.drain()
    assert [r.kind for r in done] == ["forget", "retrain"]
    forget, retrain = lc.status(forget.id), done[1]
    assert forget.status == "applied" and retrain.status == "applied"
    assert retrain.result_version == forget.result_version + 1
    assert retrain.requested_by == "lifecycle" and retrain.target["units"]

    cert = lc.certificate(forget.id)["certificate"]
    provenance = cert["verification"]["provenance"]
    assert provenance["passed"] is True
    assert provenance["pending_retrain_shards"] == retrain.target["units"]

    events = [e for e in lc.events("s3t") if e.request_id == retrain.id]
    assert [e.kind for e in events][:2] == ["submitted", "claimed"] and events[-1].kind == "applied"

    strategy = current_strategy(lc, "s3t")
    assert strategy.retrain_plan() == []
    assert all(strategy.book.serving(j) for j in range(CONFIG["n_shards"]))
    assert strategy.verify_forgotten(lc.ledger.tombstone_ids(lc.model("s3t").id))["passed"] is True
    assert np.mean(lc.predict("s3t", t0.X_probe) == t0.y_probe) > 0.5

    # tombstoned samples can never come back through a learn request
    with pytest.raises(lifecycle.TombstonedSample):
        lc.learn("s3t", task=t0.name, X=t0.X[:2], y=t0.y[:2], sample_ids=[victims[0], "fresh/1"])


def test_service_drain_job_runs_the_retrain(lc):
    lc.create_model("s3t", strategy="s3t", n_features=64, n_classes=10, config=CONFIG)
    t0 = digits_tasks()[0]
    learn_task(lc, "s3t", t0, n=100)
    lc.forget("s3t", samples=[f"{t0.name}/{i}" for i in range(10)])
    service = Service(lc, interval=0.05)
    service.start()
    try:
        def retrained_and_idle():
            reqs = lc.requests("s3t")
            return any(r.kind == "retrain" and r.done for r in reqs) and all(r.done for r in reqs)

        wait_for(retrained_and_idle, 60, "the retrain to run and the queue to empty", poll=0.1)
    finally:
        service.stop()
    kinds = {r.kind: r.status for r in lc.requests("s3t")}
    assert kinds == {"learn": "applied", "forget": "applied", "retrain": "applied"}
