"""A conformance kit for strategies (after scikit-learn's ``check_estimator`` and river's ``checks``).

``checks(spec)`` yields named checks: the contract every strategy honours,
and the checks its tags call for (sample forgets for sample-level strategies,
"forget equals retrain" for exact ones, disclosure for suppression ones, and
one per capability tag). Each check builds its strategies from
``spec.test_config``, runs them on a tiny real stream (split digits: three
tasks of two classes, 64 features, 10 classes, each task learned in two
requests) and raises ``AssertionError`` naming what broke::

    from lifecycle.strategies import conformance
    for check in conformance.checks(spec):
        check()

The checks of one ``checks()`` call share a lazily learned strategy (each
check works on its own deep copy), so a whole run learns the stream a few
times, not once per check. Where a strategy has background retrains, the kit
runs them after each forget, as the worker does.
"""

from __future__ import annotations

import copy
import functools
import json
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from lifecycle.strategies.base import CAPABILITY_VERBS, Exactness, ForgetNeeds, ForgetSet, ForgetUnit
from lifecycle.strategies.base import MissingCapability, RetrainPlan, Strategy, TaskData
from lifecycle.strategies.registry import StrategySpec

N_FEATURES = 64
N_CLASSES = 10
TASK_CLASSES = {"t0": (0, 1), "t1": (2, 3), "t2": (4, 5)}
TRAIN_PER_CLASS = 60
TEST_PER_CLASS = 40
FORGOTTEN = "t1"


# ---- the stream -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    name: str
    batches: tuple[TaskData, ...]  # the task's training samples, in two learn requests
    X_test: np.ndarray
    y_test: np.ndarray

    @property
    def sample_ids(self) -> tuple[str, ...]:
        return tuple(i for b in self.batches for i in b.sample_ids)


@dataclass(frozen=True)
class Stream:
    tasks: dict[str, Task]
    rows: dict[str, tuple[np.ndarray, int, str]] = field(repr=False)  # sample id -> (x, y, task)

    def data(self, ids) -> tuple[np.ndarray, np.ndarray]:
        ids = list(ids)
        X = np.array([self.rows[i][0] for i in ids], dtype=np.float32).reshape(len(ids), N_FEATURES)
        return X, np.array([self.rows[i][1] for i in ids], dtype=np.int64)

    def task_of(self, ids) -> tuple[str, ...]:
        return tuple(self.rows[i][2] for i in ids)


