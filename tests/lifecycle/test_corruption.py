"""A damaged stored file quarantines its model: nothing queued is failed for it,
other models go on, and a repair brings the model back."""

from __future__ import annotations

import numpy as np
import pytest

from lifecycle.errors import NotRepairable, StorageFault
from tests.data import accuracy_of, digits_tasks, learn_task, make_model


def flip_a_byte(lc, digest: str) -> None:
    path = lc.vault.artifacts._path(digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def two_models(lc):
    t0, t1, t2 = digits_tasks()
    for name in ("hurt", "fine"):
        make_model(lc, name)
        learn_task(lc, name, t0, subjects=["alice"] * 10 + [None] * (len(t0.y) - 10))
        learn_task(lc, name, t1)
    lc.drain()
    return lc


def queue_more(lc, model):
    _, _, t2 = digits_tasks()
    return [learn_task(lc, model, t2), lc.forget(model, subject="alice", reason="GDPR art. 17")]


@pytest.mark.parametrize("damaged", ["state", "data file", "probe set"])
def test_a_damaged_file_quarantines_its_model_and_a_repair_brings_it_back(two_models, damaged):
    lc = two_models
    model_id = lc.model("hurt").id
    if damaged == "state":
        digest = lc.ledger.latest_version(model_id).artifact_digest
    elif damaged == "data file":
        digest = next(d for d, samples in lc.ledger.data_files(model_id).items() if samples[0].task == "0-1")
    else:
        digest = next(t.probe_digest for t in lc.tasks("hurt") if t.name == "0-1")
    flip_a_byte(lc, digest)
    queued = queue_more(lc, "hurt")
    others = queue_more(lc, "fine")
    lc.drain()
    # nothing of the damaged model was failed (what did not need the file went through); the other model went on
    statuses = [lc.status(r.id).status for r in queued]
    assert set(statuses) <= {"queued", "applied"} and "queued" in statuses, statuses
    assert [lc.status(r.id).status for r in others] == ["applied", "applied"]
    hurt = lc.model("hurt")
    assert hurt.quarantine and digest in hurt.quarantine
    assert any(e.kind == "quarantined" for e in lc.events("hurt"))
    if damaged == "state":
        with pytest.raises(StorageFault, match="lifecycle repair hurt"):
            lc.predict("hurt", digits_tasks()[0].X_probe)

    repair = lc.repair("hurt", requested_by="ops")
    assert repair.kind == "repair"
    lc.drain()
    assert lc.status(repair.id).status == "applied", lc.status(repair.id).error
    assert lc.model("hurt").quarantine is None
    assert [lc.status(r.id).status for r in queued] == ["applied", "applied"]
    assert lc.ledger.audit_problems()[1] == []
    assert accuracy_of(lc, "hurt", digits_tasks()[1]) > 0.9
    if damaged == "data file":  # its rows are lost: out of the model, and tombstoned by the repair
        assert digest not in lc.ledger.data_files(model_id)
        assert lc.ledger.tombstoned(model_id, [lc.sample_digest("0-1/30")])
    else:
        assert accuracy_of(lc, "hurt", digits_tasks()[0]) > 0.9


def test_the_repaired_model_still_forgets_exactly(two_models):
    """After a rebuild, a forget equals a model that only ever saw the retained samples."""
    lc = two_models
    flip_a_byte(lc, lc.ledger.latest_version(lc.model("hurt").id).artifact_digest)
    forget = lc.forget("hurt", samples=["0-1/20", "0-1/21"])
    lc.drain()
    lc.repair("hurt")
    lc.drain()
    assert lc.status(forget.id).status == "applied"
    t0, t1, _ = digits_tasks()
    make_model(lc, "reference")
    keep = [i for i in range(len(t0.y)) if i not in (20, 21)]
    lc.learn("reference", task=t0.name, X=t0.X[keep], y=t0.y[keep], sample_ids=[f"r{i}" for i in keep],
             probe=(t0.X_probe, t0.y_probe))
    learn_task(lc, "reference", t1, prefix="ref-2-3")
    lc.drain()
    for t in (t0, t1):
        assert np.array_equal(lc.predict("hurt", t.X_probe), lc.predict("reference", t.X_probe))


def test_a_strategy_that_cannot_be_rebuilt_names_the_last_good_version(lc):
    lc.create_model("h", strategy="hypernet", n_features=64, n_classes=10,
                    config={"hidden": [16], "hnet_layers": [32], "chunk_size": 500, "epochs": 1})
    t0, t1, _ = digits_tasks()
    learn_task(lc, "h", t0)
    learn_task(lc, "h", t1)
    lc.drain()
    flip_a_byte(lc, lc.ledger.latest_version(lc.model("h").id).artifact_digest)
    with pytest.raises(NotRepairable, match="last version whose state opens is 1"):
        lc.repair("h")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_s3t_is_rebuilt_from_its_retained_data(lc):
    lc.create_model("s", strategy="s3t", n_features=64, n_classes=10,
                    config=dict(n_shards=2, n_slices=3, continual_slices=2, n_sequences=3, hidden=32, rank=8,
                                epochs=2))
    t0, t1, _ = digits_tasks()
    learn_task(lc, "s", t0)
    learn_task(lc, "s", t1)
    lc.drain()
    flip_a_byte(lc, lc.ledger.latest_version(lc.model("s").id).artifact_digest)
    forget = lc.forget("s", samples=["0-1/3"])
    lc.drain()
    assert lc.status(forget.id).status == "queued" and lc.model("s").quarantine
    lc.repair("s")
    lc.drain()
    assert lc.status(forget.id).status == "applied" and lc.model("s").quarantine is None
    before, repaired = (next(st for st in lc.history("s") if st.version == v) for v in (2, 3))
    assert [e.task for e in repaired.evaluations] == ["0-1", "2-3"]
    for old, new in zip(before.evaluations, repaired.evaluations):
        assert new.accuracy >= old.accuracy - 0.05, (old, new)
    assert lc.ledger.audit_problems()[1] == []
