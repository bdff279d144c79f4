"""The s3t strategy: deletion capacity on the real bookkeeping, exactness, provenance, state."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from lifecycle import arrays
from lifecycle.store.artifacts import FolderArtifactStore
from lifecycle.strategies import ForgetSet, RetrainPlan, StrategyConfigError, TaskData
from lifecycle.strategies.s3t import SPEC, S3TConfig
from lifecycle.strategies.s3t.book import bms_orders, cyclic_orders
from lifecycle.strategies.s3t.capacity import (
    expected_first_retrain,
    expected_outage,
    measure_capacity,
    measure_costs,
    s3t_cost_per_deletion,
    sisa_cost_per_deletion,
    template_book,
)
from lifecycle.strategies.s3t.model import S3TStrategy
from lifecycle.strategies.s3t.net import BLOCK_KEYS

SMALL = dict(n_shards=2, n_slices=3, continual_slices=2, n_sequences=3, hidden=32, rank=8, epochs=5)


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)


def batches(digits, n_batches: int = 2, per_batch: int = 150) -> list[TaskData]:
    X, y = digits
    out = []
    for b in range(n_batches):
        rows = np.arange(b * per_batch, (b + 1) * per_batch)
        out.append(TaskData(f"b{b}", X[rows], y[rows], tuple(f"d/{i}" for i in rows)))
    return out


def make(**overrides) -> S3TStrategy:
    return S3TStrategy(S3TConfig(**{**SMALL, **overrides}), 64, 10)


def learned(data: list[TaskData], drop: frozenset[str] = frozenset(), **overrides) -> S3TStrategy:
    """A strategy that learned ``data`` (each batch one learn request) without the ids in ``drop``."""
    s = make(**overrides)
    for b in data:
        keep = [i for i, sid in enumerate(b.sample_ids) if sid not in drop]
        s.learn(TaskData(b.task, b.X[keep], b.y[keep], tuple(b.sample_ids[i] for i in keep)))
    return s


def assert_same_stages(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for key in BLOCK_KEYS:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)
        assert (x["digest"], x["count"]) == (y["digest"], y["count"])


# ---- capacity ----------------------------------------------------------------


@pytest.mark.parametrize("B", [1, 3, 6])
def test_deletion_capacity_matches_the_exact_expectations(B):
    """2,000 streams of uniformly random single-sample deletions through Book.deactivate."""
    m, L = 5, 6
    book, ids = template_book(m, L, B, per_slice=300)
    cap = measure_capacity(book, ids, 2000, np.random.default_rng(B))
    assert abs(cap.first_retrain.mean() - expected_first_retrain(m, L, B)) <= 1.0
    assert abs(cap.outage.mean() - expected_outage(m, L, B)) <= 3.0


def test_exact_expectations_reproduce_the_reference_values():
    assert expected_first_retrain(5, 6, 6) == pytest.approx(38.53, abs=0.01)
    assert expected_first_retrain(5, 6, 1) == pytest.approx(6.00, abs=0.01)
    assert expected_outage(5, 6, 6) == pytest.approx(119.85, abs=0.01)
    assert s3t_cost_per_deletion(6, 6) == pytest.approx(0.408, abs=0.001)
    assert sisa_cost_per_deletion(6) == pytest.approx((0.5833, 0.7222), abs=1e-4)


def test_retrain_cost_per_deletion_against_sisa():
    book, ids = template_book(5, 6, 6, per_slice=300)
    costs = measure_costs(book, ids, 15000, np.random.default_rng(7))
    assert costs["s3t"] == pytest.approx(s3t_cost_per_deletion(6, 6), abs=0.03)
    stages, data = sisa_cost_per_deletion(6)
    assert costs["sisa_stages"] == pytest.approx(stages, abs=0.02)
    assert costs["sisa_data"] == pytest.approx(data, abs=0.02)


# ---- sequence selection -----------------------------------------------------------


def test_cyclic_rotation_puts_every_slice_once_in_every_position():
    orders = cyclic_orders(6, 6)
    assert all(sorted(o) == list(range(6)) for o in orders)
    for pos in range(6):
        assert sorted(o[pos] for o in orders) == list(range(6))
    assert len({tuple(o) for o in cyclic_orders(4, 8)}) == 8  # beyond L: rotated suffixes add new orders


def test_bms_pushes_likely_deletions_late():
    priors = [0.3, 0.01, 0.01, 0.01, 0.2, 0.01]
    orders = bms_orders(6, 4, priors, tau=100.0)
    assert all(sorted(o) == list(range(6)) for o in orders)
    assert all(o[0] not in (0, 4) for o in orders)  # never first: a deletion there would kill the sequence
    assert len({o[0] for o in orders}) == 4  # distinct heads: one deletion kills at most one sequence
    assert np.mean([o.index(0) for o in orders]) > 3


def test_config_is_validated():
    with pytest.raises(StrategyConfigError):
        S3TConfig(selection="random")
    with pytest.raises(StrategyConfigError):
        S3TConfig(n_slices=3, deletion_priors=(0.1, 0.1))
    assert S3TConfig(n_slices=2, deletion_priors=[0.1, 0.2]).deletion_priors == (0.1, 0.2)
    assert SPEC.tags.forget_needs == "ids only" and SPEC.tags.exactness == "exact"


# ---- exactness and provenance -------------------------------------------------------


def test_deactivation_keeps_only_blocks_trained_as_from_scratch_without_the_deleted_samples(digits):
    # Stage by stage, bit for bit. That a forget and the retrains it asks for predict as learning only
    # the retained samples does is the conformance kit's forget_equals_retrain, for every exact strategy.
    data = batches(digits)
    strategy = learned(data)
    gone = frozenset(data[0].sample_ids[:3] + data[1].sample_ids[:2])
    strategy.forget(ForgetSet(sample_ids=tuple(sorted(gone))))
    assert strategy.last_forget_seconds < 0.25  # bookkeeping plus dropping blocks (target 50 ms; CI is shared)

    proof = strategy.verify_forgotten(gone)
    assert proof["passed"] is True, proof
    for j in range(SMALL["n_shards"]):
        for k, seq in enumerate(strategy.book.seqs[j]):
            for p in range(len(seq)):
                assert gone.isdisjoint(strategy.book.stage_ids(seq, p))

    # every block still active is bit-identical to the same stage trained from scratch on the retained samples
    scratch = learned(data, drop=gone)
    truncated = 0
    for j in range(SMALL["n_shards"]):
        for k in range(SMALL["n_sequences"]):
            active = strategy._stages[j][k]
            full = scratch._stages[j][k]
            truncated += len(active) < len(full)
            assert_same_stages(active, full[: len(active)])
    assert truncated > 0

    # a retrain of a shard gives, stage for stage, the weights of the from-scratch training
    for j in range(SMALL["n_shards"]):
        plan = RetrainPlan(j, tuple(strategy.book.live_ids(j)))
        X, y = digits
        rows = [int(s.split("/")[1]) for s in plan.sample_ids]
        strategy.retrain(plan, TaskData("retrain", X[rows], y[rows], plan.sample_ids))
        for k in range(SMALL["n_sequences"]):
            assert_same_stages(strategy._stages[j][k], scratch._stages[j][k])
    assert strategy.verify_forgotten(gone)["passed"] is True


def test_forget_needs_only_ids_and_takes_no_gradient_step(digits):
    strategy = learned(batches(digits, 1))
    before = {key: v.copy() for key, v in strategy.state_dict().items() if key.startswith("stage/")}
    strategy.forget(ForgetSet(sample_ids=("d/0",)))
    after = strategy.state_dict()
    for key, value in before.items():
        kept = after[key]
        np.testing.assert_array_equal(kept, value[: len(kept)])  # only whole trailing stages go


def test_retrain_plan_names_dead_shards_and_rejects_wrong_data(digits):
    data = batches(digits, 1)
    strategy = learned(data, n_sequences=1)
    # with one sequence, deleting a sample of its first slice leaves the shard without a usable sequence
    book = strategy.book
    head = book.seqs[0][0][0]
    victim = sorted(book.slices[head].ids)[0]
    strategy.forget(ForgetSet(sample_ids=(victim,)))
    assert not book.serving(0)
    plans = strategy.retrain_plan()
    assert [p.unit for p in plans] == [0] and victim not in plans[0].sample_ids
    assert "await a background retrain" in " ".join(strategy.certificate_notes())
    X, y = digits
    rows = [int(s.split("/")[1]) for s in plans[0].sample_ids]
    with pytest.raises(ValueError, match="retains"):
        strategy.retrain(plans[0], TaskData("r", X[rows[1:]], y[rows[1:]], plans[0].sample_ids[1:]))
    with pytest.raises(ValueError, match="labels"):
        strategy.retrain(plans[0], TaskData("r", X[rows], (y[rows] + 1) % 10, plans[0].sample_ids))
    strategy.retrain(plans[0], TaskData("r", X[rows], y[rows], plans[0].sample_ids))
    assert strategy.retrain_plan() == [] and book.serving(0)


def test_provenance_check_catches_a_block_trained_on_a_forgotten_sample(digits):
    strategy = learned(batches(digits, 1))
    sid = "d/5"
    # pretend the bookkeeping lost the deletion: the blocks that saw the sample stay active
    assert strategy.verify_forgotten(frozenset({sid}))["passed"] is False
    strategy.forget(ForgetSet(sample_ids=(sid,)))
    proof = strategy.verify_forgotten(frozenset({sid}))
    assert proof["passed"] is True and proof["active_blocks"] > 0 and len(proof["provenance_digest"]) == 64
    # tampering with a recorded training set is caught too
    j = next(j for j in range(SMALL["n_shards"]) if strategy._stages[j][0])
    strategy._stages[j][0][0]["digest"] = "0" * 64
    assert strategy.verify_forgotten(frozenset({sid}))["passed"] is False


def test_continual_learning_appends_stages_and_keeps_old_ones(digits):
    data = batches(digits, 3, per_batch=100)
    strategy = learned(data[:2])
    before = [[list(s) for s in shard] for shard in strategy._stages]
    strategy.learn(data[2])
    for j, shard in enumerate(strategy._stages):
        for k, stages in enumerate(shard):
            assert len(stages) == len(before[j][k]) + SMALL["continual_slices"]
            assert all(a is b for a, b in zip(before[j][k], stages, strict=False))  # untouched, not retrained
    X, y = digits
    assert np.mean(strategy.predict(X[1000:1300]) == y[1000:1300]) > 0.5


def test_state_round_trips_through_the_artifact_store(digits, tmp_path):
    data = batches(digits)
    strategy = learned(data)
    strategy.forget(ForgetSet(sample_ids=("d/1", "d/200")))
    store = FolderArtifactStore(tmp_path)
    digest = store.put(arrays.pack(strategy.state_dict()))
    clone = make()
    clone.load_state_dict(arrays.unpack(store.get(digest)))
    X = digits[0][:300]
    np.testing.assert_array_equal(clone.scores(X), strategy.scores(X))
    assert clone.verify_forgotten(frozenset({"d/1", "d/200"})) == strategy.verify_forgotten(frozenset({"d/1", "d/200"}))
    assert arrays.pack(clone.state_dict()) == arrays.pack(strategy.state_dict())
    # the loaded state carries on: continual learn and deletion behave the same
    extra = TaskData("x", digits[0][400:450], digits[1][400:450], tuple(f"d/{i}" for i in range(400, 450)))
    for s in (strategy, clone):
        s.learn(extra)
        s.forget(ForgetSet(sample_ids=("d/410",)))
    np.testing.assert_array_equal(clone.scores(X), strategy.scores(X))
    with pytest.raises(ValueError, match="keys"):
        make(n_sequences=2).load_state_dict(strategy.state_dict())
