"""Every way in has a way out: unapplied learns, crashes, retention, sweeps,
identifiers that match however they are typed, forgotten rows that cannot
come back."""

from __future__ import annotations

import os
import threading
import time
import unicodedata

import numpy as np
import pytest

import lifecycle
from lifecycle import purge
from lifecycle.errors import AlreadyForgotten, TombstonedSample, UnknownSubject
from lifecycle.vault import Erased
from lifecycle.worker import Worker
from tests.data import digits_tasks, learn_task, make_model
from tests.helpers import wait_for


def on_disk(lc) -> set[str]:
    return set(lc.vault.artifacts.digests()) | set(lc.vault.keys.digests())


def test_a_cancelled_learn_takes_its_data_and_its_subject_with_it(lc):
    make_model(lc)
    t0, t1, _ = digits_tasks()
    learn_task(lc, "digits", t0)
    lc.drain()
    before = on_disk(lc)
    req = learn_task(lc, "digits", t1, subjects=["carol"] * len(t1.y))
    assert len(on_disk(lc) - before) == 2  # its data file and its new task's probe set
    lc.cancel(req.id)
    # nothing of carol's is stored any more, and there is nothing left to erase
    assert on_disk(lc) == before
    with pytest.raises(UnknownSubject):
        lc.forget("digits", subject="carol")
    assert "2-3" not in {t.name for t in lc.tasks("digits")}


def test_a_learn_out_of_attempts_takes_its_data_with_it(lc):
    make_model(lc)
    t0, _, _ = digits_tasks()
    req = learn_task(lc, "digits", t0, subjects=["dave"] * len(t0.y))
    claim = lc.ledger.queue.claim("crashed-worker", 0.0)
    assert claim.request.id == req.id
    data_file = claim.payload_digest
    # the worker "died" holding its last attempt: drain() fails the request and erases its rows
    lc.worker(max_attempts=1).maintain()
    assert lc.status(req.id).status == "failed"
    assert not lc.vault.exists(data_file) and not lc.vault.keys.exists(data_file)
    with pytest.raises(UnknownSubject):
        lc.forget("digits", subject="dave")


def test_drain_requeues_an_expired_lease(lc):
    make_model(lc)
    t0, _, _ = digits_tasks()
    req = learn_task(lc, "digits", t0)
    assert lc.ledger.queue.claim("crashed-worker", 0.0).request.id == req.id
    assert lc.status(req.id).status == "running"
    # an API-only user is not left with a request that blocks the model
    lc.drain()
    assert lc.status(req.id).status == "applied"


class CrashesBeforePurge(Worker):
    """A worker that dies between a forget's commit and its purge."""

    def purge(self, model) -> None:
        pass


def test_drain_finishes_a_purge_a_crash_interrupted(lc):
    make_model(lc)
    t0, _, _ = digits_tasks()
    learn_task(lc, "digits", t0, subjects=["alice"] * 10 + [None] * (len(t0.y) - 10))
    lc.drain()
    lc.forget("digits", subject="alice")
    CrashesBeforePurge(lc.ledger, lc.vault, lc.signer).drain()
    model_id = lc.model("digits").id
    plan = lc.ledger.purge_plan(model_id)
    assert len(plan.rows) == 10 and plan.states  # the rows and the states trained on them are still there
    lc.drain()
    assert lc.ledger.purge_plan(model_id).empty
    for _, digest, row in plan.rows:
        with pytest.raises(Erased):
            lc.vault.rows(digest, [row])
    for _, digest in plan.states:
        assert not lc.vault.exists(digest)


def test_one_purge_per_model_at_a_time(lc):
    make_model(lc)
    t0, _, _ = digits_tasks()
    learn_task(lc, "digits", t0)
    lc.drain()
    model_id = lc.model("digits").id
    assert lc.ledger.take_purge(model_id, "a", 60)
    assert purge.purge_model(lc.ledger, lc.vault, model_id, "b") is None  # a holds it
    lc.ledger.release_purge(model_id, "a")
    assert purge.purge_model(lc.ledger, lc.vault, model_id, "b") is not None


