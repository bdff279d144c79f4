"""`lifecycle serve --metrics-port`: Prometheus metrics, /healthz and JSON logs."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request

from sqlalchemy import text

import lifecycle
from lifecycle.telemetry import Telemetry
from lifecycle.testing.postgres import free_port
from tests.data import digits_tasks, learn_task, make_model
from tests.helpers import start_worker, wait_for


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def metric(body: str, name: str) -> float:
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


def test_metrics_health_and_json_logs_of_a_running_service(db_url, tmp_path):
    artifacts = tmp_path / "artifacts"
    lc = lifecycle.connect(db_url, artifacts=artifacts)
    make_model(lc)
    t0, t1, _ = digits_tasks()
    first = learn_task(lc, "digits", t0)
    port = free_port()
    worker = start_worker(db_url, artifacts, "--metrics-port", str(port))
    try:
        wait_for(lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 60, "the health endpoint")
        assert get(f"http://127.0.0.1:{port}/healthz") == (200, "ready\n")
        wait_for(lambda: lc.status(first.id).done, 60, "the first learn")
        lc.forget("digits", task="0-1")
        learn_task(lc, "digits", t1)
        wait_for(lambda: all(r.done for r in lc.requests()), 60, "the queue to drain")
        open_forget = lc.forget("digits", samples=["2-3/0"])
        _, body = get(f"http://127.0.0.1:{port}/metrics")
        assert metric(body, 'lifecycle_requests{kind="learn",status="applied"}') == 2.0
        assert metric(body, 'lifecycle_requests{kind="forget",status="applied"}') >= 1.0
        assert metric(body, 'lifecycle_step_duration_seconds_count{kind="learn",strategy="analytic"}') == 2.0
        assert metric(body, 'lifecycle_step_duration_seconds_count{kind="forget",strategy="analytic"}') >= 1.0
        assert metric(body, "lifecycle_worker_last_heartbeat_timestamp_seconds") > 0
        assert "lifecycle_oldest_pending_forget_due_in_seconds" in body
        assert "lifecycle_queue_depth" in body and "lifecycle_overdue_forgets 0.0" in body
        wait_for(lambda: lc.status(open_forget.id).done, 60, "the last forget")
    finally:
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=60)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    applied = [rec for rec in lines if rec["msg"].startswith("applied")]
    assert len(applied) == 4 and {rec["request_id"] for rec in applied} == {r.id for r in lc.requests()}
    assert all({"ts", "level", "logger", "model", "version"} <= rec.keys() for rec in applied)


def test_health_is_not_ready_when_the_schema_is_behind(lc):
    telemetry = Telemetry(lc.ledger)
    assert telemetry.health() == (True, "ready")
    with lc.ledger.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    ok, why = telemetry.health()
    assert not ok and "SchemaOutOfDate" in why
