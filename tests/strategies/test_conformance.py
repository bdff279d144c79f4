"""One contract suite, run against every registered strategy.

Each strategy sees the same tiny split-digits stream (three tasks of two
classes, 64 features, 10 classes) and must honour the contract of
``strategies.base``: cheap constructors, matching spec and class, numpy-only
state that round-trips, seeded determinism, and forgetting through the
ForgetSet its tags ask for.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import numpy as np
import pytest
from sklearn.datasets import load_digits

from lifecycle import strategies
from lifecycle.strategies import ForgetSet, Strategy, TaskData

N_FEATURES = 64
N_CLASSES = 10
TASK_CLASSES = {"t0": (0, 1), "t1": (2, 3), "t2": (4, 5)}
TRAIN_PER_CLASS = 60
TEST_PER_CLASS = 40
FORGOTTEN = "t1"

# Smaller than the defaults, only to keep the suite fast.
CONFIG_OVERRIDES: dict[str, dict] = {
    "analytic": {"width": 256},
    "hypernet": {"hidden": [32], "hnet_layers": [50, 50], "chunk_size": 500, "epochs": 10, "batch_size": 32},
    "olora": {"hidden": [64], "epochs": 10},
    # inline retrain: a whole-task forget reaches every slice, and no worker is here to run the retrain job
    "s3t": {"n_shards": 2, "n_slices": 3, "continual_slices": 1, "n_sequences": 2, "hidden": 64, "rank": 16,
            "epochs": 10, "retrain_below": 64, "retrain_mode": "inline"},
}


@dataclass(frozen=True)
class Task:
    name: str
    batches: tuple[TaskData, ...]  # the task's training samples, in two learn steps
    X_test: np.ndarray
    y_test: np.ndarray

    @property
    def sample_ids(self) -> tuple[str, ...]:
        return tuple(i for b in self.batches for i in b.sample_ids)

    @property
    def X(self) -> np.ndarray:
        return np.concatenate([b.X for b in self.batches])

    @property
    def y(self) -> np.ndarray:
        return np.concatenate([b.y for b in self.batches])


@pytest.fixture(scope="module")
def tasks() -> dict[str, Task]:
    digits = load_digits()
    X = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(0)
    out = {}
    for name, classes in TASK_CLASSES.items():
        train, test = [], []
        for c in classes:
            idx = rng.permutation(np.flatnonzero(y == c))
            train.append(idx[:TRAIN_PER_CLASS])
            test.append(idx[TRAIN_PER_CLASS:TRAIN_PER_CLASS + TEST_PER_CLASS])
        train_idx = rng.permutation(np.concatenate(train))
        test_idx = np.concatenate(test)
        ids = np.array([f"{name}/{i}" for i in train_idx])
        halves = np.array_split(np.arange(len(train_idx)), 2)
        batches = tuple(
            TaskData(task=name, X=X[train_idx[h]], y=y[train_idx[h]], sample_ids=tuple(ids[h])) for h in halves
        )
        out[name] = Task(name, batches, X[test_idx], y[test_idx])
    return out


@pytest.fixture(params=strategies.names())
def spec(request) -> strategies.StrategySpec:
    return strategies.get(request.param)


def build(spec) -> Strategy:
    return spec.build(spec.make_config(CONFIG_OVERRIDES.get(spec.name, {})), N_FEATURES, N_CLASSES)


def learn_all(strategy: Strategy, tasks: dict[str, Task]) -> None:
    for task in tasks.values():
        for b in task.batches:
            strategy.learn(b)


def predict(strategy: Strategy, X: np.ndarray, task: str) -> np.ndarray:
    return strategy.predict(X, task=task if strategy.tags.needs_task_id else None)


def accuracy(strategy: Strategy, task: Task) -> float:
    return float(np.mean(predict(strategy, task.X_test, task.name) == task.y_test))


def chance(strategy: Strategy, task: Task) -> float:
    return 1.0 / (len(TASK_CLASSES[task.name]) if strategy.tags.needs_task_id else N_CLASSES)


def forget_set(strategy: Strategy, task: Task) -> ForgetSet:
    """The whole task, in the form the strategy's tags ask for."""
    ids = task.sample_ids
    tags = strategy.tags
    with_data = tags.forget_needs == "forget data"
    return ForgetSet(
        sample_ids=ids,
        task=task.name if tags.forget_unit == "task" else None,
        X=task.X if with_data else None,
        y=task.y if with_data else None,
        tasks=(task.name,) * len(ids),
    )


