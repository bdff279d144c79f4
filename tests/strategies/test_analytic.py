"""The analytic strategy: exactness of learn/forget against the closed form."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.strategies import ForgetSet, StrategyConfigError, TaskData
from lifecycle.strategies.analytic import SPEC, AnalyticConfig
from lifecycle.strategies.analytic.model import AnalyticStrategy

N_FEATURES = 5
N_CLASSES = 4


def make(width: int = 32, gamma: float = 0.1, seed: int = 0, **kwargs) -> AnalyticStrategy:
    return AnalyticStrategy(AnalyticConfig(width=width, gamma=gamma, seed=seed, **kwargs), N_FEATURES, N_CLASSES)


def batch(rng: np.random.Generator, n: int, prefix: str, classes=range(N_CLASSES)) -> TaskData:
    X = rng.standard_normal((n, N_FEATURES)).astype(np.float32)
    y = rng.choice(np.asarray(list(classes), dtype=np.int64), size=n)
    return TaskData(task=prefix, X=X, y=y, sample_ids=tuple(f"{prefix}/{i}" for i in range(n)))


def forget_of(samples: dict[str, tuple[np.ndarray, int]], ids: list[str]) -> ForgetSet:
    X = np.array([samples[i][0] for i in ids], dtype=np.float32).reshape(len(ids), N_FEATURES)
    y = np.array([samples[i][1] for i in ids], dtype=np.int64)
    return ForgetSet(sample_ids=tuple(ids), X=X, y=y)


def gram(strategy: AnalyticStrategy, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gamma I + Phi^T Phi, Phi), with Phi rebuilt from the stored projection."""
    state = strategy.state_dict()
    Phi = np.maximum(np.asarray(X, dtype=np.float64).reshape(-1, N_FEATURES) @ state["W_rand"] + state["b"], 0.0)
    return strategy.config.gamma * np.eye(strategy.config.width) + Phi.T @ Phi, Phi


