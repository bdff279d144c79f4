"""Bad input gets a typed error naming the problem, and the ledger is unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from lifecycle import errors as E
from tests.data import digits_tasks, learn_task, make_model
from tests.helpers import snapshot


@pytest.fixture
def ready(lc):
    """A model with one applied task and one queued learn, plus the data."""
    make_model(lc)
    t0, t1, _ = digits_tasks()
    learn_task(lc, "digits", t0, subjects=["alice"] * len(t0.y))
    lc.drain()
    lc.forget("digits", samples=["0-1/0"])
    lc.drain()
    learn_task(lc, "digits", t1)
    return lc, t0, t1


def X_ok(n=3):
    return np.zeros((n, 64), np.float32)


def y_ok(n=3):
    return np.zeros(n, np.int64)


BAD_LEARNS = [
    ("unknown model", dict(model="nope"), E.UnknownModel, "no model named 'nope'"),
    ("X 1-D", dict(X=np.zeros(64)), E.InvalidRequest, "must be 2-D"),
    ("X wrong width", dict(X=np.zeros((3, 63))), E.InvalidRequest, "63 features"),
    ("X strings", dict(X=np.array([["a"] * 64] * 3)), E.InvalidRequest, "real numbers"),
    ("X object", dict(X=[[object()] * 64] * 3), E.InvalidRequest, "real numbers"),
    ("X ragged", dict(X=[[0.0] * 64, [0.0] * 3, [0.0]]), E.InvalidRequest, "could not be read"),
    ("X NaN", dict(X=np.where(np.eye(3, 64) > 0, np.nan, 0.0)), E.InvalidRequest, "NaN or infinite"),
    ("X inf", dict(X=np.full((3, 64), np.inf)), E.InvalidRequest, "NaN or infinite"),
    ("X too big for float32", dict(X=np.full((3, 64), 1e300)), E.InvalidRequest, "too large"),
    ("X empty", dict(X=np.zeros((0, 64)), y=np.zeros(0, np.int64), sample_ids=[]), E.InvalidRequest, "empty"),
    ("X is None", dict(X=None), E.InvalidRequest, "2-D numeric array"),
    ("y float", dict(y=np.zeros(3)), E.InvalidRequest, "integer class labels"),
    ("y too short", dict(y=np.zeros(2, np.int64)), E.InvalidRequest, "2 labels for 3 samples"),
    ("y out of range", dict(y=np.array([0, 10, 1])), E.InvalidRequest, "outside 0..9"),
    ("y negative", dict(y=np.array([0, -1, 1])), E.InvalidRequest, "outside 0..9"),
    ("ids wrong count", dict(sample_ids=["a", "b"]), E.InvalidRequest, "2 entries for 3 samples"),
    ("ids repeated", dict(sample_ids=["a", "b", "a"]), E.DuplicateSampleIds, "repeats 1 id"),
    ("ids not strings", dict(sample_ids=[1, 2, 3]), E.InvalidRequest, "must be a string"),
    ("ids a string", dict(sample_ids="abc"), E.InvalidRequest, "list of strings"),
    ("id empty", dict(sample_ids=["a", "", "c"]), E.InvalidRequest, "must not be empty"),
    ("id too long", dict(sample_ids=["a", "b", "x" * 201]), E.InvalidRequest, "limit is 200"),
    ("id control char", dict(sample_ids=["a", "b\x00", "c"]), E.InvalidRequest, "control"),
    ("ids already learned", dict(sample_ids=["0-1/1", "n1", "n2"]), E.DuplicateSampleIds, "already in model"),
    ("ids queued", dict(sample_ids=["2-3/1", "n1", "n2"]), E.DuplicateSampleIds, "already in model"),
    ("tombstoned id", dict(sample_ids=["0-1/0", "n1", "n2"]), E.TombstonedSample, "forgotten earlier"),
    ("subjects wrong count", dict(subjects=["a"]), E.InvalidRequest, "1 entries for 3 samples"),
    ("task empty", dict(task=""), E.InvalidRequest, "task must not be empty"),
    ("task not a string", dict(task=7), E.InvalidRequest, "task must be a string"),
    ("task very long", dict(task="t" * 5000), E.InvalidRequest, "limit is 200"),
    ("new task without probe", dict(task="brand-new", probe=None), E.InvalidRequest, "no probe set"),
    ("probe not a pair", dict(probe=(X_ok(),)), E.InvalidRequest, "pair"),
    ("probe NaN", dict(probe=(np.full((2, 64), np.nan), y_ok(2))), E.InvalidRequest, "probe X"),
    ("idempotency key empty", dict(idempotency_key=""), E.InvalidRequest, "idempotency_key"),
]


@pytest.mark.parametrize("case", BAD_LEARNS, ids=[c[0] for c in BAD_LEARNS])
def test_bad_learn_is_refused_and_writes_nothing(ready, case):
    lc, t0, _ = ready
    _, override, error, message = case
    args = dict(model="digits", task="0-1", X=X_ok(), y=y_ok(), sample_ids=["n0", "n1", "n2"], probe=None)
    args.update(override)
    before = snapshot(lc)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        lc.learn(args.pop("model"), **args)
    assert snapshot(lc) == before


BAD_FORGETS = [
    ("unknown model", dict(model="nope", task="0-1"), E.UnknownModel, "no model named"),
    ("no target", dict(), E.InvalidRequest, "exactly one of"),
    ("two targets", dict(task="0-1", subject="alice"), E.InvalidRequest, "exactly one of"),
    ("unknown task", dict(task="9-9"), E.UnknownTask, "no task '9-9'"),
    ("unknown samples", dict(samples=["0-1/1", "ghost"]), E.UnknownSamples, "never learned"),
    ("forgotten sample", dict(samples=["0-1/0"]), E.AlreadyForgotten, "already forgotten"),
    ("repeated samples", dict(samples=["0-1/1", "0-1/1"]), E.DuplicateSampleIds, "repeats"),
    ("empty samples", dict(samples=[]), E.InvalidRequest, "empty"),
    ("samples a string", dict(samples="0-1/1"), E.InvalidRequest, "list of strings"),
    ("unknown subject", dict(subject="mallory"), E.UnknownSubject, "no sample of this subject"),
    ("subject empty", dict(subject=""), E.InvalidRequest, "must not be empty"),
    ("SQL-looking task", dict(task="x'; DROP TABLE requests; --"), E.UnknownTask, "no task"),
    ("due in the past", dict(task="0-1", due_at=__import__("datetime").datetime(2000, 1, 1,
                                                                               tzinfo=__import__("datetime").timezone.utc)),
     E.InvalidRequest, "not in the future"),
    ("due naive", dict(task="0-1", due_at=__import__("datetime").datetime(2999, 1, 1)), E.InvalidRequest,
     "timezone-aware"),
]


@pytest.mark.parametrize("case", BAD_FORGETS, ids=[c[0] for c in BAD_FORGETS])
def test_bad_forget_is_refused_and_writes_nothing(ready, case):
    lc, *_ = ready
    _, args, error, message = case
    args = dict(args)
    model = args.pop("model", "digits")
    before = snapshot(lc)
    with pytest.raises(error, match=message):
        lc.forget(model, **args)
    assert snapshot(lc) == before


def test_second_forget_of_a_task_is_refused_while_the_first_is_queued(ready):
    lc, *_ = ready
    first = lc.forget("digits", task="0-1")
    before = snapshot(lc)
    with pytest.raises(E.AlreadyForgotten, match=first.id):
        lc.forget("digits", task="0-1")
    assert snapshot(lc) == before
    lc.drain()
    with pytest.raises(E.AlreadyForgotten, match="already forgotten at version"):
        lc.forget("digits", task="0-1")


def test_bad_models_are_refused(lc):
    before = snapshot(lc)
    with pytest.raises(E.InvalidConfig, match="unknown strategy 'nope'"):
        lc.create_model("m", strategy="nope", n_features=4, n_classes=2)
    with pytest.raises(E.InvalidConfig, match="unknown config keys"):
        lc.create_model("m", strategy="analytic", n_features=4, n_classes=2, config={"widht": 3})
    with pytest.raises(E.InvalidConfig, match="width"):
        lc.create_model("m", strategy="analytic", n_features=4, n_classes=2, config={"width": -3})
    with pytest.raises(E.InvalidRequest, match="n_features"):
        lc.create_model("m", strategy="analytic", n_features=0, n_classes=2)
    with pytest.raises(E.InvalidRequest, match="n_classes"):
        lc.create_model("m", strategy="analytic", n_features=4, n_classes=1)
    with pytest.raises(E.InvalidRequest, match="model name"):
        lc.create_model("", strategy="analytic", n_features=4, n_classes=2)
    assert snapshot(lc) == before
    make_model(lc, "m")
    with pytest.raises(E.ModelExists):
        make_model(lc, "m")


def test_idempotency_key_returns_the_original_or_refuses_a_different_payload(lc):
    make_model(lc)
    t0, t1, _ = digits_tasks()
    a = learn_task(lc, "digits", t0, idempotency_key="k1")
    b = learn_task(lc, "digits", t0, idempotency_key="k1")
    assert a.id == b.id
    before = snapshot(lc)
    with pytest.raises(E.IdempotencyConflict, match="different payload"):
        learn_task(lc, "digits", t0, idempotency_key="k1", n=10)
    assert snapshot(lc) == before
    lc.drain()
    f1 = lc.forget("digits", samples=["0-1/3"], idempotency_key="erase-3")
    f2 = lc.forget("digits", samples=["0-1/3"], idempotency_key="erase-3")
    assert f1.id == f2.id
    with pytest.raises(E.IdempotencyConflict):
        lc.forget("digits", samples=["0-1/4"], idempotency_key="erase-3")
    assert len(lc.requests("digits")) == 2


def test_task_level_strategy_rejects_sample_forgets_at_submit(lc):
    from lifecycle import strategies
    from lifecycle.strategies.base import Tags
    from lifecycle.strategies.registry import StrategySpec

    spec = strategies.get("analytic")
    strategies.register(StrategySpec("task_only_test", spec.config_class,
                                     Tags("task", "approximate", "nothing", True), spec.implementation))
    lc.create_model("tasky", strategy="task_only_test", n_features=64, n_classes=10)
    before = snapshot(lc)
    with pytest.raises(E.UnsupportedForgetUnit, match="forgets whole tasks only"):
        lc.forget("tasky", subject="alice")
    with pytest.raises(E.UnsupportedForgetUnit, match="analytic"):
        lc.forget("tasky", samples=["a"])
    assert snapshot(lc) == before


def test_predict_before_any_version_and_unknown_request(lc):
    make_model(lc)
    with pytest.raises(E.NotReady, match="no applied version"):
        lc.predict("digits", np.zeros((1, 64)))
    with pytest.raises(E.UnknownRequest):
        lc.status("00000000-0000-0000-0000-000000000000")


def test_cancel_only_queued(lc):
    make_model(lc)
    t0, t1, _ = digits_tasks()
    a = learn_task(lc, "digits", t0)
    b = learn_task(lc, "digits", t1)
    assert lc.cancel(b.id).status == "cancelled"
    lc.drain()
    with pytest.raises(E.RequestNotCancellable, match="applied"):
        lc.cancel(a.id)
    # the cancelled request's sample ids are free again
    c = learn_task(lc, "digits", t1)
    assert lc.drain()[0].id == c.id
