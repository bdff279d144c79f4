"""Two worker processes on PostgreSQL drain 200 requests over 4 models:
each applied exactly once, in per-model ledger order."""

from __future__ import annotations

import signal
import threading
from collections import Counter, defaultdict

import numpy as np
import pytest

import lifecycle
from tests.helpers import start_worker, wait_for


@pytest.mark.parametrize("claim_batch", [1, 3])
def test_two_workers_apply_each_request_once_in_model_order(pg_url, tmp_path, claim_batch):
    artifacts = tmp_path / "artifacts"
    lc = lifecycle.connect(pg_url, artifacts=artifacts)
    rng = np.random.default_rng(0)
    probe = (rng.random((20, 8), dtype=np.float32), rng.integers(0, 4, 20))
    submitted = []
    for m in range(4):
        lc.create_model(f"m{m}", strategy="analytic", n_features=8, n_classes=4, config={"width": 16})
    for step in range(50):
        for m in range(4):
            model = f"m{m}"
            if step % 5 == 4:  # every fifth request forgets a sample learned two steps ago
                req = lc.forget(model, samples=[f"{model}/{step - 2}/0"])
            else:
                req = lc.learn(model, task=f"t{step % 3}", X=rng.random((4, 8), dtype=np.float32),
                               y=rng.integers(0, 4, 4), sample_ids=[f"{model}/{step}/{i}" for i in range(4)],
                               probe=probe)
            submitted.append(req)
    assert len(submitted) == 200

    workers = [start_worker(pg_url, artifacts, "--interval", "0.05", "--claim-batch", str(claim_batch))
               for _ in range(2)]
    try:
        wait_for(lambda: not lc.requests(statuses=["queued", "running"]), 240, "the queue to drain")
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        outputs = [w.communicate(timeout=60)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs

    final = {r.id: r for r in lc.requests()}
    assert Counter(r.status for r in final.values()) == {"applied": 200}
    applied_events = Counter(e.request_id for e in lc.ledger.events() if e.kind == "applied")
    assert set(applied_events.values()) == {1} and len(applied_events) == 200
    by_model = defaultdict(list)
    for r in submitted:
        by_model[r.model].append(final[r.id].result_version)
    for model, versions in by_model.items():
        assert versions == list(range(1, 51)), model  # ledger order is version order
        assert [v.version for v in lc.versions(model)] == list(range(1, 51))
    owners = {e.detail["owner"] for e in lc.ledger.events() if e.kind == "claimed"}
    assert len(owners) == 2  # both workers took part


def _two_models_with_queued_learns(url, tmp_path):
    lc = lifecycle.connect(url, artifacts=tmp_path / "artifacts")
    rng = np.random.default_rng(1)
    probe = (rng.random((4, 4), dtype=np.float32), np.array([0, 1, 0, 1]))
    requests = {}
    for name in ("first", "second"):
        lc.create_model(name, strategy="analytic", n_features=4, n_classes=2, config={"width": 8})
        requests[name] = lc.learn(name, task="t", X=rng.random((2, 4), dtype=np.float32), y=np.array([0, 1]),
                                  sample_ids=[f"{name}/0", f"{name}/1"], probe=probe)
    return lc, requests


def test_claim_skips_a_model_whose_row_another_transaction_holds(pg_url, tmp_path):
    lc, requests = _two_models_with_queued_learns(pg_url, tmp_path)
    first = lc.ledger.model("first")
    with lc.ledger.engine.connect() as other:
        other.exec_driver_sql(f"SELECT id FROM models WHERE id = {first.id} FOR NO KEY UPDATE")
        claim = lc.ledger.queue.claim("w1", 30.0)  # returns at once instead of waiting for the lock
        assert claim is not None and claim.request.id == requests["second"].id
        assert lc.ledger.queue.claim("w2", 30.0) is None  # the only other head sits behind the held lock
        other.rollback()
    claim = lc.ledger.queue.claim("w2", 30.0)
    assert claim is not None and claim.request.id == requests["first"].id


def waiting_for_a_lock(lc) -> int:
    """Sessions of this database that PostgreSQL has waiting for a lock."""
    with lc.ledger.engine.connect() as conn:  # a new transaction: pg_stat_activity is read afresh
        return conn.exec_driver_sql("SELECT count(*) FROM pg_stat_activity "
                                    "WHERE datname = current_database() AND wait_event_type = 'Lock'").scalar_one()


def test_submit_takes_its_sequence_number_only_under_the_model_lock(pg_url, tmp_path):
    # Two submits to one model must commit in sequence order, or a worker could
    # apply the later one first; so a submit waits for the model lock before
    # inserting, while a submit to another model does not wait at all.
    lc, requests = _two_models_with_queued_learns(pg_url, tmp_path)
    first = lc.ledger.model("first")
    done = {}

    def submit(name):
        done[name] = lc.forget(name, samples=[f"{name}/0"])

    with lc.ledger.engine.connect() as other:
        other.exec_driver_sql(f"SELECT id FROM models WHERE id = {first.id} FOR NO KEY UPDATE")
        blocked = threading.Thread(target=submit, args=("first",))
        blocked.start()
        submit("second")
        wait_for(lambda: waiting_for_a_lock(lc) == 1, 30, "the first model's submit to wait for its lock")
        assert blocked.is_alive() and "first" not in done
        other.rollback()
    blocked.join(timeout=30)
    assert not blocked.is_alive()
    seq = {r.id: i for i, r in enumerate(lc.requests())}
    assert seq[done["second"].id] < seq[done["first"].id]  # numbered in commit order