@functools.cache
def digits_stream() -> Stream:
    """Three split-digits tasks from scikit-learn's bundled 8x8 digits, fixed by seed 0."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(0)
    tasks, rows = {}, {}
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
        tasks[name] = Task(name, batches, X[test_idx], y[test_idx])
        rows.update((sid, (X[i], int(y[i]), name)) for sid, i in zip(ids, train_idx))
    return Stream(tasks, rows)


# ---- the checks' subject ----------------------------------------------------------------------


class Subject:
    """One spec under test, with the stream and the strategies the checks share (built lazily)."""

    def __init__(self, spec: StrategySpec, stream: Stream) -> None:
        self.spec, self.stream, self.tags = spec, stream, spec.tags

    def build(self) -> Strategy:
        return self.spec.build(self.spec.make_test_config(), N_FEATURES, N_CLASSES)

    def learn(self, strategy: Strategy, drop: frozenset[str] = frozenset()) -> Strategy:
        """Learn the whole stream, one request per batch, leaving out the ids in ``drop``."""
        for task in self.stream.tasks.values():
            for b in task.batches:
                strategy.learn(_without(b, drop))
        return strategy

    @functools.cached_property
    def _learned(self) -> Strategy:
        return self.learn(self.build())

    @functools.cached_property
    def _forgot_task(self) -> Strategy:
        strategy = self.learned()
        self.forget(strategy, self.task_forget_set(self.stream.tasks[FORGOTTEN]))
        return strategy

    def learned(self) -> Strategy:
        """A strategy that learned the stream (a copy: change it freely)."""
        return copy.deepcopy(self._learned)

    def forgot_task(self) -> Strategy:
        """``learned()`` after forgetting task FORGOTTEN (a copy)."""
        return copy.deepcopy(self._forgot_task)

    def predict(self, strategy: Strategy, X: np.ndarray, task: str) -> np.ndarray:
        return strategy.predict(X, task=task if self.tags.needs_task_id else None)

    def accuracy(self, strategy: Strategy, task: Task) -> float:
        return float(np.mean(self.predict(strategy, task.X_test, task.name) == task.y_test))

    def chance(self, task: Task) -> float:
        return 1.0 / (len(TASK_CLASSES[task.name]) if self.tags.needs_task_id else N_CLASSES)

    def forget_set(self, ids, task: str | None = None, with_data: bool | None = None) -> ForgetSet:
        """A forget of ``ids`` (of ``task`` when given), with their data when the tags ask for it."""
        ids = tuple(ids)
        if with_data is None:
            with_data = self.tags.forget_needs == ForgetNeeds.FORGET_DATA
        X, y = self.stream.data(ids) if with_data else (None, None)
        return ForgetSet(sample_ids=ids, task=task, X=X, y=y, tasks=self.stream.task_of(ids))

    def task_forget_set(self, task: Task) -> ForgetSet:
        """The whole task, in the form the tags ask for."""
        return self.forget_set(task.sample_ids, task.name if self.tags.forget_unit == ForgetUnit.TASK else None)

    def forget(self, strategy: Strategy, forget_set: ForgetSet) -> None:
        """Forget, then run the retrains the strategy asks for (as the worker does)."""
        strategy.forget(forget_set)
        if self.tags.background_retrain:
            for plan in strategy.retrain_plan():
                self.retrain(strategy, plan)

    def retrain(self, strategy: Strategy, plan: RetrainPlan) -> None:
        X, y = self.stream.data(plan.sample_ids)
        strategy.retrain(plan, TaskData("retrain", X, y, tuple(plan.sample_ids)))

    def some_samples(self, per_batch: int) -> list[str]:
        """The first ``per_batch`` samples of every learn request: every task, both batches."""
        return [sid for task in self.stream.tasks.values() for b in task.batches for sid in b.sample_ids[:per_batch]]


def expect(condition: object, message: str) -> None:
    """Raise AssertionError(message) unless ``condition`` holds (unlike ``assert``, also under ``python -O``)."""
    if not condition:
        raise AssertionError(message)


def _without(batch: TaskData, drop: frozenset[str]) -> TaskData:
    if not drop:
        return batch
    keep = [i for i, sid in enumerate(batch.sample_ids) if sid not in drop]
    return TaskData(batch.task, batch.X[keep], batch.y[keep], tuple(batch.sample_ids[i] for i in keep))


def _state_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _assert_same_state(a: dict[str, np.ndarray], b: dict[str, np.ndarray], what: str) -> None:
    expect(a.keys() == b.keys(), f"{what}: state keys differ: {sorted(set(a) ^ set(b))[:5]}")
    differ = [k for k in a if not np.array_equal(a[k], b[k])]
    expect(not differ, f"{what}: state arrays differ: {differ[:5]}")


def _refuses(call: Callable[[], object], strategy: Strategy, what: str,
             errors: tuple[type[BaseException], ...] = (ValueError,)) -> None:
    """``call`` raises one of ``errors`` and leaves the strategy's state as it was."""
    before = strategy.state_dict() if strategy.is_fitted else None
    try:
        call()
    except errors:
        pass
    else:
        raise AssertionError(f"{what}: expected {' or '.join(e.__name__ for e in errors)}, nothing was raised")
    if before is not None:
        _assert_same_state(strategy.state_dict(), before, f"{what} (refused) changed the state")


# ---- generic checks: every strategy -----------------------------------------------------------


def check_spec_matches_implementation(s: Subject) -> None:
    cls = s.spec.load_class()
    expect(cls.name == s.spec.name, f"class name {cls.name!r} differs from the spec's {s.spec.name!r}")
    expect(cls.config_class is s.spec.config_class, "the class and the spec name different config classes")
    expect(cls.tags == s.spec.tags, f"class tags {cls.tags} differ from the spec's {s.spec.tags}")
    expect(s.spec.make_config({}) == s.spec.config_class(), "an empty config dict must give the default config")


