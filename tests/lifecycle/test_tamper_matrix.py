"""Every way of rewriting the ledger an auditor tried is detected, and the first bad row is named."""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
import uuid

import pytest
import sqlalchemy
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

import lifecycle
import tests.slow_strategy  # noqa: F401 (registers leaky_gate)
from lifecycle import checkpoints
from lifecycle.store import audit
from lifecycle.store.records import StepResult
from lifecycle.store.schema import (
    CertificateRow,
    ErasurePartRow,
    ErasureRow,
    EvaluationRow,
    EventRow,
    ModelRow,
    ModelVersionRow,
    RelapseFindingRow,
    RequestRow,
    SampleRow,
    TaskRow,
    TombstoneRow,
)
from tests.data import digits_tasks, learn_task, make_model


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def original(request, tmp_path_factory):
    """One ledger with every kind of row, built once per backend; each test tampers with a copy."""
    folder = tmp_path_factory.mktemp("tamper")
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'ledger.db'}"
    else:
        url = request.getfixturevalue("postgres_server").new_database()
    lc = lifecycle.connect(url, artifacts=folder / "artifacts", keys=folder / "keys")
    make_model(lc)
    t0, t1, t2 = digits_tasks()
    learn_task(lc, "digits", t0, subjects=["alice", "bob"] * (len(t0.y) // 2) + ["bob"] * (len(t0.y) % 2),
               reason="consented 2026-01")
    learn_task(lc, "digits", t1)
    lc.drain()
    doomed = learn_task(lc, "digits", t2)
    claim = lc.ledger.queue.claim("w", 60)
    assert claim.request.id == doomed.id
    lc.ledger.queue.commit_steps([StepResult(claim, "failed", error="boom")])
    lc.forget("digits", subject="alice", reason="GDPR art. 17")
    lc.drain()
    lc.create_model("gated", strategy="leaky_gate", n_features=64, n_classes=10, config={"width": 128})
    learn_task(lc, "gated", t0)
    learn_task(lc, "gated", t1)
    lc.drain()
    lc.forget("gated", task="2-3")
    lc.drain()
    # bob's erasure, its forget left queued on digits
    lc.erase(subject="bob", reason="erasure request 2026-04")
    # a person's erasure after the fact: digits records it had forgotten alice already, gated that it held none
    lc.erase(subject="alice", reason="erasure request 2026-03", requested_by="dpo")
    assert lc.relapse("gated") and lc.ledger.audit_problems()[1] == []
    checkpoints.write_checkpoint(lc.ledger, lc.signer, folder / "checkpoints")
    lc.ledger.engine.dispose()
    return request.param, url, folder


@pytest.fixture
def copy(original, tmp_path):
    """A fresh copy of the ledger to tamper with."""
    backend, url, folder = original
    if backend == "sqlite":
        target = tmp_path / "ledger.db"
        with sqlite3.connect(url.removeprefix("sqlite:///")) as src, sqlite3.connect(target) as dst:
            src.backup(dst)
        new_url = f"sqlite:///{target}"
    else:
        name = "copy_" + uuid.uuid4().hex[:12]
        server, source = url.rsplit("/", 1)
        engine = sqlalchemy.create_engine(server + "/postgres", isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{source}"'))
        engine.dispose()
        new_url = f"{server}/{name}"
    shutil.copytree(folder / "checkpoints", tmp_path / "checkpoints")
    return lifecycle.connect(new_url, artifacts=folder / "artifacts", keys=folder / "keys")


def tamper(lc, *statements):
    with Session(lc.ledger.engine) as s, s.begin():
        for statement in statements:
            s.execute(statement(s) if callable(statement) else statement)


def digits_id(s):
    return s.scalar(select(ModelRow.id).where(ModelRow.name == "digits"))


def forget_of(s, model="digits"):
    model_id = s.scalar(select(ModelRow.id).where(ModelRow.name == model))
    return s.scalar(select(RequestRow).where(RequestRow.model_id == model_id, RequestRow.kind == "forget")
                    .order_by(RequestRow.seq).limit(1))


def edited_certificate(s):
    row = s.scalar(select(CertificateRow))
    body = dict(row.body)
    body["certificate"] = {**body["certificate"], "removed": {**body["certificate"]["removed"], "count": 999}}
    return update(CertificateRow).where(CertificateRow.request_id == row.request_id).values(body=body)


def rolled_back_head(s):
    model_id = digits_id(s)
    last = s.scalar(select(EventRow).where(EventRow.model_id == model_id).order_by(EventRow.seq.desc()).limit(1))
    s.execute(delete(EventRow).where(EventRow.id == last.id))
    return update(ModelRow).where(ModelRow.id == model_id).values(audit_seq=last.seq - 1, audit_head=last.prev_hash)


CASES = {
    "an event edited": ("events", lambda s: update(EventRow).where(
        EventRow.id == s.scalar(select(func.min(EventRow.id)))).values(detail={"forged": True})),
    "the last event deleted, the head rolled back": ("erasure_parts", rolled_back_head),  # the erasure's record
    "a failed request flipped to applied": ("requests", lambda s: update(RequestRow).where(
        RequestRow.status == "failed").values(status="applied")),
    "a request's reason rewritten": ("requests", lambda s: update(RequestRow).where(
        RequestRow.reason == "GDPR art. 17").values(reason="routine clean-up")),
    "a request deleted": ("requests", lambda s: delete(RequestRow).where(RequestRow.status == "failed")),
    "a certificate edited": ("certificates", edited_certificate),
    "a certificate deleted": ("certificates", lambda s: delete(CertificateRow)),
    "a state digest swapped": ("model_versions", lambda s: update(ModelVersionRow).where(
        ModelVersionRow.version == 1).values(artifact_digest="0" * 64)),
    "a purged state marked kept": ("model_versions", lambda s: update(ModelVersionRow).where(
        ModelVersionRow.state_purged.is_(True)).values(state_purged=False)),
    "a model version deleted": ("model_versions", lambda s: delete(ModelVersionRow).where(
        ModelVersionRow.version == 2, ModelVersionRow.model_id == digits_id(s))),
    "a tombstone's subject edited": ("tombstones", lambda s: update(TombstoneRow).where(
        TombstoneRow.id == s.scalar(select(func.min(TombstoneRow.id)))).values(subject_hash="0" * 64)),
    "a relapse finding edited": ("relapse_findings", lambda s: update(RelapseFindingRow).values(relapse=0.01)),
    # (a task row cannot be deleted while its samples and evaluations reference it)
    "a task's probe set swapped": ("tasks", lambda s: update(TaskRow).where(
        TaskRow.probe_digest.is_not(None)).values(probe_digest="0" * 64)),
    "tombstones deleted": ("tombstones", lambda s: delete(TombstoneRow).where(
        TombstoneRow.request_id == forget_of(s).id)),
    "forgotten samples set back to active": ("samples", lambda s: update(SampleRow).where(
        SampleRow.status == "forgotten").values(status="active")),
    "forgotten samples deleted": ("samples", lambda s: delete(SampleRow).where(SampleRow.status == "forgotten")),
    "an evaluation edited": ("evaluations", lambda s: update(EvaluationRow).where(
        EvaluationRow.version == 2).values(accuracy=0.123)),
    "an evaluation deleted": ("evaluations", lambda s: delete(EvaluationRow).where(EvaluationRow.version == 1)),
    "a relapse finding deleted": ("relapse_findings", lambda s: delete(RelapseFindingRow)),
    "an erasure's record of a model deleted": ("erasure_parts", lambda s: delete(ErasurePartRow).where(
        ErasurePartRow.model_id == digits_id(s))),
    "an erasure's record rewritten to 'held none'": ("erasure_parts", lambda s: update(ErasurePartRow).where(
        ErasurePartRow.outcome == "already_forgotten").values(outcome="none", tombstoned=0)),
    "a pending erasure marked completed": ("erasures", lambda s: update(ErasureRow).where(
        ErasureRow.status == "pending").values(status="completed")),
    "an erasure's subject rewritten": ("erasures", lambda s: update(ErasureRow).where(
        ErasureRow.status == "pending").values(subject_hash="0" * 64)),
    "an erasure's due date moved later": ("erasures", lambda s: update(ErasureRow).where(
        ErasureRow.status == "pending").values(due_at=s.scalar(select(ErasureRow.due_at).where(
            ErasureRow.status == "pending")) + dt.timedelta(days=60))),
    "a forgotten task set back to learned": ("tasks", lambda s: update(TaskRow).where(
        TaskRow.state == "forgotten").values(state="learned")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_tampered_ledger_names_its_first_bad_row(copy, case):
    table, change = CASES[case]
    assert copy.ledger.audit_problems()[1] == []
    tamper(copy, change)
    _, problems = copy.ledger.audit_problems()
    assert problems, f"{case}: not detected"
    found = problems[0]
    if table == "events":
        assert isinstance(found, audit.ChainProblem) and "does not match its hash" in found.problem
    else:
        assert getattr(found, "table", None) == table, str(found)


def test_a_chain_rewritten_after_a_checkpoint_is_caught_by_it(copy, tmp_path):
    """Remove every trace of alice's forget, re-link the chain so that it verifies on its own,
    and let the signed checkpoint taken before the rewrite catch it."""
    with Session(copy.ledger.engine) as s, s.begin():
        model_id = digits_id(s)
        forget = forget_of(s)
        version = forget.result_version
        s.execute(delete(EventRow).where(EventRow.request_id == forget.id))
        s.execute(delete(EventRow).where(EventRow.model_id == model_id, EventRow.kind == "purged"))
        s.execute(delete(CertificateRow).where(CertificateRow.request_id == forget.id))
        s.execute(delete(TombstoneRow).where(TombstoneRow.request_id == forget.id))
        s.execute(delete(EvaluationRow).where(EvaluationRow.model_id == model_id, EvaluationRow.version == version))
        s.execute(delete(ModelVersionRow).where(ModelVersionRow.model_id == model_id,
                                                ModelVersionRow.version == version))
        s.execute(update(ModelVersionRow).where(ModelVersionRow.model_id == model_id).values(state_purged=False))
        s.execute(delete(RequestRow).where(RequestRow.id == forget.id))
        payload = {r.seq: r.payload_digest for r in s.scalars(select(RequestRow).where(RequestRow.kind == "learn"))}
        for row in s.scalars(select(SampleRow).where(SampleRow.model_id == model_id,
                                                     SampleRow.status == "forgotten")).all():
            row.status, row.data_digest = "active", payload[row.learn_request_seq]
        prev, seq = None, 0
        for ev in s.scalars(select(EventRow).where(EventRow.model_id == model_id).order_by(EventRow.seq)).all():
            seq += 1
            ev.seq, ev.prev_hash = seq, prev
            ev.hash = prev = audit.event_hash(model_id, seq, ev.request_id, ev.kind, dict(ev.detail), ev.at, prev)
        s.get(ModelRow, model_id).audit_seq, s.get(ModelRow, model_id).audit_head = seq, prev
    assert copy.ledger.audit_problems()[1] == []  # the rewrite is consistent on its own
    n, problems = checkpoints.check(copy.ledger, tmp_path / "checkpoints", copy.signer.public_pem())
    assert n == 1 and len(problems) == 1 and "'digits'" in str(problems[0]) and "rewritten" in str(problems[0])
