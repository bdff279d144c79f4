"""The ``olora`` strategy: orthogonal learning adapters, gated unlearning adapters, the gate's figures."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import lifecycle.errors as E
from lifecycle import strategies
from lifecycle import relapse as relapse_check
from lifecycle.strategies import ForgetSet, StrategyConfigError, TaskData
from lifecycle.strategies.olora.detector import ledoit_wolf, roc_auc
from tests.data import digits_tasks

SPEC = strategies.get("olora")


def build(**overrides):
    return SPEC.build(SPEC.make_test_config(**overrides), 64, 10)


def learn(strategy, tasks):
    for t in tasks:
        strategy.learn(TaskData(t.name, t.X, t.y, tuple(f"{t.name}/{i}" for i in range(len(t.y)))))


def acc(strategy, t) -> float:
    return float(np.mean(strategy.predict(t.X_probe) == t.y_probe))


def forget(strategy, t):
    strategy.forget(ForgetSet(tuple(f"{t.name}/{i}" for i in range(len(t.y))), task=t.name, X=t.X, y=t.y))


@pytest.fixture(scope="module")
def tasks():
    return digits_tasks(4)


@pytest.fixture(scope="module")
def learned(tasks):
    s = build()
    learn(s, tasks)
    return s


@pytest.fixture(scope="module")
def forgot_one(tasks, learned):
    before = {t.name: acc(learned, t) for t in tasks}
    s = build()
    s.load_state_dict(learned.state_dict())
    forget(s, tasks[1])
    return s, before


def test_orthogonality_penalty_drives_overlap_down(tasks, learned):
    # with the penalty (default lambda_learn = 10) every pair of learning adapters is near orthogonal
    assert max(learned.adapter_overlaps("learn")) < 1e-3
    free = build(lambda_learn=0.0)
    learn(free, tasks[:3])
    assert max(free.adapter_overlaps("learn")) > 1e-2


def test_unlearning_adapters_are_orthogonal(tasks, forgot_one):
    s, _ = forgot_one
    s2 = build()
    s2.load_state_dict(s.state_dict())
    forget(s2, tasks[3])
    assert max(s2.adapter_overlaps("forget")) < 1e-3


def test_learns_class_incrementally_without_task_id(tasks, learned):
    for t in tasks:
        assert acc(learned, t) >= 0.85, t.name


def test_gated_forget_drops_task_and_spares_the_rest(tasks, forgot_one):
    s, before = forgot_one
    forgotten = tasks[1]
    assert acc(s, forgotten) <= 0.1 + 0.05  # chance among 10 classes, plus a little
    assert np.mean(s.predict(forgotten.X) == forgotten.y) == 0.0  # the forgotten training samples themselves
    for t in tasks:
        if t is not forgotten:
            assert acc(s, t) >= before[t.name] - 0.05, t.name


def test_gate_fires_on_forgotten_and_stays_shut_on_retained(tasks, forgot_one):
    s, _ = forgot_one
    forgotten = tasks[1]
    assert np.mean(s.gate(forgotten.X_probe) >= 0.5) >= 0.9
    retained = np.concatenate([t.X_probe for t in tasks if t is not forgotten])
    weights = s.gate(retained)
    assert weights.min() >= 0 and weights.max() <= 1
    assert np.mean(weights) < 0.05 and np.mean(weights >= 0.5) < 0.05
    assert np.array_equal(s.gate_weights(retained), weights)
    auroc = roc_auc(s.gate_scores(forgotten.X_probe), s.gate_scores(retained))
    assert auroc >= 0.95


def test_gate_combines_detector_with_router(tasks, forgot_one):
    s, _ = forgot_one
    forgotten = tasks[1]
    X = np.concatenate([t.X_probe for t in tasks])
    gates = {}
    for mode in ("off", "product", "odds"):
        c = build(gate_router=mode)
        c.load_state_dict(s.state_dict())
        gates[mode] = c.gate(X)
    np.testing.assert_array_equal(gates["odds"], s.gate(X))  # the default
    route = s.routing(X)[forgotten.name]
    np.testing.assert_allclose(gates["product"], gates["off"] * route, rtol=1e-5, atol=1e-7)
    is_forgotten = np.concatenate([np.full(len(t.y_probe), t is forgotten) for t in tasks])
    far = {mode: np.mean(w[~is_forgotten] >= 0.5) for mode, w in gates.items()}
    for mode, w in gates.items():
        assert np.mean(w[is_forgotten] >= 0.5) >= 0.9, mode
    # the detector alone (one-class, its threshold low for recall) fires on more retained probes
    assert far["product"] <= far["off"] and far["odds"] <= far["off"]
    assert far["product"] < 0.03 and far["odds"] < 0.03


def test_per_task_router_covariance_routes_too(tasks, learned):
    s = build(router_covariance="task")
    s.load_state_dict(learned.state_dict())  # the router keeps per-task sums: either covariance fits them
    for t in tasks:
        assert acc(s, t) >= 0.8, t.name


def test_state_round_trips(tasks, forgot_one):
    s, _ = forgot_one
    state = pickle.loads(pickle.dumps(s.state_dict()))
    assert all(isinstance(v, np.ndarray) and not v.dtype.hasobject for v in state.values())
    clone = build()
    clone.load_state_dict(state)
    X = np.concatenate([t.X_probe for t in tasks])
    np.testing.assert_array_equal(clone.scores(X), s.scores(X))
    np.testing.assert_array_equal(clone.gate(X), s.gate(X))
    assert clone.certificate_notes() == s.certificate_notes()


def test_mahalanobis_only_mode_keeps_no_per_sample_features(tasks, learned):
    s = build(detector="mahalanobis")
    s.load_state_dict(learned.state_dict())
    forget(s, tasks[1])
    state = s.state_dict()
    assert not any("bank" in k for k in state)
    forgotten = tasks[1]
    retained = np.concatenate([t.X_probe for t in tasks if t is not forgotten])
    assert roc_auc(s.gate_scores(forgotten.X_probe), s.gate_scores(retained)) >= 0.9
    assert acc(s, forgotten) <= 0.2
    notes = " ".join(s.certificate_notes())
    assert "mean and covariance" in notes and "bank" not in notes


def test_certificate_notes_say_suppressed_not_removed(forgot_one):
    s, _ = forgot_one
    notes = " ".join(s.certificate_notes())
    assert "suppression, not removal" in notes
    assert "features derived from the forgotten data" in notes


def test_relearning_a_forgotten_task_retires_its_gate(tasks, forgot_one):
    s0, _ = forgot_one
    s = build()
    s.load_state_dict(s0.state_dict())
    learn(s, [tasks[1]])
    assert acc(s, tasks[1]) >= 0.85
    assert np.all(s.gate(tasks[1].X_probe) == 0)  # no detector is left


def test_refuses_sample_level_and_bad_forgets(tasks, learned):
    s = build()
    s.load_state_dict(learned.state_dict())
    t = tasks[0]
    with pytest.raises(ValueError, match="whole tasks"):
        s.forget(ForgetSet(("0-1/0",), task=None, X=t.X[:1], y=t.y[:1]))
    with pytest.raises(ValueError, match="forget data"):
        s.forget(ForgetSet(("0-1/0",), task=t.name))
    with pytest.raises(ValueError, match="not learned"):
        s.forget(ForgetSet((), task="nope", X=t.X, y=t.y))


@pytest.mark.parametrize("bad", [{"rank": 0}, {"lambda_orth": -1}, {"detector": "svm"}, {"router": "x"},
                                 {"gate_quantile": 0.5, "gate_upper_quantile": 0.25}, {"hidden": []},
                                 {"base": "imagenet"}, {"min_gate_recall": 1.5}, {"gate_router": True},
                                 {"router_covariance": "diag"}, {"router_layers": 2}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(StrategyConfigError):
        strategies.get("olora").make_config(bad)


def test_ledoit_wolf_matches_sklearn():
    from sklearn.covariance import LedoitWolf

    X = np.random.default_rng(0).normal(size=(50, 8)) @ np.random.default_rng(1).normal(size=(8, 8))
    _, cov = ledoit_wolf(X)
    np.testing.assert_allclose(cov, LedoitWolf().fit(X).covariance_, rtol=1e-6, atol=1e-9)


def test_gate_misses_become_relapse_findings():
    watch = [relapse_check.Forgotten("a", 3, 0.0, 0.0, 0.02, 0.1), relapse_check.Forgotten("b", 3, 0.0, 0.0, 0.0, 0.1)]
    gates = {"a": ("forgotten", 0.6), "b": ("forgotten", 0.95), "c": ("retained", 0.01)}
    found = relapse_check.gate_misses(watch, gates, 0.9, set())
    assert [f["task"] for f in found] == ["a"] and found[0]["relapse"] == pytest.approx(0.4)
    assert found[0]["relapse"] > found[0]["threshold"]
    report = relapse_check.gate_report(gates)
    assert report["recall"] == {"a": 0.6, "b": 0.95} and report["max_false_activation"] == 0.01


# ------------------------------------------------------------------ the ledger side


def _learn_into(lc, model, t):
    ids = [f"{t.name}/{i}" for i in range(len(t.y))]
    subjects = ["alice" if i % 2 else "bob" for i in range(len(t.y))]
    return lc.learn(model, task=t.name, X=t.X, y=t.y, sample_ids=ids, subjects=subjects, probe=(t.X_probe, t.y_probe))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_submit_refuses_sample_and_subject_forgets_with_the_reason(lc):
    lc.create_model("gated", strategy="olora", n_features=64, n_classes=10, config=SPEC.test_config)
    t = digits_tasks(2)[0]
    _learn_into(lc, "gated", t)
    for kwargs in ({"subject": "alice"}, {"samples": [f"{t.name}/0"]}):
        with pytest.raises(E.UnsupportedForgetUnit) as info:
            lc.forget("gated", **kwargs)
        message = str(info.value)
        assert "94%" in message and "distributions" in message
        assert "analytic" in message and "s3t" in message


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_worker_reports_gate_recall_and_false_activations(lc):
    lc.create_model("gated", strategy="olora", n_features=64, n_classes=10, config=SPEC.test_config)
    ts = digits_tasks(3)
    for t in ts:
        _learn_into(lc, "gated", t)
    lc.forget("gated", task=ts[1].name, reason="licence revoked")
    lc.worker().drain(lc.model("gated").id)  # Worker.drain takes the model's id
    body = lc.certificate(lc.history("gated")[-1].request.id)["certificate"]
    report = body["verification"]["gate"]
    assert report is not None and set(report["recall"]) == {ts[1].name}
    assert report["recall"][ts[1].name] >= 0.9
    assert report["max_false_activation"] <= 0.05
    assert lc.relapse("gated") == []
    assert body["exactness"] == "suppression"
    assert any("suppression, not removal" in note for note in body["notes"]), body["notes"]