def check_tags_match_verbs(s: Subject) -> None:
    cls = s.spec.load_class()
    for flag, verbs in CAPABILITY_VERBS.items():
        if getattr(s.tags, flag):
            for verb in verbs:
                expect(getattr(cls, verb) is not getattr(Strategy, verb), f"tagged {flag} but {verb} is not defined")
    strategy = s.build()
    X = s.stream.tasks["t0"].X_test
    if not s.tags.scores:
        _refuses(lambda: strategy.scores(X), strategy, "scores() without the scores tag", (MissingCapability,))
    if not s.tags.background_retrain:
        expect(strategy.retrain_plan() == [], "retrain_plan() must be empty without the background_retrain tag")
        plan = RetrainPlan(0, ())
        _refuses(lambda: strategy.retrain(plan, TaskData("r", X[:0], np.zeros(0, np.int64), ())), strategy,
                 "retrain() without the background_retrain tag", (MissingCapability,))
    if not s.tags.provenance:
        expect(strategy.verify_forgotten(frozenset()) is None, "verify_forgotten must be None without provenance")


def check_constructor_only_stores_parameters(s: Subject) -> None:
    strategy = s.build()
    expect(not strategy.is_fitted, "a new strategy reports is_fitted")
    params, plain = ("config", "n_features", "n_classes"), (type(None), bool, int, float, str)
    heavy = {k: type(v).__name__ for k, v in vars(strategy).items() if k not in params and not isinstance(v, plain)}
    expect(heavy == {}, f"constructor built state: {heavy}")
    expect((strategy.n_features, strategy.n_classes) == (N_FEATURES, N_CLASSES), "constructor did not store shapes")


def check_unfitted_strategy_refuses_to_predict(s: Subject) -> None:
    strategy = s.build()
    task = s.stream.tasks["t0"]
    for what, call in (("predict", lambda: s.predict(strategy, task.X_test, task.name)),
                       ("state_dict", strategy.state_dict)):
        try:
            call()
        except (RuntimeError, ValueError):
            continue
        raise AssertionError(f"{what}() before any learn must raise RuntimeError or ValueError")


def check_learn_then_predict(s: Subject) -> None:
    strategy = s.learned()
    expect(strategy.is_fitted, "is_fitted is False after learning")
    for task in s.stream.tasks.values():
        labels = s.predict(strategy, task.X_test, task.name)
        expect(labels.dtype == np.int64, f"predict returned {labels.dtype}, not int64")
        expect(labels.shape == task.y_test.shape, f"predict returned shape {labels.shape}, not {task.y_test.shape}")
        floor = s.chance(task)
        acc = s.accuracy(strategy, task)
        expect(acc >= floor + 0.5 * (1 - floor), f"task {task.name}: accuracy {acc:.3f} is not halfway from chance")


def check_bad_input_raises_and_changes_nothing(s: Subject) -> None:
    strategy = s.learned()
    b = s.stream.tasks["t0"].batches[0]
    n = len(b.y)
    wide = np.zeros((n, N_FEATURES + 1), np.float32)
    bad = {
        "a learn with too many features": TaskData(b.task, wide, b.y, b.sample_ids),
        "a learn with a label out of range": TaskData(b.task, b.X, np.full(n, N_CLASSES), b.sample_ids),
        "a learn with float labels": TaskData(b.task, b.X, b.y.astype(np.float64) + 0.5, b.sample_ids),
        "a learn with fewer labels than rows": TaskData(b.task, b.X, b.y[:-1], b.sample_ids),
    }
    for what, data in bad.items():
        _refuses(lambda data=data: strategy.learn(data), strategy, what)
    _refuses(lambda: s.predict(strategy, np.zeros((3, N_FEATURES - 1), np.float32), "t0"), strategy,
             "a predict with too few features")


def check_state_dict_round_trip(s: Subject) -> None:
    original = s.learned()
    state = original.state_dict()
    expect(state, "state_dict() is empty")
    plain = {k: type(v).__name__ for k, v in state.items() if not isinstance(v, np.ndarray) or v.dtype.hasobject}
    expect(not plain, f"state values must be numpy arrays without objects: {plain}")
    clone = s.build()
    clone.load_state_dict(pickle.loads(pickle.dumps(state)))
    expect(clone.is_fitted, "is_fitted is False after load_state_dict")
    _assert_same_state(clone.state_dict(), state, "state_dict() of a loaded state")
    for task in s.stream.tasks.values():
        np.testing.assert_array_equal(s.predict(clone, task.X_test, task.name),
                                      s.predict(original, task.X_test, task.name),
                                      err_msg=f"a loaded state predicts {task.name} differently")
    # A loaded state carries on like the original: the ledger loads, then applies the next step.
    s.forget(clone, s.task_forget_set(s.stream.tasks[FORGOTTEN]))
    forgot = s.forgot_task()  # the original, after the same forget
    for task in s.stream.tasks.values():
        np.testing.assert_array_equal(s.predict(clone, task.X_test, task.name),
                                      s.predict(forgot, task.X_test, task.name),
                                      err_msg=f"after a forget, a loaded state predicts {task.name} differently")


