"""Real worker processes: SIGKILL mid-step loses nothing; SIGTERM exits cleanly."""

from __future__ import annotations

import signal

import numpy as np

import lifecycle
import tests.slow_strategy  # noqa: F401 (registers slow_analytic here too)
from tests.data import accuracy_of, digits_tasks, learn_task
from tests.helpers import start_worker, wait_for


def test_sigkill_mid_step_loses_nothing_and_applies_once(db_url, tmp_path):
    artifacts, markers = tmp_path / "artifacts", tmp_path / "markers"
    markers.mkdir()
    lc = lifecycle.connect(db_url, artifacts=artifacts)
    lc.create_model("digits", strategy="slow_analytic", n_features=64, n_classes=10,
                    config={"width": 128, "sleep_seconds": 3.0, "marker_dir": str(markers)})
    t0, t1, _ = digits_tasks()
    first = learn_task(lc, "digits", t0)
    lc.drain()  # version 1 serves from here on
    assert lc.status(first.id).status == "applied"
    before = lc.predict("digits", t0.X_probe)

    second = learn_task(lc, "digits", t1)
    worker = start_worker(db_url, artifacts, "--lease-seconds", "2")
    try:
        wait_for(lambda: any(p.name.startswith("started-2-3") for p in markers.iterdir()), 60, "the step to start")
        assert lc.status(second.id).status == "running"
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    # the previous version keeps serving, the request waits for its lease to expire
    assert [v.version for v in lc.versions("digits")] == [1]
    assert np.array_equal(lc.predict("digits", t0.X_probe), before)
    assert lc.status(second.id).status == "running"

    survivor = start_worker(db_url, artifacts, "--lease-seconds", "2")
    try:
        done = wait_for(lambda: lc.status(second.id).done and lc.status(second.id), 90, "the re-run")
    finally:
        survivor.send_signal(signal.SIGTERM)
        survivor.wait(60)
    assert done.status == "applied" and done.attempt == 2 and done.result_version == 2
    assert [v.request_id for v in lc.versions("digits")] == [first.id, second.id]
    kinds = [e.kind for e in lc.ledger.events(request_id=second.id)]
    assert kinds == ["submitted", "claimed", "requeued", "claimed", "applied"]
    assert accuracy_of(lc, "digits", t1) > 0.9


def test_sigterm_finishes_the_current_step_and_exits_zero(db_url, tmp_path):
    artifacts, markers = tmp_path / "artifacts", tmp_path / "markers"
    markers.mkdir()
    lc = lifecycle.connect(db_url, artifacts=artifacts)
    lc.create_model("digits", strategy="slow_analytic", n_features=64, n_classes=10,
                    config={"width": 128, "sleep_seconds": 1.5, "marker_dir": str(markers)})
    t0, t1, _ = digits_tasks()
    a, b = learn_task(lc, "digits", t0), learn_task(lc, "digits", t1)
    worker = start_worker(db_url, artifacts)
    wait_for(lambda: any(markers.iterdir()), 60, "the first step to start")
    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, out
    # the step in flight completed; nothing new was claimed after the signal
    assert lc.status(a.id).status == "applied"
    assert lc.status(b.id).status == "queued"


def test_sigterm_hands_a_long_step_back_after_the_grace_period(db_url, tmp_path):
    artifacts, markers = tmp_path / "artifacts", tmp_path / "markers"
    markers.mkdir()
    lc = lifecycle.connect(db_url, artifacts=artifacts)
    lc.create_model("digits", strategy="slow_analytic", n_features=64, n_classes=10,
                    config={"width": 128, "sleep_seconds": 30.0, "marker_dir": str(markers)})
    t0, *_ = digits_tasks()
    a = learn_task(lc, "digits", t0)
    worker = start_worker(db_url, artifacts, "--grace-seconds", "0.5")
    wait_for(lambda: any(markers.iterdir()), 60, "the step to start")
    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, out
    req = lc.status(a.id)
    assert req.status == "queued" and req.lease_owner is None
    assert "released" in [e.kind for e in lc.ledger.events(request_id=a.id)]
