"""The service writes relapse reports on a schedule, records them in the ledger and keeps the latest N;
the `report` and `bench` commands."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lifecycle.cli import app
from lifecycle.errors import InvalidConfig
from lifecycle.service import Service
from tests.data import digits_tasks, learn_task, make_model
from tests.helpers import wait_for

runner = CliRunner()


def _learn_and_forget(lc):
    make_model(lc)
    t0, t1, _ = digits_tasks()
    learn_task(lc, "digits", t0)
    learn_task(lc, "digits", t1)
    lc.drain()
    lc.forget("digits", task=t0.name, reason="licence revoked")
    lc.drain()
    return lc


@pytest.fixture
def ledger(lc):
    return _learn_and_forget(lc)


def test_scheduled_reports_are_recorded_and_pruned(clocked_lc, clock, tmp_path):
    ledger = _learn_and_forget(clocked_lc)
    service = Service(ledger, reports_dir=tmp_path, keep_reports=2)
    for _ in range(3):
        assert len(service.write_reports()) == 1
        clock.advance(1)  # distinct time stamps
    recorded = ledger.ledger.reports(ledger.model("digits").id)
    assert [r.model_version for r in recorded] == [3, 3, 3]
    runs = sorted((tmp_path / "digits").iterdir())
    assert len(runs) == 2  # the oldest was deleted, its ledger record stays
    assert not Path(recorded[0].html_path).parent.exists()
    assert [Path(r.html_path).parent for r in recorded[1:]] == runs
    latest = recorded[-1]
    html = Path(latest.html_path)
    assert html.parent == runs[-1]
    assert hashlib.sha256(html.read_bytes()).hexdigest() == latest.html_sha256
    data = json.loads(html.with_suffix(".json").read_text())
    assert data["model"]["name"] == "digits"
    assert hashlib.sha256(html.with_suffix(".json").read_bytes()).hexdigest() == latest.json_sha256
    # each report is an audited event
    assert [e.kind for e in ledger.ledger.events(ledger.model("digits").id)].count("report_written") == 3
    assert ledger.ledger.audit_problems()[1] == []


def test_the_service_schedules_reports_beside_the_drain(ledger, tmp_path):
    service = Service(ledger, interval=0.05, reports_dir=tmp_path, report_interval=0.2)
    service.start()
    try:
        assert {"drain", "relapse-reports"} <= {j.id for j in service.scheduler.get_jobs()}
        wait_for(ledger.ledger.reports, 30, "the first scheduled report")
    finally:
        service.stop()
    assert ledger.ledger.reports(), "no report written within 30 s"


@pytest.mark.parametrize("kwargs, message", [
    ({"report_cron": "every hour"}, "crontab"),
    ({"report_interval": 0}, "report_interval"),
    ({"keep_reports": 0}, "keep_reports"),
])
def test_bad_report_schedules_are_refused(lc, tmp_path, kwargs, message):
    with pytest.raises(InvalidConfig, match=message):
        Service(lc, reports_dir=tmp_path, **kwargs)


def test_a_cron_schedule_is_accepted(lc, tmp_path):
    service = Service(lc, reports_dir=tmp_path, report_cron="0 6 * * 1-5")
    assert "cron" in type(service.report_trigger).__name__.lower()


def test_report_command(ledger, db_url, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["report", "--model", "digits", "--out", str(out), "--db", db_url,
                                 "--artifacts", str(ledger.vault.artifacts.root)])
    assert result.exit_code == 0, result.output
    assert (out / "digits.html").read_text().count('<table id="relapse"') == 1
    assert json.loads((out / "digits.json").read_text())["model"]["name"] == "digits"


def test_bench_command_names_bad_input(tmp_path):
    result = runner.invoke(app, ["bench", "--strategies", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown strategy 'nope'" in result.output
    result = runner.invoke(app, ["bench", "--sequence", "L0 X1", "--out", str(tmp_path)])
    assert result.exit_code == 2
