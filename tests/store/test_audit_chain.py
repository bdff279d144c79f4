"""Tampering with the event table directly in SQL is caught and located."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

import lifecycle
from lifecycle.cli import app
from lifecycle.migrations import migrate
from lifecycle.store import audit
from lifecycle.store.engine import make_engine
from tests.data import digits_tasks, learn_task, make_model

runner = CliRunner()


@pytest.fixture
def ledger(db_url, tmp_path):
    lc = lifecycle.connect(db_url, artifacts=tmp_path / "a")
    make_model(lc, "m1")
    make_model(lc, "m2")
    t0, t1, _ = digits_tasks()
    learn_task(lc, "m1", t0)
    learn_task(lc, "m1", t1)
    learn_task(lc, "m2", t0)
    lc.drain()
    lc.forget("m1", task="0-1")
    lc.drain()
    return lc


def sql(lc, statement, **params):
    with lc.ledger.engine.begin() as conn:
        return conn.execute(text(statement), params).all() if statement.lstrip().upper().startswith("SELECT") \
            else conn.execute(text(statement), params)


def m1_events(lc):
    return sql(lc, "SELECT e.id, e.seq FROM events e JOIN models m ON m.id = e.model_id "
                   "WHERE m.name = 'm1' ORDER BY e.seq")


def verify(lc):
    checked, problems = lc.ledger.audit_problems()
    return checked, [str(p) for p in problems]


def test_an_untouched_ledger_verifies(ledger, db_url):
    checked, problems = verify(ledger)
    assert problems == [] and checked == len(ledger.ledger.events())
    result = CliRunner().invoke(app, ["audit", "verify", "--db", db_url])
    assert result.exit_code == 0 and "intact" in result.output


def test_an_altered_row_is_named(ledger, db_url):
    event_id, seq = m1_events(ledger)[3]
    sql(ledger, "UPDATE events SET kind = 'cancelled' WHERE id = :id", id=event_id)
    _, problems = verify(ledger)
    assert problems == [f"model 'm1', event id {event_id} (seq {seq}): its content does not match its hash: the "
                        "row was altered or forged"]
    result = CliRunner().invoke(app, ["audit", "verify", "--db", db_url])
    assert result.exit_code == 1 and f"event id {event_id}" in result.output


def test_a_deleted_row_is_located(ledger):
    rows = m1_events(ledger)
    sql(ledger, "DELETE FROM events WHERE id = :id", id=rows[4][0])
    _, problems = verify(ledger)
    assert len(problems) == 1
    assert f"event id {rows[5][0]} (seq {rows[5][1]})" in problems[0] and "deleted" in problems[0]


def test_a_deleted_last_row_is_caught_by_the_head(ledger):
    sql(ledger, "DELETE FROM events WHERE id = :id", id=m1_events(ledger)[-1][0])
    _, problems = verify(ledger)
    assert len(problems) == 1 and "trailing rows were deleted" in problems[0]


def test_an_inserted_row_is_named(ledger):
    last_id, last_seq = m1_events(ledger)[-1]
    model_id = sql(ledger, "SELECT id FROM models WHERE name = 'm1'")[0][0]
    prev = sql(ledger, "SELECT hash, at FROM events WHERE id = :id", id=last_id)[0]
    sql(ledger, "INSERT INTO events (model_id, request_id, kind, detail, at, seq, prev_hash, hash) "
                "VALUES (:m, NULL, 'applied', '{}', :at, :seq, :prev, :h)",
        m=model_id, at=prev[1], seq=last_seq + 1, prev=prev[0], h="0" * 64)
    new_id = m1_events(ledger)[-1][0]
    _, problems = verify(ledger)
    assert problems == [f"model 'm1', event id {new_id} (seq {last_seq + 1}): its content does not match its "
                        "hash: the row was altered or forged"]


def test_upgrading_an_older_ledger_chains_its_existing_events(db_url):
    engine = make_engine(db_url)
    migrate.upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO models (name, strategy, config, n_features, n_classes, relapse_threshold, "
                          "forget_due_days, subject_salt, created_at) VALUES ('old', 'analytic', '{}', 4, 2, 0.05, "
                          "30, 'salt', '2026-01-01 00:00:00')"))
        for kind in ("model_created", "submitted", "claimed"):
            conn.execute(text("INSERT INTO events (model_id, request_id, kind, detail, at) VALUES "
                              "(1, NULL, :k, '{\"n\": 1}', '2026-01-02 00:00:00')"), {"k": kind})
    with pytest.raises(lifecycle.SchemaOutOfDate, match="revision 0001"):
        lifecycle.connect(db_url, artifacts="unused")
    migrate.upgrade(engine)
    lc = lifecycle.connect(db_url, artifacts="unused")
    assert verify(lc) == (4, [])  # the three, and the re-keying of identifiers (0006)
    lc.ledger.create_model("new", "analytic", {}, 4, 2, 0.05, 30)  # appends keep chaining
    assert verify(lc) == (5, [])


def test_free_text_can_be_redacted_without_breaking_verification(ledger):
    req = ledger.forget("m2", task="0-1", reason="Jane Doe asked on the phone", requested_by="Jane's manager")
    ledger.redact(req.id, fields=("reason", "requested_by"), why="a name was typed into the reason",
                  requested_by="dpo")
    assert ledger.status(req.id).reason is None
    assert verify(ledger)[1] == []
    with ledger.ledger.engine.begin() as conn:  # text slipped back in after the redaction
        conn.execute(text("UPDATE requests SET reason = 'Jane Doe asked' WHERE id = :i"), {"i": req.id})
    assert "reason was redacted but holds text again" in verify(ledger)[1][0]
    with pytest.raises(lifecycle.InvalidRequest, match="fields must be some of"):
        ledger.redact(req.id, fields=("target",), why="no")


def test_cli_checkpoints_catch_a_rewritten_chain(ledger, db_url, tmp_path):
    folder = tmp_path / "checkpoints"
    made = runner.invoke(app, ["audit", "checkpoint", "--checkpoints", str(folder), "--db", db_url])
    assert made.exit_code == 0 and len(list(folder.glob("checkpoint-*.json"))) == 1, made.output
    ok = runner.invoke(app, ["audit", "verify", "--checkpoints", str(folder), "--db", db_url])
    assert ok.exit_code == 0 and "1 checkpoint(s) hold" in ok.output, ok.output
    # re-link m2's chain from its first event on, as a rewrite that keeps the chain self-consistent would
    rows = sql(ledger, "SELECT e.id, e.seq, e.request_id, e.kind, e.detail, e.at FROM events e JOIN models m "
                       "ON m.id = e.model_id WHERE m.name = 'm2' ORDER BY e.seq")
    prev = None
    for eid, seq, rid, kind, detail, at in rows:
        detail = json.loads(detail) if isinstance(detail, str) else detail
        if seq == 1:
            detail = {**detail, "note": "rewritten"}
        at = (at if isinstance(at, dt.datetime) else dt.datetime.fromisoformat(at)).replace(tzinfo=dt.timezone.utc)
        digest = audit.event_hash(2, seq, rid, kind, detail, at, prev)
        sql(ledger, "UPDATE events SET detail = :d, prev_hash = :p, hash = :h WHERE id = :i",
            d=json.dumps(detail), p=prev, h=digest, i=eid)
        prev = digest
    sql(ledger, "UPDATE models SET audit_head = :h WHERE name = 'm2'", h=prev)
    assert verify(ledger)[1] == []  # consistent on its own
    bad = runner.invoke(app, ["audit", "verify", "--checkpoints", str(folder), "--db", db_url])
    assert bad.exit_code == 1 and "model 'm2'" in bad.output and "rewritten" in bad.output, bad.output