def check_same_config_same_state(s: Subject) -> None:
    again = s.learn(s.build())
    _assert_same_state(again.state_dict(), s.learned().state_dict(), "two learns of the same stream and config")


def check_forget_task_removes_it_and_spares_the_rest(s: Subject) -> None:
    learned, forgot = s.learned(), s.forgot_task()
    before = {name: s.accuracy(learned, task) for name, task in s.stream.tasks.items()}
    after = {name: s.accuracy(forgot, task) for name, task in s.stream.tasks.items()}
    forgotten = s.stream.tasks[FORGOTTEN]
    expect(after[FORGOTTEN] <= s.chance(forgotten) + 0.15, f"the forgotten task is still known: {before} -> {after}")
    for name in s.stream.tasks:
        if name != FORGOTTEN:
            expect(after[name] >= 0.8 * before[name], f"forgetting {FORGOTTEN} cost {name}: {before} -> {after}")


def check_verification_hooks_return_plain_data(s: Subject) -> None:
    strategy = s.forgot_task()
    proof = strategy.verify_forgotten(frozenset(s.stream.tasks[FORGOTTEN].sample_ids))
    if s.tags.provenance:
        expect(isinstance(proof, dict) and proof.get("passed") is True, f"provenance proof did not pass: {proof}")
        json.dumps(proof, allow_nan=False)  # goes into a certificate as it is
    else:
        expect(proof is None, f"verify_forgotten must return None without the provenance tag, not {proof!r}")
    notes = strategy.certificate_notes()
    expect(isinstance(notes, list) and all(isinstance(n, str) and n for n in notes),
           f"bad certificate notes: {notes!r}")


# ---- checks the tags call for -----------------------------------------------------------------


def check_task_level_strategy_refuses_sample_forgets(s: Subject) -> None:
    strategy = s.learned()
    ids = s.some_samples(1)
    _refuses(lambda: strategy.forget(s.forget_set(ids, task=None)), strategy, "a sample-level forget")


def check_sample_forget_removes_the_samples(s: Subject) -> None:
    strategy = s.learned()
    before = strategy.state_dict()
    s.forget(strategy, s.forget_set(s.some_samples(3)))
    expect(not _state_equal(strategy.state_dict(), before), "forgetting 18 samples left the state as it was")
    for task in s.stream.tasks.values():
        floor, acc = s.chance(task), s.accuracy(strategy, task)
        expect(acc >= floor + 0.5 * (1 - floor), f"after forgetting a few samples, {task.name} fell to {acc:.3f}")
    after = strategy.state_dict()
    strategy.forget(ForgetSet(sample_ids=()))
    _assert_same_state(strategy.state_dict(), after, "an empty forget")


def check_forget_equals_retrain(s: Subject) -> None:
    """Interleaved learns and forgets end where learning only the retained samples does.

    With background retrains the comparison is made after the retrains the
    strategy asks for, so its test_config must ask for one wherever a forget
    touched a unit (s3t: ``retrain_below`` at least the slice count)."""
    stream = s.stream
    t0, t1, t2 = (stream.tasks[n] for n in TASK_CLASSES)
    first = t0.batches[0].sample_ids[:4] + t0.batches[1].sample_ids[:4] + t1.batches[0].sample_ids[:4]
    second = t0.batches[0].sample_ids[4:7] + t1.batches[1].sample_ids[:4] + t2.batches[0].sample_ids[:4]
    gone = frozenset(first + second)

    strategy = s.build()
    for b in (t0.batches[0], t0.batches[1], t1.batches[0]):
        strategy.learn(b)
    s.forget(strategy, s.forget_set(first))
    for b in (t1.batches[1], t2.batches[0]):
        strategy.learn(b)
    s.forget(strategy, s.forget_set(second))
    strategy.learn(t2.batches[1])

    reference = s.learn(s.build(), drop=gone)
    for task in stream.tasks.values():
        name = task.name if s.tags.needs_task_id else None
        if s.tags.scores:
            got, want = strategy.scores(task.X_test, task=name), reference.scores(task.X_test, task=name)
            finite = np.isfinite(want)
            scale = float(np.abs(want[finite]).max()) if finite.any() else 1.0
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * scale,
                                       err_msg=f"{task.name}: scores differ from a retrain on the retained samples")
        np.testing.assert_array_equal(s.predict(strategy, task.X_test, task.name),
                                      s.predict(reference, task.X_test, task.name),
                                      err_msg=f"{task.name}: predictions differ from a retrain on the retained samples")
    if s.tags.provenance:
        proof = strategy.verify_forgotten(gone)
        expect(isinstance(proof, dict) and proof.get("passed") is True,
               f"the provenance proof fails after the forgets: {proof}")