def ridge_reference(strategy: AnalyticStrategy, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """solve(gamma I + Phi^T Phi, Phi^T Y)."""
    A, Phi = gram(strategy, X)
    return np.linalg.solve(A, Phi.T @ np.eye(N_CLASSES)[np.asarray(y, dtype=np.int64)])


def retained_arrays(retained: dict[str, tuple[np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray]:
    X = np.array([x for x, _ in retained.values()], dtype=np.float32).reshape(len(retained), N_FEATURES)
    y = np.array([label for _, label in retained.values()], dtype=np.int64)
    return X, y


def assert_matches_ridge(strategy: AnalyticStrategy, retained: dict[str, tuple[np.ndarray, int]],
                         worst_condition: float = 1.0) -> None:
    """The head equals a fresh ridge fit on ``retained``. A solve's forward error
    grows with the condition number of the statistics it ever inverted
    (``worst_condition``, at least the current one), so the bound is 1e-8
    relative for well-conditioned histories and scales with it past 1e3."""
    X, y = retained_arrays(retained)
    reference = ridge_reference(strategy, X, y)
    gap = np.linalg.norm(strategy.weights - reference)
    if retained:
        condition = max(worst_condition, np.linalg.cond(gram(strategy, X)[0]))
        bound = 1e-8 * max(1.0, condition / 1e3)
        assert gap <= bound * np.linalg.norm(reference), \
            f"relative gap {gap / np.linalg.norm(reference):.3g}, bound {bound:.3g} (condition {condition:.3g})"
    else:
        # Everything forgotten: the reference is exactly zero, so only an absolute bound makes sense.
        assert gap <= 1e-10
    assert strategy.n_samples == len(retained)


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(16, 48),
    gamma=st.sampled_from([0.01, 0.1, 1.0]),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_interleaved_learns_and_forgets_equal_ridge_on_retained(width, gamma, seed, data):
    rng = np.random.default_rng(seed)
    strategy = make(width=width, gamma=gamma, seed=seed)
    retained: dict[str, tuple[np.ndarray, int]] = {}
    batches: list[list[str]] = []
    worst_condition = 1.0
    for step in range(data.draw(st.integers(1, 10), label="steps")):
        op = "learn" if not retained else data.draw(st.sampled_from(["learn", "forget some", "forget batch"]))
        if op == "learn":
            # Up to 24 rows: sometimes as wide as the model, which takes the refactorising path.
            task = batch(rng, data.draw(st.integers(1, 24), label="batch size"), f"b{step}")
            strategy.learn(task)
            retained.update((i, (x, int(label))) for i, x, label in zip(task.sample_ids, task.X, task.y))
            batches.append(list(task.sample_ids))
            worst_condition = max(worst_condition, np.linalg.cond(gram(strategy, retained_arrays(retained)[0])[0]))
        elif op == "forget some":
            ids = data.draw(st.lists(st.sampled_from(sorted(retained)), min_size=1, unique=True), label="forget")
            strategy.forget(forget_of(retained, ids))
            for i in ids:
                del retained[i]
        else:
            # What is left of an earlier batch; possibly nothing, which must be a no-op.
            chosen = batches[data.draw(st.integers(0, len(batches) - 1), label="batch")]
            ids = [i for i in chosen if i in retained]
            strategy.forget(forget_of(retained, ids))
            for i in ids:
                del retained[i]
        assert_matches_ridge(strategy, retained, worst_condition)


def learn_batches(strategy: AnalyticStrategy, rng: np.random.Generator, n_batches: int,
                  size: int) -> dict[str, tuple[np.ndarray, int]]:
    """Learn ``n_batches`` batches of ``size``; returns every learned sample by id."""
    samples = {}
    for k in range(n_batches):
        task = batch(rng, size, f"b{k}")
        strategy.learn(task)
        samples.update((i, (x, int(label))) for i, x, label in zip(task.sample_ids, task.X, task.y))
    return samples


def forget_and_drop(strategy: AnalyticStrategy, samples: dict[str, tuple[np.ndarray, int]], ids: list[str]) -> None:
    strategy.forget(forget_of(samples, ids))
    for i in ids:
        del samples[i]


def test_small_updates_use_woodbury_without_refreshing():
    # A refresh of R or a refinement of W would hide a wrong Woodbury update
    # from the exactness check, but not from these counts.
    rng = np.random.default_rng(1)
    strategy = make(width=48)
    samples = learn_batches(strategy, rng, 6, 10)
    # 15 samples: within the Woodbury step's reach at width 48 (19 rows).
    assert strategy._woodbury_rows() >= 15
    forget_and_drop(strategy, samples, sorted(samples)[::4])
    assert strategy.refreshes == 0
    assert strategy.refinements == 0
    assert_matches_ridge(strategy, samples)


def test_residual_probe_catches_a_head_off_the_statistics_and_refines_it():
    rng = np.random.default_rng(5)
    strategy = make(width=48)
    samples = learn_batches(strategy, rng, 5, 10)
    # A head off by far more than round-off, as a wrong update would leave it.
    strategy._W = strategy._W * (1 + 1e-7)
    forget_and_drop(strategy, samples, sorted(samples)[:5])
    assert (strategy.refreshes, strategy.refinements) == (0, 1)
    assert_matches_ridge(strategy, samples)


def test_drift_check_refreshes_and_stays_exact():
    rng = np.random.default_rng(2)
    strategy = make(width=40, drift_tol=1e-18)  # below round-off, so every Woodbury step refreshes
    samples = learn_batches(strategy, rng, 4, 7)
    forget_and_drop(strategy, samples, sorted(samples)[:9])
    assert strategy.refreshes == 5
    assert_matches_ridge(strategy, samples)


def test_forgetting_a_whole_task_zeroes_its_class_columns():
    rng = np.random.default_rng(3)
    strategy = make(width=48)
    first = batch(rng, 30, "first", classes=[0, 1])
    second = batch(rng, 30, "second", classes=[2, 3])
    strategy.learn(first)
    strategy.learn(second)
    assert np.abs(strategy.weights[:, :2]).max() > 1e-3
    strategy.forget(ForgetSet(sample_ids=first.sample_ids, task="first", X=first.X, y=first.y))
    assert np.abs(strategy.weights[:, :2]).max() < 1e-9
    assert set(np.unique(strategy.predict(second.X))) <= {2, 3}


def test_state_dict_round_trip_predicts_identically():
    rng = np.random.default_rng(4)
    strategy = make(width=32)
    first = batch(rng, 40, "a")
    strategy.learn(first)
    strategy.learn(batch(rng, 10, "b"))
    state = strategy.state_dict()
    assert set(state) == {"W_rand", "b", "A", "C", "n_samples"}
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert state["n_samples"].shape == () and int(state["n_samples"]) == 50

    restored = make(width=32)
    restored.load_state_dict(state)
    X = rng.standard_normal((200, N_FEATURES)).astype(np.float32)
    np.testing.assert_array_equal(restored.predict(X), strategy.predict(X))
    np.testing.assert_allclose(restored.weights, strategy.weights, rtol=1e-10, atol=1e-12)

    # The restored instance goes on like the original.
    more = batch(rng, 5, "c")
    for s in (strategy, restored):
        s.learn(more)
        s.forget(ForgetSet(sample_ids=first.sample_ids[:7], X=first.X[:7], y=first.y[:7]))
    np.testing.assert_allclose(restored.weights, strategy.weights, rtol=1e-10, atol=1e-12)


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_chunked_learns_and_forgets_equal_the_unchunked_computation():
    rng = np.random.default_rng(11)
    first, second = batch(rng, 300, "a"), batch(rng, 40, "b")
    chunked, whole = make(width=32, chunk_rows=7), make(width=32, chunk_rows=4096)
    for s in (chunked, whole):
        s.learn(first)  # 300 rows: refactorised, in 43 chunks for ``chunked``
        s.learn(second)
        s.forget(ForgetSet(sample_ids=first.sample_ids[:50], X=first.X[:50], y=first.y[:50]))
        # 10 rows: more than ``chunked``'s chunk, so chunked it refactorises; ``whole`` takes Woodbury.
        s.forget(ForgetSet(sample_ids=second.sample_ids[:10], X=second.X[:10], y=second.y[:10]))
    a, b = chunked.state_dict(), whole.state_dict()
    for key in ("A", "C"):
        assert relative(a[key], b[key]) < 1e-10, key
    assert relative(chunked.weights, whole.weights) < 1e-10
    # ... and both equal the closed form on the retained rows, built in one piece.
    X = np.concatenate([first.X[50:], second.X[10:]])
    y = np.concatenate([first.y[50:], second.y[10:]])
    A, _ = gram(chunked, X)
    np.testing.assert_allclose(a["A"], A, rtol=1e-10, atol=1e-10 * np.abs(A).max())
    assert relative(chunked.weights, ridge_reference(chunked, X, y)) < 1e-8


def test_features_are_built_at_most_chunk_rows_at_a_time(monkeypatch):
    rng = np.random.default_rng(12)
    strategy = make(width=32, chunk_rows=64)
    built = []
    original = AnalyticStrategy._phi

    def recording(self, X):
        built.append(len(X))
        return original(self, X)

    monkeypatch.setattr(AnalyticStrategy, "_phi", recording)
    task = batch(rng, 1000, "a")
    strategy.learn(task)
    strategy.forget(ForgetSet(sample_ids=task.sample_ids[:300], X=task.X[:300], y=task.y[:300]))
    strategy.predict(task.X)
    assert max(built) == 64
    assert sum(built) == 1000 + 300 + 1000


def test_a_large_learn_never_holds_its_whole_feature_matrix():
    import tracemalloc

    rng = np.random.default_rng(13)
    n, width = 20_000, 256
    strategy = AnalyticStrategy(AnalyticConfig(width=width, chunk_rows=1024), N_FEATURES, N_CLASSES)
    task = batch(rng, n, "a")
    tracemalloc.start()
    try:
        strategy.learn(task)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    whole = n * width * 8  # the float64 feature matrix of the request: 41 MB
    assert peak < whole / 4, f"peak {peak / 1e6:.1f} MB against {whole / 1e6:.1f} MB for all features"
    assert strategy.n_samples == n


@pytest.mark.parametrize(
    ("key", "bad"),
    [("A", np.eye(31)), ("C", np.zeros((32, 5))), ("W_rand", np.zeros((4, 32))), ("b", np.zeros(33))],
)
def test_load_rejects_mismatched_shapes(key, bad):
    strategy = make(width=32)
    strategy.learn(batch(np.random.default_rng(5), 10, "a"))
    state = strategy.state_dict()
    state[key] = bad
    with pytest.raises(ValueError, match=key):
        make(width=32).load_state_dict(state)


def test_load_rejects_missing_keys_and_a_width_mismatch():
    strategy = make(width=32)
    strategy.learn(batch(np.random.default_rng(6), 10, "a"))
    state = strategy.state_dict()
    with pytest.raises(ValueError, match="width=16"):
        make(width=16).load_state_dict(state)
    del state["C"]
    with pytest.raises(ValueError, match="missing"):
        make(width=32).load_state_dict(state)


def test_constructor_allocates_nothing_and_predict_needs_a_learn():
    strategy = make()
    assert not strategy.is_fitted
    assert set(vars(strategy)) == {"config", "n_features", "n_classes"}
    with pytest.raises(RuntimeError, match="learned nothing yet"):
        strategy.predict(np.zeros((1, N_FEATURES), dtype=np.float32))


def test_forget_needs_the_samples_data():
    rng = np.random.default_rng(7)
    strategy = make()
    task = batch(rng, 10, "a")
    strategy.learn(task)
    before = strategy.weights
    with pytest.raises(ValueError, match="X and y"):
        strategy.forget(ForgetSet(sample_ids=task.sample_ids[:2]))
    with pytest.raises(ValueError, match="X and y"):
        strategy.forget(ForgetSet(sample_ids=task.sample_ids[:2], X=task.X[:2]))
    strategy.forget(ForgetSet(sample_ids=()))  # empty: nothing to do, nothing needed
    np.testing.assert_array_equal(strategy.weights, before)


def test_forgetting_what_was_never_learned_is_refused_and_changes_nothing():
    rng = np.random.default_rng(8)
    strategy = make(width=32)
    task = batch(rng, 10, "a")
    strategy.learn(task)
    before = strategy.state_dict()
    with pytest.raises(ValueError, match="only 10 are learned"):
        strategy.forget(forget_of({f"x{i}": (np.zeros(N_FEATURES), 0) for i in range(11)}, [f"x{i}" for i in range(11)]))
    # Far from anything learned, so removing it would make A indefinite.
    stranger = {"x": (np.full(N_FEATURES, 50.0), 1)}
    with pytest.raises(ValueError, match="positive definite"):
        strategy.forget(forget_of(stranger, ["x"]))
    after = strategy.state_dict()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])


def test_inputs_are_validated():
    strategy = make()
    with pytest.raises(ValueError, match="shape"):
        strategy.learn(TaskData("a", np.zeros((3, N_FEATURES + 1), np.float32), np.zeros(3, np.int64), ("1", "2", "3")))
    with pytest.raises(ValueError, match="labels"):
        strategy.learn(TaskData("a", np.zeros((1, N_FEATURES), np.float32), np.array([N_CLASSES]), ("1",)))


@pytest.mark.parametrize(
    "values",
    [{"width": 0}, {"width": 1.5}, {"width": True}, {"width": 70000}, {"gamma": 0}, {"gamma": -1.0},
     {"gamma": "big"}, {"seed": -1}, {"drift_tol": 0}, {"drift_tol": 1.0},
     {"residual_tol": 0}, {"residual_tol": -1e-12},
     {"chunk_rows": 0}, {"chunk_rows": 8.5}, {"chunk_rows": True}, {"chunk_rows": 2**21}],
)
def test_config_rejects_bad_values(values):
    with pytest.raises(StrategyConfigError):
        AnalyticConfig(**values)
    with pytest.raises(StrategyConfigError):
        SPEC.make_config(values)


def test_config_rejects_unknown_keys():
    with pytest.raises(StrategyConfigError, match="unknown config keys"):
        SPEC.make_config({"widht": 8})
