"""The whole path of requests through the worker, on SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
import pytest

import lifecycle
from lifecycle.vault import Erased
from lifecycle.store.records import Claim
from tests.data import accuracy_of, alternating_subjects, digits_tasks, learn_task, make_model

# Leases in the tests that expire them: long in real time, so a worker's
# heartbeat never renews one behind the test's back; the test moves its clock
# past the lease instead of sleeping through it.
LEASE = 60.0


def test_learn_forget_relearn_end_to_end(lc):
    make_model(lc)
    t0, t1, t2 = digits_tasks()
    subjects = alternating_subjects(len(t0.y))
    reqs = [learn_task(lc, "digits", t0, subjects=subjects), learn_task(lc, "digits", t1),
            learn_task(lc, "digits", t2)]
    assert [r.status for r in reqs] == ["queued"] * 3
    done = lc.drain()
    assert [r.id for r in done] == [r.id for r in reqs]
    assert [r.status for r in done] == ["applied"] * 3
    assert [r.result_version for r in done] == [1, 2, 3]
    for t in (t0, t1, t2):
        assert accuracy_of(lc, "digits", t) > 0.9

    forget = lc.forget("digits", task="2-3", reason="licence revoked", requested_by="legal")
    assert forget.due_at is not None and (forget.due_at - forget.received_at).days == 30
    lc.drain()
    forget = lc.wait(forget.id, timeout=5)
    assert forget.status == "applied" and forget.result_version == 4
    # class-incremental head: with every sample of classes 2 and 3 removed they are never predicted
    assert accuracy_of(lc, "digits", t1) == 0.0
    assert accuracy_of(lc, "digits", t0) > 0.9
    tasks = {t.name: t for t in lc.tasks("digits")}
    assert tasks["2-3"].state == "forgotten" and tasks["2-3"].forgotten_at_version == 4

    last = lc.history("digits")[-1]
    roles = {e.task: e.role for e in last.evaluations}
    assert roles == {"0-1": "retained", "2-3": "forgotten", "4-5": "retained"}

    cert = lc.certificate(forget.id)["certificate"]
    assert cert["exactness"] == "exact" and cert["version_before"] == 3 and cert["version_after"] == 4
    assert cert["removed"]["count"] == len(t1.y)
    assert "2-3/0" not in str(cert)  # hashed ids only
    assert cert["verification"]["tasks_forgotten_by_this_request"] == ["2-3"]

    # a subject's erasure removes exactly that subject's samples
    n_alice = subjects.count("alice")
    erase = lc.forget("digits", subject="alice", reason="GDPR art. 17")
    lc.drain()
    assert lc.certificate(erase.id)["certificate"]["removed"]["count"] == n_alice
    with pytest.raises(lifecycle.TombstonedSample):
        lc.learn("digits", task="0-1", X=t0.X[:1], y=t0.y[:1], sample_ids=["0-1/0"])

    # re-learning a forgotten task from new samples
    relearn = lc.learn("digits", task="2-3", X=t1.X, y=t1.y, sample_ids=[f"new/{i}" for i in range(len(t1.y))])
    lc.drain()
    assert lc.status(relearn.id).status == "applied"
    assert {t.name: t.state for t in lc.tasks("digits")}["2-3"] == "relearned"
    assert accuracy_of(lc, "digits", t1) > 0.9


def test_forgotten_data_is_purged_after_commit(lc):
    make_model(lc)
    t0, t1, _ = digits_tasks()
    learn_task(lc, "digits", t0)
    learn_task(lc, "digits", t1)
    lc.drain()
    victims = [f"0-1/{i}" for i in range(0, len(t0.y), 3)]
    lc.forget("digits", samples=victims)
    lc.drain()
    model_id = lc.model("digits").id
    digests = [lc.sample_digest(v) for v in victims]
    gone = lc.ledger.samples(model_id, digests)
    assert {s.status for s in gone.values()} == {"forgotten"} and all(s.data_digest is None for s in gone.values())
    # the forgotten rows' keys are destroyed: the data file no longer opens them
    learned = lc.ledger.samples(model_id, [lc.sample_digest("0-1/1")])
    data_file = next(iter(learned.values())).data_digest
    victim_rows = [int(v.split("/")[1]) for v in victims]
    with pytest.raises(Erased):
        lc.vault.rows(data_file, victim_rows[:1], digests[:1])
    # the kept samples of that file still resolve to their own rows
    kept = lc.ledger.samples(model_id, [lc.sample_digest("0-1/1"), lc.sample_digest("0-1/2")])
    for s in kept.values():
        X, y = lc.vault.rows(s.data_digest, [s.data_row], [s.sample_id])
        i = int([v for v in ("0-1/1", "0-1/2") if lc.sample_digest(v) == s.sample_id][0].split("/")[1])
        assert np.array_equal(X[0], t0.X[i].astype(np.float32)) and y[0] == t0.y[i]
    # states trained on the forgotten data are gone; the latest serves
    versions = lc.versions("digits")
    assert [v.state_purged for v in versions] == [True, True, False]
    for v in versions[:-1]:
        assert not lc.vault.exists(v.artifact_digest) and not lc.vault.keys.exists(v.artifact_digest)
    # a later forget can still read the remaining samples' data
    lc.forget("digits", samples=["0-1/1"])
    assert lc.drain()[0].status == "applied"


def test_forget_matches_retraining_without_the_forgotten_samples(db_url, tmp_path):
    """Exact unlearning through the whole ledger path: same predictions as a
    model that only ever saw the retained samples."""
    t0, t1, _ = digits_tasks()
    a = lifecycle.connect(db_url, artifacts=tmp_path / "a")
    make_model(a)
    learn_task(a, "digits", t0)
    learn_task(a, "digits", t1)
    a.drain()
    a.forget("digits", samples=[f"2-3/{i}" for i in range(40)])
    a.drain()

    b = lifecycle.connect(f"sqlite:///{tmp_path / 'ref.db'}")
    make_model(b)
    learn_task(b, "digits", t0)
    b.learn("digits", task="2-3", X=t1.X[40:], y=t1.y[40:], probe=(t1.X_probe, t1.y_probe))
    b.drain()
    Xs = np.concatenate([t0.X_probe, t1.X_probe])
    assert np.array_equal(a.predict("digits", Xs), b.predict("digits", Xs))


def test_a_failing_step_fails_the_request_and_the_queue_moves_on(lc, monkeypatch):
    make_model(lc)
    t0, t1, _ = digits_tasks()
    learn_task(lc, "digits", t0)
    lc.drain()
    bad = learn_task(lc, "digits", t1)
    good = lc.forget("digits", samples=["0-1/0"])
    from lifecycle.strategies.analytic.model import AnalyticStrategy

    original = AnalyticStrategy.learn

    def boom(self, data):
        if data.task == "2-3":
            raise RuntimeError("out of memory (simulated)")
        return original(self, data)

    monkeypatch.setattr(AnalyticStrategy, "learn", boom)
    done = lc.drain()
    assert [(r.id, r.status) for r in done] == [(bad.id, "failed"), (good.id, "applied")]
    assert "out of memory" in lc.status(bad.id).error
    assert [v.version for v in lc.versions("digits")] == [1, 2]
    # the failed learn's ids are free for a corrected request
    monkeypatch.setattr(AnalyticStrategy, "learn", original)
    learn_task(lc, "digits", t1)
    assert lc.drain()[0].status == "applied"


def test_completion_is_fenced_on_the_lease(clocked_lc, clock):
    lc = clocked_lc
    make_model(lc)
    t0, _, _ = digits_tasks()
    req = learn_task(lc, "digits", t0)
    w1 = lc.worker(owner="w1", lease_seconds=LEASE)
    claim = lc.ledger.queue.claim("w1", LEASE)
    clock.advance(LEASE)
    assert lc.ledger.queue.requeue_expired(max_attempts=5) == []  # expiring now is not expired yet
    clock.advance(1)
    assert lc.ledger.queue.requeue_expired(max_attempts=5) == [(req.id, ())]
    # w1 wakes up late: its completion must be refused
    [done] = lc.ledger.queue.commit_steps([w1._step(claim).result])
    assert done.version is None and "no longer holds attempt 1" in done.lost
    assert lc.status(req.id).status == "queued" and lc.versions("digits") == []
    done = lc.worker(owner="w2").drain()
    assert done[0].status == "applied" and done[0].attempt == 2
    assert [v.request_id for v in lc.versions("digits")] == [req.id]
    kinds = [e.kind for e in lc.ledger.events(request_id=req.id)]
    assert kinds == ["submitted", "claimed", "requeued", "claimed", "applied"]


def test_per_model_order_one_running_request_per_model(lc):
    make_model(lc, "a")
    make_model(lc, "b")
    t0, t1, _ = digits_tasks()
    a1 = learn_task(lc, "a", t0)
    learn_task(lc, "a", t1)
    b1 = learn_task(lc, "b", t0)
    c1 = lc.ledger.queue.claim("x", 60)
    c2 = lc.ledger.queue.claim("y", 60)
    assert (c1.request.id, c2.request.id) == (a1.id, b1.id)
    assert lc.ledger.queue.claim("z", 60) is None  # a2 waits for a1
    assert isinstance(c1, Claim)


def test_claim_many_takes_one_head_per_idle_model_oldest_first(lc):
    for name in ("a", "b", "c"):
        make_model(lc, name)
    t0, t1, _ = digits_tasks()
    a1 = learn_task(lc, "a", t0)
    b1 = learn_task(lc, "b", t0)
    learn_task(lc, "a", t1)
    c1 = learn_task(lc, "c", t0)
    first = lc.ledger.queue.claim_many("x", 60, limit=2)
    assert [c.request.id for c in first] == [a1.id, b1.id]
    # a's second request waits for a1; c's head is the only one left
    assert [c.request.id for c in lc.ledger.queue.claim_many("y", 60, limit=5)] == [c1.id]
    assert lc.ledger.queue.claim_many("z", 60, limit=5) == []
    assert {lc.status(r.id).status for r in (a1, b1, c1)} == {"running"}
    with pytest.raises(ValueError, match="at least 1"):
        lc.ledger.queue.claim_many("z", 60, limit=0)


def test_commit_steps_fences_each_step_on_its_own(clocked_lc, clock):
    lc = clocked_lc
    make_model(lc, "a")
    make_model(lc, "b")
    t0, _, _ = digits_tasks()
    ra, rb = learn_task(lc, "a", t0), learn_task(lc, "b", t0)
    w1 = lc.worker(owner="w1")
    ca, cb = lc.ledger.queue.claim_many("w1", LEASE, limit=2)
    steps = [w1._step(ca), w1._step(cb)]
    clock.advance(LEASE + 1)
    assert lc.ledger.queue.renew(ca, LEASE)  # w1 kept a's lease alive but not b's
    assert lc.ledger.queue.requeue_expired(max_attempts=5) == [(rb.id, ())]
    done = lc.ledger.queue.commit_steps([s.result for s in steps])
    assert done[0].lost is None and done[0].version.version == 1
    assert done[1].version is None and "no longer holds attempt 1" in done[1].lost
    assert lc.status(ra.id).status == "applied" and lc.status(rb.id).status == "queued"
    assert [v.version for v in lc.versions("a")] == [1] and lc.versions("b") == []


def test_a_worker_batch_applies_several_models_and_commits_them_together(lc):
    for name in ("a", "b", "c"):
        make_model(lc, name)
    t0, t1, _ = digits_tasks()
    reqs = [learn_task(lc, name, t) for t in (t0, t1) for name in ("a", "b", "c")]
    worker = lc.worker(owner="w", claim_batch=3)
    done = worker.drain()
    assert sorted(r.id for r in done) == sorted(r.id for r in reqs)
    assert {r.status for r in done} == {"applied"}
    for name in ("a", "b", "c"):  # each model's versions follow its ledger order
        assert [lc.status(r.id).result_version for r in reqs if r.model == name] == [1, 2]
    claims = [e for e in lc.ledger.events() if e.kind == "claimed"]
    assert len(claims) == 6 and {e.detail["owner"] for e in claims} == {"w"}
    for t in (t0, t1):
        assert accuracy_of(lc, "c", t) > 0.9


def test_a_batch_mixes_applied_and_failed_steps(lc, monkeypatch):
    from lifecycle.strategies.analytic.model import AnalyticStrategy

    make_model(lc, "a")
    make_model(lc, "b", width=64)
    t0, _, _ = digits_tasks()
    ra, rb = learn_task(lc, "a", t0), learn_task(lc, "b", t0)
    original = AnalyticStrategy.learn

    def fails_on_narrow_models(self, data):
        if self.config.width == 64:
            raise MemoryError("out of memory")
        return original(self, data)

    monkeypatch.setattr(AnalyticStrategy, "learn", fails_on_narrow_models)
    lc.worker(claim_batch=2).drain()
    assert lc.status(ra.id).status == "applied"
    assert lc.status(rb.id).status == "failed" and "out of memory" in lc.status(rb.id).error
    # the failed learn's sample ids are free again
    monkeypatch.setattr(AnalyticStrategy, "learn", original)
    learn_task(lc, "b", t0)
    assert [r.status for r in lc.drain()] == ["applied"]


def test_a_stopping_worker_hands_back_what_it_has_not_started(lc, monkeypatch):
    for name in ("a", "b", "c"):
        make_model(lc, name)
    t0, _, _ = digits_tasks()
    reqs = [learn_task(lc, name, t0) for name in ("a", "b", "c")]
    worker = lc.worker(owner="w", claim_batch=3)
    step = worker._step

    def step_then_stop(claim):
        worker.stopping.set()  # as SIGTERM would, during the batch's first step
        return step(claim)

    monkeypatch.setattr(worker, "_step", step_then_stop)
    done = worker.drain()
    assert [r.id for r in done] == [reqs[0].id] and done[0].status == "applied"
    assert [lc.status(r.id).status for r in reqs[1:]] == ["queued", "queued"]
    released = [e for e in lc.ledger.events() if e.kind == "released"]
    assert sorted(e.request_id for e in released) == sorted(r.id for r in reqs[1:])
    assert worker.current == []


def test_relapse_finding_is_recorded_when_a_forgotten_task_comes_back(lc):
    """Forget a task, then learn new samples of the same classes under another
    task name: the forgotten task's probe accuracy comes back and is flagged."""
    make_model(lc)
    t0, t1, _ = digits_tasks()
    learn_task(lc, "digits", t0)
    learn_task(lc, "digits", t1)
    lc.drain()
    lc.forget("digits", task="2-3")
    lc.drain()
    lc.learn("digits", task="twos-and-threes-again", X=t1.X, y=t1.y, sample_ids=[f"x{i}" for i in range(len(t1.y))],
             probe=(t1.X_probe, t1.y_probe))
    lc.drain()
    findings = lc.relapse("digits")
    assert [f.task for f in findings] == ["2-3"]
    f = findings[0]
    assert f.acc_at_forget == 0.0 and f.accuracy > 0.9 and f.relapse == pytest.approx(f.accuracy - f.chance)
    assert {t.name: t for t in lc.tasks("digits")}["2-3"].peak_since_forget == f.accuracy