def check_suppression_is_disclosed(s: Subject) -> None:
    notes = s.forgot_task().certificate_notes()
    expect(notes, "a suppression strategy must say in its certificate notes that the knowledge stays")
    expect(any("suppress" in note.lower() for note in notes), f"no certificate note speaks of suppression: {notes}")


def check_predict_needs_task_id(s: Subject) -> None:
    strategy = s.learned()
    _refuses(lambda: strategy.predict(s.stream.tasks["t0"].X_test), strategy, "a predict without task=")


def check_forget_without_data_is_refused(s: Subject) -> None:
    strategy = s.learned()
    task = s.stream.tasks[FORGOTTEN]
    name = task.name if s.tags.forget_unit == ForgetUnit.TASK else None
    _refuses(lambda: strategy.forget(s.forget_set(task.sample_ids[:5], name, with_data=False)), strategy,
             "a forget without the data it needs")


def check_scores_agree_with_predict(s: Subject) -> None:
    for strategy in (s.learned(), s.forgot_task()):
        for task in s.stream.tasks.values():
            name = task.name if s.tags.needs_task_id else None
            scores = strategy.scores(task.X_test, task=name)
            expect(scores.shape == (len(task.X_test), N_CLASSES), f"scores have shape {scores.shape}")
            expect(np.issubdtype(scores.dtype, np.floating), f"scores are {scores.dtype}, not floats")
            expect(not np.isnan(scores).any(), "scores hold NaN")
            np.testing.assert_array_equal(np.argmax(scores, axis=1), s.predict(strategy, task.X_test, task.name),
                                          err_msg=f"{task.name}: argmax of the scores is not the prediction")


def check_gate_follows_the_forget(s: Subject) -> None:
    learned, forgot = s.learned(), s.forgot_task()
    floor = learned.gate_recall_floor
    expect(0 < floor <= 1, f"gate_recall_floor must lie in (0, 1], not {floor}")
    X_all = np.concatenate([t.X_test for t in s.stream.tasks.values()])
    for strategy, when in ((learned, "before any forget"), (forgot, "after a forget")):
        weights = np.asarray(strategy.gate_weights(X_all))
        expect(weights.shape == (len(X_all),), f"gate_weights {when} have shape {weights.shape}")
        expect(weights.min() >= 0 and weights.max() <= 1, f"gate weights {when} leave [0, 1]")
    expect(np.mean(np.asarray(learned.gate_weights(X_all)) >= 0.5) == 0, "the gate opens with nothing forgotten")
    recall = np.mean(np.asarray(forgot.gate_weights(s.stream.tasks[FORGOTTEN].X_test)) >= 0.5)
    expect(recall >= floor, f"the gate opens on {recall:.2f} of the forgotten task's probes, below its floor {floor}")
    retained = np.concatenate([t.X_test for name, t in s.stream.tasks.items() if name != FORGOTTEN])
    false = np.mean(np.asarray(forgot.gate_weights(retained)) >= 0.5)
    expect(false <= 0.1, f"the gate opens on {false:.2f} of the retained tasks' probes")


