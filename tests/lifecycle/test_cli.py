from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import lifecycle
from lifecycle.cli import app
from lifecycle.migrations import migrate
from tests.data import digits_tasks, learn_task, make_model
from tests.helpers import REPO

runner = CliRunner()


@pytest.fixture
def ledger(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    lc = lifecycle.connect(url)
    make_model(lc)
    t0, t1, _ = digits_tasks()
    learn_task(lc, "digits", t0, subjects=["alice"] * len(t0.y))
    learn_task(lc, "digits", t1)
    lc.drain()
    return url, lc


def test_db_upgrade_creates_a_ledger(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    result = runner.invoke(app, ["db", "upgrade", "--db", url])
    assert result.exit_code == 0, result.output
    assert f"empty -> {migrate.head_revision()}" in result.output
    lifecycle.connect(url, create=False)


def test_submit_forget_status_history_relapse(ledger):
    url, lc = ledger
    result = runner.invoke(app, ["submit-forget", "--db", url, "--model", "digits", "--task", "2-3",
                                 "--reason", "licence revoked", "--due-in-days", "3"])
    assert result.exit_code == 0, result.output
    request_id = result.output.strip().splitlines()[-1]
    assert lc.status(request_id).status == "queued"
    result = runner.invoke(app, ["status", "--db", url, "--json", "--open"])
    rows = json.loads(result.output)
    assert [r["id"] for r in rows] == [request_id] and rows[0]["overdue"] is False
    lc.drain()
    result = runner.invoke(app, ["history", "--db", url, "--model", "digits"])
    assert result.exit_code == 0 and "(F)" in result.output
    result = runner.invoke(app, ["relapse", "--db", url, "--json"])
    summary = json.loads(result.output)
    forgotten = summary["models"][0]["forgotten_tasks"]
    assert [t["task"] for t in forgotten] == ["2-3"] and forgotten[0]["relapsed"] is False


def test_bad_cli_input_gets_a_typed_error_and_exit_2(ledger):
    url, lc = ledger
    before = len(lc.requests())
    proc = subprocess.run([sys.executable, "-m", "lifecycle.cli", "submit-forget", "--db", url, "--model", "digits",
                           "--sample", "ghost-id"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "UnknownSamples" in proc.stderr and "ghost-id" in proc.stderr
    assert len(lc.requests()) == before


def test_database_commands_do_not_import_torch(ledger):
    url, _ = ledger
    code = (
        "import sys\n"
        "from lifecycle.cli import app\n"
        "for args in (['db','upgrade'], ['status'], ['history','--model','digits'], ['relapse'],\n"
        "             ['submit-forget','--model','digits','--subject','alice']):\n"
        "    try:\n"
        f"        app(args + ['--db', {url!r}])\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code in (0, None), (args, exc.code)\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("NO-TORCH")