def test_constructor_only_stores_parameters(spec):
    strategy = build(spec)
    assert not strategy.is_fitted
    heavy = {k: type(v).__name__ for k, v in vars(strategy).items()
             if k not in ("config", "n_features", "n_classes") and not isinstance(v, (type(None), bool, int, float, str))}
    assert heavy == {}, f"constructor built state: {heavy}"
    assert (strategy.n_features, strategy.n_classes) == (N_FEATURES, N_CLASSES)


def test_spec_matches_implementation(spec):
    cls = spec.load_class()
    assert cls.name == spec.name
    assert cls.config_class is spec.config_class
    assert cls.tags == spec.tags
    assert spec.make_config({}) == spec.config_class()


def test_learn_then_predict(spec, tasks):
    strategy = build(spec)
    learn_all(strategy, tasks)
    assert strategy.is_fitted
    for task in tasks.values():
        labels = predict(strategy, task.X_test, task.name)
        assert labels.dtype == np.int64 and labels.shape == task.y_test.shape
        floor = chance(strategy, task)
        # At least halfway from chance to perfect.
        assert accuracy(strategy, task) >= floor + 0.5 * (1 - floor), task.name


def test_state_dict_round_trips(spec, tasks):
    strategy = build(spec)
    learn_all(strategy, tasks)
    state = strategy.state_dict()
    assert state and all(isinstance(v, np.ndarray) for v in state.values())

    clone = build(spec)
    clone.load_state_dict(pickle.loads(pickle.dumps(state)))
    assert clone.is_fitted
    for task in tasks.values():
        np.testing.assert_array_equal(predict(clone, task.X_test, task.name), predict(strategy, task.X_test, task.name))

    # A loaded state carries on like the original: the ledger loads, then applies the next step.
    for s in (strategy, clone):
        s.forget(forget_set(s, tasks[FORGOTTEN]))
    for task in tasks.values():
        np.testing.assert_array_equal(predict(clone, task.X_test, task.name), predict(strategy, task.X_test, task.name))


def test_same_config_same_learns_same_state(spec, tasks):
    first, second = build(spec), build(spec)
    learn_all(first, tasks)
    learn_all(second, tasks)
    a, b = first.state_dict(), second.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_forgetting_a_task_removes_it_and_spares_the_rest(spec, tasks):
    strategy = build(spec)
    learn_all(strategy, tasks)
    before = {name: accuracy(strategy, task) for name, task in tasks.items()}

    strategy.forget(forget_set(strategy, tasks[FORGOTTEN]))

    after = {name: accuracy(strategy, task) for name, task in tasks.items()}
    forgotten = tasks[FORGOTTEN]
    assert after[FORGOTTEN] <= chance(strategy, forgotten) + 0.15, (before, after)
    for name in tasks:
        if name != FORGOTTEN:
            assert after[name] >= 0.8 * before[name], (name, before, after)


def test_scores_agree_with_predictions(spec, tasks):
    strategy = build(spec)
    learn_all(strategy, tasks)
    for task in tasks.values():
        name = task.name if strategy.tags.needs_task_id else None
        try:
            scores = strategy.scores(task.X_test, task=name)
        except NotImplementedError:
            pytest.skip(f"{spec.name} offers no scores")
        assert scores.shape == (len(task.X_test), N_CLASSES)
        np.testing.assert_array_equal(np.argmax(scores, axis=1), predict(strategy, task.X_test, task.name))


def test_verification_hooks_return_plain_data(spec, tasks):
    strategy = build(spec)
    learn_all(strategy, tasks)
    strategy.forget(forget_set(strategy, tasks[FORGOTTEN]))
    proof = strategy.verify_forgotten(frozenset(tasks[FORGOTTEN].sample_ids))
    assert proof is None or (isinstance(proof, dict) and proof.get("passed") is True), proof
    notes = strategy.certificate_notes()
    assert isinstance(notes, list) and all(isinstance(n, str) and n for n in notes)
