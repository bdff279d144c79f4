from __future__ import annotations

import datetime as dt
import json

import pytest
from typer.testing import CliRunner

import lifecycle
from lifecycle.cli import app
from tests.data import digits_tasks, learn_task, make_model
from tests.helpers import ManualClock


def test_extending_a_deadline_is_explicit_and_audited(lc):
    make_model(lc)
    t0, *_ = digits_tasks()
    learn = learn_task(lc, "digits", t0)
    lc.drain()
    req = lc.forget("digits", task="0-1")
    later = req.due_at + dt.timedelta(days=60)
    with pytest.raises(lifecycle.InvalidRequest, match="only extended"):
        lc.extend_deadline(req.id, until=req.due_at - dt.timedelta(days=1), reason="x")
    with pytest.raises(lifecycle.InvalidRequest, match="reason must not be empty"):
        lc.extend_deadline(req.id, until=later, reason=" ")
    with pytest.raises(lifecycle.InvalidRequest, match="only forgets have deadlines"):
        lc.extend_deadline(learn.id, until=later, reason="x")
    extended = lc.extend_deadline(req.id, until=later, reason="complex request; subject informed",
                                  requested_by="dpo")
    assert extended.due_at == later
    event = [e for e in lc.ledger.events(request_id=req.id) if e.kind == "deadline_extended"][0]
    assert event.detail["reason"] == "complex request; subject informed" and event.detail["by"] == "dpo"
    assert event.detail["previous"] == req.due_at.isoformat()
    lc.drain()
    with pytest.raises(lifecycle.RequestNotCancellable, match="already applied"):
        lc.extend_deadline(req.id, until=later + dt.timedelta(days=1), reason="x")


def test_status_lists_overdue_forgets_first(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    # The requests are received an hour ago, rather than the test waiting for
    # a deadline to pass: the command line reads the real time, and by that
    # the forget due a second after it was received is long overdue.
    clock = ManualClock(dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1))
    lc = lifecycle.connect(url, clock=clock)
    make_model(lc)
    t0, t1, _ = digits_tasks()
    learn_task(lc, "digits", t0)
    learn_task(lc, "digits", t1)
    lc.drain()
    on_time = lc.forget("digits", task="0-1")
    late = lc.forget("digits", task="2-3", due_at=clock() + dt.timedelta(seconds=1))
    assert late.received_at == on_time.received_at == clock()
    assert lc.ledger.overdue_forgets(clock()) == 0
    assert lc.ledger.overdue_forgets(clock.advance(2)) == 1  # the late one, two seconds on
    result = CliRunner().invoke(app, ["status", "--db", url, "--open", "--json"])
    rows = json.loads(result.output)
    assert [r["id"] for r in rows] == [late.id, on_time.id]
    assert [r["overdue"] for r in rows] == [True, False]
    result = CliRunner().invoke(app, ["extend-deadline", late.id, "--days", "30", "--reason", "backlog", "--db", url])
    assert result.exit_code == 0, result.output
    assert lc.status(late.id).due_at > dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=29)