def test_purges_racing_with_each_other_and_with_steps_keep_every_pointer_true(lc):
    """The drain tick and the upkeep job purge the same model at once while forgets keep coming."""
    make_model(lc)
    t0, t1, _ = digits_tasks()
    names = ["alice", "bob", "carol", "dave"]
    learn_task(lc, "digits", t0, subjects=[names[i % 4] for i in range(len(t0.y))])
    learn_task(lc, "digits", t1, subjects=[names[i % 4] for i in range(len(t1.y))])
    lc.drain()
    for name in names[:3]:
        lc.forget("digits", subject=name)
    model = lc.model("digits")
    ticks, upkeep = lc.worker(owner="tick"), lc.worker(owner="upkeep")
    start = threading.Barrier(3)
    errors: list[BaseException] = []

    def run(fn):
        try:
            start.wait()
            for _ in range(5):
                fn()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f,)) for f in (
        ticks.drain, upkeep.maintain, lambda: purge.purge_model(lc.ledger, lc.vault, model.id, "third"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    lc.drain()
    assert lc.ledger.purge_plan(model.id).empty
    dave = [i for i in range(len(t0.y)) if i % 4 == 3]
    found = lc.ledger.samples(model.id, [lc.sample_digest(f"0-1/{i}") for i in dave])
    assert len(found) == len(dave) and {s.status for s in found.values()} == {"active"}
    for i in dave:
        s = found[lc.sample_digest(f"0-1/{i}")]
        X, y = lc.vault.rows(s.data_digest, [s.data_row], [s.sample_id])
        assert np.array_equal(X[0], t0.X[i].astype(np.float32)) and y[0] == t0.y[i]


def test_states_are_kept_only_as_long_as_the_model_says(lc):
    make_model(lc, keep_states=2)
    for t in digits_tasks(5):
        learn_task(lc, "digits", t)
    lc.drain()
    versions = lc.versions("digits")
    assert [v.state_purged for v in versions] == [True, True, True, False, False]
    kept = {v.artifact_digest for v in versions[-2:]}
    states = {v.artifact_digest for v in versions}
    assert states & set(lc.vault.artifacts.digests()) == kept
    assert states & set(lc.vault.keys.digests()) == kept


def test_the_sweep_erases_what_nothing_references_after_its_grace_period(lc):
    make_model(lc)
    t0, _, _ = digits_tasks()
    learn_task(lc, "digits", t0)
    lc.drain()
    kept = on_disk(lc)
    # what a submit that died before its commit leaves behind
    orphan = lc.vault.put_rows(t0.X[:5], t0.y[:5])
    assert lc.sweep(3600) == []  # too young: it may be a submit in flight
    assert lc.sweep(0) == [orphan]
    assert on_disk(lc) == kept


def test_the_sweep_overwrites_and_removes_key_files_a_crashed_write_left_after_its_grace(lc):
    """A key file's temporary copy outlives nothing: left, it would still open records whose
    keys were shredded since."""
    make_model(lc)
    t0, _, _ = digits_tasks()
    learn_task(lc, "digits", t0)
    lc.drain()
    digest = lc.vault.keys.digests()[0]
    real = lc.vault.keys.root / digest[:2] / digest[2:]
    left = real.parent / ".tmp-crashed-write"
    keys = real.read_bytes()
    left.write_bytes(keys)  # what a write killed between its sync and its rename leaves
    assert lc.sweep(3600) == [] and left.exists()
    os.utime(left, (time.time() - 7200,) * 2)
    assert lc.sweep(3600) == [] and not left.exists()
    assert real.read_bytes() == keys  # the filed keys stay


@pytest.mark.parametrize("policy", ["keep", "purge"])
def test_a_forgotten_tasks_probe_set_follows_the_stated_policy(lc, policy, signing_key):
    make_model(lc, forgotten_probes=policy)
    t0, t1, _ = digits_tasks()
    learn_task(lc, "digits", t0)
    learn_task(lc, "digits", t1)
    lc.drain()
    probe = next(t.probe_digest for t in lc.tasks("digits") if t.name == "2-3")
    req = lc.forget("digits", task="2-3")
    lc.drain()
    cert = lc.certificate(req.id)["certificate"]
    assert cert["erasure"]["probe_sets"]["policy"] == policy
    assert lc.vault.exists(probe) == (policy == "keep")
    assert lc.vault.keys.exists(probe) == (policy == "keep")


def test_identifiers_match_however_unicode_spells_them(lc):
    make_model(lc)
    t0, _, _ = digits_tasks()
    nfc, nfd = "café", unicodedata.normalize("NFD", "café")
    assert nfc != nfd
    lc.learn("digits", task=t0.name, X=t0.X[:4], y=t0.y[:4], sample_ids=[nfc, "b", "c", "d"],
             subjects=[nfc, nfc, None, None], probe=(t0.X_probe, t0.y_probe))
    lc.drain()
    assert lc.subject_digest("digits", nfd) == lc.subject_digest("digits", nfc)
    lc.forget("digits", samples=[nfd])
    lc.drain()
    with pytest.raises(TombstonedSample):
        lc.learn("digits", task=t0.name, X=t0.X[10:11], y=t0.y[10:11], sample_ids=[nfc])
    lc.forget("digits", subject=nfd)
    lc.drain()
    with pytest.raises(AlreadyForgotten):
        lc.forget("digits", subject=nfc)


def test_forgotten_rows_cannot_come_back_under_new_ids(lc):
    make_model(lc)
    t0, _, _ = digits_tasks()
    learn_task(lc, "digits", t0)
    lc.drain()
    lc.forget("digits", samples=["0-1/0", "0-1/1"])
    lc.drain()
    with pytest.raises(TombstonedSample, match="same content"):
        lc.learn("digits", task=t0.name, X=t0.X[[5, 1]], y=t0.y[[5, 1]], sample_ids=["new-5", "new-1"])
    # rows that were never forgotten are welcome under new ids
    lc.learn("digits", task=t0.name, X=t0.X[[5]], y=t0.y[[5]], sample_ids=["new-5"])


def test_a_second_open_forget_of_the_same_data_is_refused(lc):
    make_model(lc)
    t0, _, _ = digits_tasks()
    learn_task(lc, "digits", t0, subjects=["alice"] * len(t0.y))
    lc.drain()
    lc.forget("digits", subject="alice")
    with pytest.raises(AlreadyForgotten, match="already queued"):
        lc.forget("digits", subject="alice")
    lc.forget("digits", samples=["0-1/0", "0-1/1"])
    with pytest.raises(AlreadyForgotten, match="same samples is already queued"):
        lc.forget("digits", samples=["0-1/1", "0-1/2"])
    lc.forget("digits", samples=["0-1/2"])  # no overlap: accepted


def test_no_identifier_is_stored_in_clear(lc, tmp_path):
    make_model(lc)
    t0, _, _ = digits_tasks()
    ids = [f"patient-{i:04d}" for i in range(len(t0.y))]
    lc.learn("digits", task=t0.name, X=t0.X, y=t0.y, sample_ids=ids, subjects=["Zoë Quist"] * len(ids),
             probe=(t0.X_probe, t0.y_probe))
    lc.drain()
    lc.forget("digits", samples=ids[:3])
    lc.drain()
    dump = repr([lc.requests(), lc.ledger.events(), lc.tasks("digits"), lc.history("digits"),
                 [lc.certificate(r.id) for r in lc.requests() if r.kind == "forget"]])
    assert "patient-" not in dump and "Zoë" not in dump
    assert lc.sample_digest(ids[0]) in dump  # what stands for them instead


def test_a_connection_without_the_id_key_file_creates_one(tmp_path, monkeypatch):
    key = tmp_path / "elsewhere" / "id-key"
    monkeypatch.setenv("LIFECYCLE_ID_KEY", str(key))
    lc = lifecycle.connect(f"sqlite:///{tmp_path / 'l.db'}")
    first = lc.sample_digest("x")
    assert key.exists() and oct(key.stat().st_mode & 0o777) == "0o600"
    assert lifecycle.connect(f"sqlite:///{tmp_path / 'l.db'}").sample_digest("x") == first


def test_the_service_purges_in_its_own_job(lc):
    from lifecycle.service import Service

    make_model(lc)
    t0, _, _ = digits_tasks()
    learn_task(lc, "digits", t0, subjects=["alice"] * 10 + [None] * (len(t0.y) - 10))
    req = lc.forget("digits", subject="alice")
    service = Service(lc, interval=0.05)
    assert not service.worker.purge_after_batch
    service.start()
    try:
        lc.wait(req.id, timeout=60)
        model_id = lc.model("digits").id
        wait_for(lambda: lc.ledger.purge_plan(model_id).empty, 30, "the service's purge job")
        assert lc.ledger.purge_plan(model_id).empty
        assert any(e.kind == "purged" for e in lc.ledger.events(model_id))
    finally:
        service.stop()
