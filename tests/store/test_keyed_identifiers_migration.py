"""Upgrading a ledger from before keyed identifiers (migration 0006)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import numpy as np
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

import lifecycle
from lifecycle import strategies
from lifecycle import arrays
from lifecycle.cli import app
from lifecycle.migrations import migrate
from lifecycle.store import audit
from lifecycle.store.artifacts import FolderArtifactStore
from lifecycle.store.engine import make_engine

AT = dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)


X = np.array([[1, 0, 0, 2], [0, 3, 1, 0]], np.float32)
Y = np.array([0, 1])


def old_artifacts(root):
    """The clear files the code of revision 0005 wrote: training rows with their ids, a probe set, a state."""
    store = FolderArtifactStore(root)
    spec = strategies.get("analytic")
    model = spec.build(spec.make_config({"width": 16}), 4, 2)
    model.learn(strategies.TaskData("t", X, Y, ("patient-7", "patient-8")))
    return (store.put(arrays.pack({"X": X, "y": Y, "sample_ids": np.array(["patient-7", "patient-8"])})),
            store.put(arrays.pack({"X": X, "y": Y})),
            store.put(arrays.pack(model.state_dict())))


def old_ledger(db_url: str, *, tamper: bool = False, files=(None, None, None)):
    """A revision-0005 ledger as the code of that time wrote it: ids in clear, salted subject hashes."""
    data, probe, state = files
    engine = make_engine(db_url)
    migrate.upgrade(engine, "0005")
    salted = hashlib.sha256(b"s4lt:alice").hexdigest()
    events = [("model_created", None, {"strategy": "analytic"}),
              ("submitted", "r-learn", {"request_kind": "learn", "task": "t", "n_samples": 2}),
              ("submitted", "r-forget", {"request_kind": "forget", "target": {"samples": ["patient-7"]}})]
    if state is not None:
        events += [("claimed", "r-learn", {"owner": "w", "attempt": 1}),
                   ("applied", "r-learn", {"version": 1, "artifact": state})]
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO models (id, name, strategy, config, n_features, n_classes, relapse_threshold, "
                          "forget_due_days, subject_salt, created_at, audit_seq) VALUES (1, 'old', 'analytic', "
                          "'{\"width\": 16}', 4, 2, 0.05, 30, 's4lt', '2026-01-01 00:00:00', 0)"))
        conn.execute(text("INSERT INTO tasks (id, model_id, name, state, classes, probe_digest) VALUES (1, 1, 't', "
                          "'learned', '[0, 1]', :p)"), {"p": probe})
        for rid, kind, target in (("r-learn", "learn", {"task": "t", "n_samples": 2}),
                                  ("r-forget", "forget", {"samples": ["patient-7"]})):
            conn.execute(text("INSERT INTO requests (id, model_id, kind, target, payload_sha, received_at, status, "
                              "attempt) VALUES (:i, 1, :k, :t, 'x', '2026-01-02 00:00:00', 'queued', 0)"),
                         {"i": rid, "k": kind, "t": json.dumps(target)})
        for i, (sid, subject) in enumerate((("patient-7", salted), ("patient-8", None))):
            conn.execute(text("INSERT INTO samples (model_id, sample_id, task_id, subject_hash, label, "
                              "learn_request_seq, status, data_digest, data_row) VALUES (1, :s, 1, :h, :l, 1, "
                              "'active', :d, :r)"), {"s": sid, "h": subject, "l": i, "d": data,
                                                     "r": None if data is None else i})
        if state is not None:
            conn.execute(text("UPDATE requests SET status = 'applied', result_version = 1 WHERE id = 'r-learn'"))
            conn.execute(text("INSERT INTO model_versions (model_id, version, request_id, artifact_digest, "
                              "state_purged, created_at) VALUES (1, 1, 'r-learn', :d, false, "
                              "'2026-01-02 00:00:00')"), {"d": state})
        prev = None
        for seq, (kind, rid, detail) in enumerate(events, start=1):
            digest = audit.event_hash(1, seq, rid, kind, detail, AT, prev)
            if tamper and seq == 2:
                detail = {**detail, "n_samples": 3}
            conn.execute(text("INSERT INTO events (model_id, request_id, kind, detail, at, seq, prev_hash, hash) "
                              "VALUES (1, :r, :k, :d, '2026-01-02 00:00:00', :q, :p, :h)"),
                         {"r": rid, "k": kind, "d": json.dumps(detail), "q": seq, "p": prev, "h": digest})
            prev = digest
        conn.execute(text("UPDATE models SET audit_seq = :n, audit_head = :h"), {"n": len(events), "h": prev})
    return engine


def test_identifiers_are_rekeyed_and_the_chain_still_verifies(db_url, tmp_path):
    engine = old_ledger(db_url)
    migrate.upgrade(engine)
    lc = lifecycle.connect(db_url, artifacts=tmp_path / "a")
    with engine.connect() as conn:
        everything = repr([conn.execute(text(f"SELECT * FROM {t}")).all()
                           for t in ("samples", "requests", "events", "tombstones")])
    assert "patient-" not in everything
    found = lc.ledger.samples(1, [lc.sample_digest("patient-7"), lc.sample_digest("patient-8")])
    assert len(found) == 2
    # the subject's old salted hash is now keyed, and the API still finds her by name
    assert found[lc.sample_digest("patient-7")].subject_hash == lc.subject_digest("old", "alice")
    assert lc.ledger.subject_counts(1, lc.subject_digest("old", "alice"))["active"] == 1
    assert lc.ledger.request("r-forget").target == {"samples": [lc.sample_digest("patient-7")]}
    checked, problems = lc.ledger.audit_problems()
    assert (checked, problems) == (4, [])
    last = lc.ledger.events(1)[-1]
    assert last.kind == "identifiers_rekeyed" and last.detail["previous_head"]["seq"] == 3


def test_a_broken_chain_is_not_relinked(db_url):
    engine = old_ledger(db_url, tamper=True)
    with pytest.raises(RuntimeError, match="broken audit chain"):
        migrate.upgrade(engine)
    assert migrate.current_revision(engine) == "0005"


def test_db_upgrade_encrypts_the_clear_artifacts_of_an_older_ledger(db_url, tmp_path):
    artifacts, keys = tmp_path / "artifacts", tmp_path / "keys"
    files = old_artifacts(artifacts)
    old_ledger(db_url, files=files)
    result = CliRunner().invoke(app, ["db", "upgrade", "--db", db_url, "--artifacts", str(artifacts),
                                      "--keys", str(keys)])
    assert result.exit_code == 0, result.output
    assert "encrypted 3 artifact(s)" in result.output
    lc = lifecycle.connect(db_url, artifacts=artifacts, keys=keys)
    # the clear files are gone, and nothing stored holds the rows or ids in clear any more
    stored = b"".join(p.read_bytes() for p in artifacts.rglob("*") if p.is_file())
    assert not set(files) & set(lc.vault.artifacts.digests())
    assert X[0].tobytes() not in stored and b"patient-7" not in stored
    # every pointer opens its own sample's row, and the model still serves
    found = lc.ledger.samples(1, [lc.sample_digest("patient-7"), lc.sample_digest("patient-8")])
    for i, sample in enumerate(sorted(found.values(), key=lambda s: s.data_row)):
        got_X, got_y = lc.vault.rows(sample.data_digest, [sample.data_row], [sample.sample_id])
        assert np.array_equal(got_X[0], X[i]) and got_y[0] == Y[i]
    assert lc.predict("old", X).shape == (2,)
    assert lc.ledger.audit_problems()[1] == []