def check_provenance_proof(s: Subject) -> None:
    strategy = s.learned()
    if s.tags.forget_unit == ForgetUnit.SAMPLE:
        ids, forget_set = s.some_samples(1), s.forget_set(s.some_samples(1))
    else:
        ids, forget_set = s.stream.tasks[FORGOTTEN].sample_ids, s.task_forget_set(s.stream.tasks[FORGOTTEN])
    proof = strategy.verify_forgotten(frozenset(ids))
    expect(isinstance(proof, dict) and proof.get("passed") is False,
           f"the proof passes for samples that are still learned: {proof}")
    strategy.forget(forget_set)  # the worker proves right after the forget, before any background retrain
    proof = strategy.verify_forgotten(frozenset(ids))
    expect(isinstance(proof, dict) and proof.get("passed") is True, f"the proof fails after the forget: {proof}")


def check_retrain_plan_names_retained_samples(s: Subject) -> None:
    strategy = s.learned()
    ids = s.some_samples(1)
    strategy.forget(s.forget_set(ids))
    plans = strategy.retrain_plan()
    expect(plans, "test_config should make a forget ask for a retrain, so that the kit can exercise retrain()")
    expect(len({p.unit for p in plans}) == len(plans), f"a unit is named twice: {[p.unit for p in plans]}")
    for plan in plans:
        expect(not set(ids) & set(plan.sample_ids), f"unit {plan.unit}'s plan names forgotten samples")
        expect(set(plan.sample_ids) <= set(s.stream.rows), f"unit {plan.unit}'s plan names unknown samples")
    plan = next(p for p in plans if p.sample_ids)
    X, y = s.stream.data(plan.sample_ids[1:])
    short = TaskData("retrain", X, y, tuple(plan.sample_ids[1:]))
    _refuses(lambda: strategy.retrain(plan, short), strategy, "a retrain whose data miss a sample")
    for plan in plans:
        s.retrain(strategy, plan)
    expect(strategy.retrain_plan() == [], "the retrains did not clear the plan")


# ---- selection by tags ------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One named check of one spec; call it to run it."""

    name: str
    spec: str
    run: Callable[[], None] = field(repr=False, compare=False)

    def __call__(self) -> None:
        self.run()


GENERIC: tuple[Callable[[Subject], None], ...] = (
    check_spec_matches_implementation,
    check_tags_match_verbs,
    check_constructor_only_stores_parameters,
    check_unfitted_strategy_refuses_to_predict,
    check_learn_then_predict,
    check_bad_input_raises_and_changes_nothing,
    check_state_dict_round_trip,
    check_same_config_same_state,
    check_forget_task_removes_it_and_spares_the_rest,
    check_verification_hooks_return_plain_data,
)

# (does a spec's tags call for it?, check)
BY_TAGS: tuple[tuple[Callable[[object], bool], Callable[[Subject], None]], ...] = (
    (lambda t: t.forget_unit == ForgetUnit.TASK, check_task_level_strategy_refuses_sample_forgets),
    (lambda t: t.forget_unit == ForgetUnit.SAMPLE, check_sample_forget_removes_the_samples),
    (lambda t: t.exactness == Exactness.EXACT, check_forget_equals_retrain),
    (lambda t: t.exactness == Exactness.SUPPRESSION, check_suppression_is_disclosed),
    (lambda t: t.needs_task_id, check_predict_needs_task_id),
    (lambda t: t.forget_needs == ForgetNeeds.FORGET_DATA, check_forget_without_data_is_refused),
    (lambda t: t.scores, check_scores_agree_with_predict),
    (lambda t: t.gated, check_gate_follows_the_forget),
    (lambda t: t.provenance, check_provenance_proof),
    (lambda t: t.background_retrain, check_retrain_plan_names_retained_samples),
)


def check_name(check: Callable[[Subject], None]) -> str:
    return check.__name__.removeprefix("check_")


def checks(spec: StrategySpec, stream: Stream | None = None) -> Iterator[Check]:
    """The checks ``spec``'s tags call for, generic ones first. Cheap: nothing is
    learned until a check runs; the checks of one call share what they learn."""
    subject = Subject(spec, stream if stream is not None else digits_stream())
    selected = [*GENERIC, *(check for applies, check in BY_TAGS if applies(spec.tags))]
    for check in selected:
        yield Check(check_name(check), spec.name, functools.partial(check, subject))


def check_strategy(spec: StrategySpec) -> None:
    """Run every check of ``spec``; the first failure raises."""
    for check in checks(spec):
        try:
            check()
        except AssertionError as exc:
            raise AssertionError(f"{spec.name}: {check.name}: {exc}") from exc
