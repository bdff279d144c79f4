"""A person's erasure fans out into one forget per model holding their samples,
records that the others hold none, and completes when every forget is applied
and certified; the audit chain replays with it."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from lifecycle.errors import IdempotencyConflict, InvalidRequest, RequestNotCancellable, UnknownRequest
from tests.data import alternating_subjects, digits_tasks, learn_task, make_model
from tests.helpers import at_once


def _three_models(lc):
    t0, t1, _ = digits_tasks()
    for name in ("a", "b", "c"):
        make_model(lc, name)
    learn_task(lc, "a", t0, subjects=alternating_subjects(len(t0.y), ("alice", "bob")))
    learn_task(lc, "b", t1, subjects=["carol"] * len(t1.y))
    lc.drain()


def _audit_clean(lc):
    _, problems = lc.ledger.audit_problems()
    assert problems == []


def test_an_erasure_fans_out_completes_when_certified_and_audits(lc):
    _three_models(lc)
    e = lc.erase(subject="alice", reason="art. 17 request", requested_by="dpo")
    assert e.status == "pending" and e.due_at - e.received_at == dt.timedelta(days=30)
    parts = {p.model: p for p in e.parts}
    assert (parts["a"].outcome, parts["b"].outcome, parts["c"].outcome) == ("forget", "none", "none")
    assert parts["a"].held > 0
    forget = lc.status(parts["a"].request_id)
    assert forget.kind == "forget" and forget.due_at == e.due_at and forget.requested_by == "dpo"
    # the chain of every model records its part: the forget it queued, or that it held none
    assert [ev.detail["erasure"] for ev in lc.events("a") if ev.kind == "erasure"] == [e.id]
    assert [ev.detail["outcome"] for ev in lc.events("c") if ev.kind == "erasure_none"] == ["none"]
    claim = lc.ledger.queue.claim("w", 60.0)
    assert claim.request.id == forget.id and lc.erasure(e.id).status == "in_progress"
    lc.ledger.queue.release(claim, "test")
    lc.drain()
    done = lc.erasure(e.id[:8])
    assert done.status == "completed" and done.finished_at is not None and done.done
    assert all(p.certified for p in done.parts if p.request_id)
    assert lc.certificate(parts["a"].request_id)["certificate"]
    _audit_clean(lc)
    # again: the model already forgot them, nothing is queued, the erasure completes at once
    again = lc.erase(subject="alice")
    assert {p.model: p.outcome for p in again.parts}["a"] == "already_forgotten" and again.status == "completed"
    assert [x.id for x in lc.erasures()] == [e.id, again.id]  # oldest first
    assert [x.id for x in lc.erasures(["pending"])] == []


def test_a_subject_held_nowhere_completes_at_once_and_keys_are_idempotent(lc):
    _three_models(lc)
    nobody = lc.erase(subject="zed", idempotency_key="k-1")
    assert nobody.status == "completed" and {p.outcome for p in nobody.parts} == {"none"}
    assert lc.erase(subject="zed", idempotency_key="k-1").id == nobody.id
    with pytest.raises(IdempotencyConflict):
        lc.erase(subject="carol", idempotency_key="k-1")
    with pytest.raises(InvalidRequest):
        lc.erase(subject="carol", due_days=400)
    with pytest.raises(InvalidRequest):
        lc.erase(subject="carol", status_callback_urls=["ftp://x"])
    with pytest.raises(UnknownRequest):
        lc.erasure("0000")


def test_a_pending_erasure_cancels_its_own_forgets_never_one_it_joined(lc):
    _three_models(lc)
    theirs = lc.forget("b", subject="carol")
    e = lc.erase(subject="carol")
    assert {p.model: (p.outcome, p.request_id) for p in e.parts}["b"] == ("joined", theirs.id)
    bob = lc.erase(subject="bob")
    own = next(p.request_id for p in bob.parts if p.outcome == "forget")
    assert lc.cancel_erasure(bob.id).status == "cancelled"
    assert lc.status(own).status == "cancelled"
    with pytest.raises(RequestNotCancellable):
        lc.cancel_erasure(bob.id)
    assert lc.cancel_erasure(e.id).status == "cancelled"
    assert lc.status(theirs.id).status == "queued"
    lc.drain()
    assert lc.erasure(e.id).status == "cancelled"  # cancelled stays cancelled
    _audit_clean(lc)


def test_an_erasure_whose_forget_fails_is_failed_not_completed(lc):
    _three_models(lc)
    e = lc.erase(subject="bob")
    own = next(p.request_id for p in e.parts if p.outcome == "forget")
    lc.cancel(own)  # someone cancels the per-model forget under it
    assert lc.erasure(e.id).status == "failed"
    _audit_clean(lc)


def test_tokens_are_hashed_scoped_and_revocable(lc):
    token, secret = lc.create_token("crm", scopes=["erasure:submit", "read"], created_by="ops")
    assert secret.startswith(f"lct_{token.id}_") and len(secret) > 40
    found = lc.authenticate(secret)
    assert found.id == token.id and found.allows("read") and not found.allows("admin")
    assert lc.authenticate(secret + "x") is None and lc.authenticate("") is None
    # only its hash is stored
    from sqlalchemy import text
    with lc.ledger.engine.connect() as conn:
        stored = conn.execute(text("select token_sha256 from api_tokens")).scalar()
    assert secret not in stored and len(stored) == 64
    with pytest.raises(InvalidRequest):
        lc.create_token("x", scopes=["everything"])
    assert lc.revoke_token(token.id).revoked_at is not None
    assert not lc.authenticate(secret).allows("read")
    assert [t.id for t in lc.tokens()] == [token.id]
    with pytest.raises(UnknownRequest):
        lc.revoke_token("nope")


@pytest.mark.parametrize("key", [None, "one-request"])
def test_two_erasures_of_one_subject_at_once_queue_one_forget_per_model(db_url, tmp_path, key):
    """Two processes' handles erase the same person at the same moment: each
    model gets one forget, which the other erasure joins, and both complete;
    with the same idempotency key, both get the one erasure and no error."""
    import lifecycle

    def connect():
        return lifecycle.connect(db_url, artifacts=tmp_path / "artifacts", keys=tmp_path / "keys")

    lc = connect()
    _three_models(lc)
    results, errors = at_once(*(lambda h=h: h.erase(subject="alice", reason="at once", idempotency_key=key)
                                for h in (connect(), connect())))
    assert errors == [] and len(results) == 2
    forgets = [r for r in lc.requests("a") if r.kind == "forget"]
    assert len(forgets) == 1
    if key is None:
        outcomes = sorted({p.model: p.outcome for p in e.parts}["a"] for e in results)
        assert outcomes == ["forget", "joined"]
    else:
        assert results[0].id == results[1].id and len(lc.erasures()) == 1
    lc.drain()
    assert [lc.erasure(e.id).status for e in results] == ["completed", "completed"]
    _audit_clean(lc)


def test_an_erasures_free_text_is_redacted_with_its_forgets_and_the_audit_still_holds(lc):
    _three_models(lc)
    e = lc.erase(subject="alice", reason="Alice Example phoned on 3 March", requested_by="Alice's manager")
    joined = lc.forget("b", subject="carol", reason="carol's own request")
    other = lc.erase(subject="carol", reason="kept")  # joins carol's forget on b: not its text to redact
    forget = {p.model: p for p in e.parts}["a"].request_id
    with pytest.raises(InvalidRequest, match="fields must be some of"):
        lc.redact_erasure(e.id, fields=("subject_hash",), why="no")
    assert lc.erasure(e.id).reason == "Alice Example phoned on 3 March"  # a refused redaction changed nothing
    done = lc.redact_erasure(e.id[:8], fields=("reason", "requested_by"), why="a name in the reason",
                             requested_by="dpo")
    assert (done.reason, done.requested_by) == (None, None)
    assert (lc.status(forget).reason, lc.status(forget).requested_by) == (None, None)
    assert [ev.detail["erasure"] for ev in lc.events("a") if ev.kind == "redacted"] == [e.id]
    assert lc.status(joined.id).reason == "carol's own request" and lc.erasure(other.id).reason == "kept"
    _audit_clean(lc)
    lc.drain()
    _audit_clean(lc)


def test_an_erasure_redacted_while_a_worker_applies_its_forget_keeps_both_and_the_audit_holds(db_url, tmp_path):
    """The redaction and the forget's commit run at the same moment from two handles: the forget is
    applied and certified, its text is gone, and every chain still verifies."""
    import threading

    import lifecycle

    def connect():
        return lifecycle.connect(db_url, artifacts=tmp_path / "artifacts", keys=tmp_path / "keys")

    lc = connect()
    _three_models(lc)
    e = lc.erase(subject="alice", reason="Alice Example phoned", requested_by="Alice's manager")
    forget = {p.model: p for p in e.parts}["a"].request_id
    redactor, worker = connect(), connect()
    start, errors = threading.Barrier(2), []

    def run(call):
        start.wait()
        try:
            call()
        except Exception as exc:  # surfaced below, with the thread's error
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(call,)) for call in (
        lambda: redactor.redact_erasure(e.id, fields=("reason", "requested_by"), why="a name in the reason"),
        worker.drain)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    done = lc.status(forget)
    assert done.status == "applied" and lc.certificate(forget)["certificate"]
    assert (done.reason, done.requested_by) == (None, None)
    assert lc.erasure(e.id).status == "completed" and lc.erasure(e.id).reason is None
    # the signed certificate, issued before or after the redaction, carries keyed digests of the text only
    certificate = lc.certificate(forget)
    assert "Alice" not in json.dumps(certificate)
    # (None when the redaction came first, the text's keyed digest when the step read it before)
    assert certificate["certificate"]["request"]["text"]["reason"] in (None, lc.ids.text("Alice Example phoned"))
    _audit_clean(lc)


def test_erasures_submitted_at_once_share_one_transaction_each_as_if_alone(lc):
    """Erasures that arrive while another is being written go in together: one forget per
    model for a subject named twice (the later joins it), a repeated key gives the first
    erasure, a reused key with another subject is refused alone, and the audit holds."""
    import threading
    import time

    _three_models(lc)
    first = lc.erase(subject="zed", idempotency_key="k")
    intake = lc.erasure_intake
    write, batches = intake.write, []
    entered, release = threading.Event(), threading.Event()

    def gated(items):
        batches.append(len(items))
        if len(batches) == 1:
            entered.set()
            release.wait(10)
        return write(items)

    intake.write = gated
    calls = {"gate": dict(subject="nobody"), "alice-1": dict(subject="alice"), "alice-2": dict(subject="alice"),
             "again": dict(subject="zed", idempotency_key="k"), "reused": dict(subject="carol", idempotency_key="k"),
             "bob-1": dict(subject="bob", idempotency_key="b"), "bob-2": dict(subject="bob", idempotency_key="b")}
    out = {}

    def call(name):
        try:
            out[name] = lc.erase(**calls[name])
        except Exception as exc:  # checked below
            out[name] = exc

    gate = threading.Thread(target=call, args=("gate",))
    gate.start()
    assert entered.wait(10)
    threads = [threading.Thread(target=call, args=(n,)) for n in calls if n != "gate"]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(intake._waiting) < len(threads) and time.monotonic() < deadline:
        time.sleep(0.005)
    release.set()
    for t in [gate, *threads]:
        t.join(10)
    assert batches == [1, len(threads)]
    assert out["again"].id == first.id
    assert isinstance(out["reused"], IdempotencyConflict)
    assert out["bob-1"].id == out["bob-2"].id
    assert sorted({p.model: p.outcome for p in out[n].parts}["a"] for n in ("alice-1", "alice-2")) == \
        ["forget", "joined"]
    assert len([r for r in lc.requests("a") if r.kind == "forget"]) == 2  # alice's and bob's
    assert len(lc.erasures()) == 5  # zed, nobody, alice twice, bob
    lc.drain()
    # the worker brought them up to date as it applied their forgets, without a refresh from here
    from lifecycle.store.erasures import Erasures
    assert {e.status for e in Erasures(lc.ledger).list()} == {"completed"}
    _audit_clean(lc)


def test_refreshes_at_once_announce_a_status_change_once(db_url, tmp_path):
    """A worker's refresh, the service's job and status polls can bring one erasure up to
    date at the same moment: its change is stored and its callback written once."""
    import json

    import lifecycle
    from lifecycle.store.erasures import Erasures
    from lifecycle.store.outbox import Outbox

    def connect():
        return lifecycle.connect(db_url, artifacts=tmp_path / "artifacts", keys=tmp_path / "keys")

    lc = connect()
    _three_models(lc)
    e = lc.erase(subject="alice", status_callback_urls=["http://127.0.0.1:9/cb"])
    claim = lc.ledger.queue.claim("w", 60.0)  # its forget starts: the stored "pending" is now behind
    assert claim.request.id == next(p.request_id for p in e.parts if p.request_id)
    results, errors = at_once(*(lambda h=h: Erasures(h.ledger).refresh(e.id) for h in [connect() for _ in range(4)]))
    assert errors == [] and {r[0].status for r in results} == {"in_progress"}
    assert sorted(r[1] for r in results if r[1] is not None) == ["pending"]  # one of them made the change
    announced = [json.loads(d.body)["lifecycle_status"] for d in Outbox(lc.ledger).list(e.id)]
    assert announced == ["pending", "in_progress"]
