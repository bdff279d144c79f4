"""The strategy contract itself: typed tags, optional verbs found by tags, specs, shared input checks and training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lifecycle import mia, strategies
from lifecycle.strategies import Exactness, ForgetNeeds, ForgetUnit, MissingCapability, RetrainPlan, Strategy
from lifecycle.strategies import StrategyConfigError, StrategyInputError, StrategySpec, Tags, TaskData
from lifecycle.strategies import inputs, training
from lifecycle.strategies.analytic.config import AnalyticConfig

PLAIN = Tags(forget_unit="sample", exactness="approximate", forget_needs="nothing", needs_task_id=False)


class Majority(Strategy):
    """Predicts the most frequent learned label; tagged for no optional verb."""

    name = "majority"
    config_class = AnalyticConfig
    tags = PLAIN
    _counts: np.ndarray | None = None

    @property
    def is_fitted(self) -> bool:
        return self._counts is not None

    def learn(self, data):
        y = inputs.labels(data.y, len(inputs.features(data.X, self.n_features, "learn")), self.n_classes, "learn")
        self._counts = np.bincount(y, minlength=self.n_classes) + (0 if self._counts is None else self._counts)

    def forget(self, forget_set):
        pass

    def predict(self, X, task=None):
        return np.full(len(X), int(np.argmax(self._counts)), dtype=np.int64)

    def state_dict(self):
        return {"counts": self._counts.copy()}

    def load_state_dict(self, state):
        self._counts = np.array(state["counts"])


class ScoredMajority(Majority):
    tags = Tags(forget_unit="sample", exactness="approximate", forget_needs="nothing", needs_task_id=False,
                scores=True)

    def scores(self, X, task=None):
        return np.tile(self._counts.astype(float), (len(X), 1))


def test_tags_take_strings_and_hold_enums_equal_to_them():
    tags = Tags(forget_unit="task", exactness="suppression", forget_needs="forget data", needs_task_id=False,
                gated=True)
    assert tags.forget_unit is ForgetUnit.TASK and tags.forget_unit == "task"
    assert tags.exactness is Exactness.SUPPRESSION and f"{tags.exactness}" == "suppression"
    assert {"forget data": 1}[tags.forget_needs] == 1 and tags.forget_needs is ForgetNeeds.FORGET_DATA
    assert tags == Tags(ForgetUnit.TASK, Exactness.SUPPRESSION, ForgetNeeds.FORGET_DATA, False, gated=True)
    assert tags.capabilities() == {"gated"}


@pytest.mark.parametrize("change", [{"forget_unit": "class"}, {"exactness": "roughly"}, {"forget_needs": "data"},
                                    {"needs_task_id": 1}, {"scores": "yes"}, {"gated": None},
                                    {"exactness": "suppression"}])
def test_tags_are_validated_on_construction(change):
    values = {"forget_unit": "sample", "exactness": "exact", "forget_needs": "ids only", "needs_task_id": False} | change
    with pytest.raises(StrategyConfigError):
        Tags(**values)


def test_every_registered_strategy_says_what_it_offers():
    offered = {name: strategies.get(name).tags.capabilities() for name in ("analytic", "hypernet", "olora", "s3t")}
    assert offered == {"analytic": {"scores"}, "hypernet": {"scores"}, "olora": {"scores", "gated"},
                       "s3t": {"scores", "provenance", "background_retrain"}}


def test_a_class_tagged_for_a_verb_it_does_not_define_is_refused():
    with pytest.raises(TypeError, match="verify_forgotten"):
        class Claims(Majority):
            tags = Tags(forget_unit="sample", exactness="exact", forget_needs="ids only", needs_task_id=False,
                        provenance=True)


def test_untagged_optional_verbs_raise_a_typed_error_and_queries_answer_none():
    s = Majority(AnalyticConfig(), 4, 3)
    with pytest.raises(MissingCapability, match="tags.scores"):
        s.scores(np.zeros((2, 4)))
    with pytest.raises(MissingCapability, match="background_retrain"):
        s.retrain(RetrainPlan(0, ()), TaskData("r", np.zeros((0, 4)), np.zeros(0, np.int64), ()))
    assert issubclass(MissingCapability, NotImplementedError)
    assert s.retrain_plan() == [] and s.verify_forgotten(frozenset({"a"})) is None and s.gate_weights(None) is None


def test_membership_inference_finds_scores_by_tags():
    X, y = np.zeros((3, 4), np.float32), np.array([0, 1, 1])
    plain, scored = Majority(AnalyticConfig(), 4, 3), ScoredMajority(AnalyticConfig(), 4, 3)
    for s in (plain, scored):
        s.learn(TaskData("t", X, y, ("a", "b", "c")))
    assert not mia.offers_scores(plain) and mia.offers_scores(scored)
    assert mia.sample_scores(plain, X, y)[1] == mia.CORRECT  # its scores() would raise: it is never called
    assert mia.sample_scores(scored, X, y)[1] == mia.MARGIN
    with pytest.raises(ValueError, match="offers no scores"):
        mia.sample_scores(plain, X, y, kind=mia.MARGIN)


def test_specs_carry_a_valid_test_config():
    for name in ("analytic", "hypernet", "olora", "s3t"):
        spec = strategies.get(name)
        assert spec.test_config and spec.make_test_config() == spec.make_config(spec.test_config)
        assert json.loads(json.dumps(spec.test_config)) == spec.test_config  # goes into a model's config as it is
    assert strategies.get("analytic").make_test_config(width=8).width == 8
    with pytest.raises(StrategyConfigError, match="test_config"):
        StrategySpec("bad", AnalyticConfig, PLAIN, "x:Y", test_config={"widht": 8})
    with pytest.raises(StrategyConfigError, match="test_config"):
        StrategySpec("bad", AnalyticConfig, PLAIN, "x:Y", test_config={"width": 0})


def test_load_class_refuses_tags_that_differ_from_the_spec():
    spec = StrategySpec("majority", AnalyticConfig, ScoredMajority.tags, f"{__name__}:Majority")
    with pytest.raises(TypeError, match="tags differ"):
        spec.load_class()


def test_input_checks_name_the_verb_and_the_problem():
    assert inputs.features([[1, 2]], 2, "learn").dtype == np.float32
    assert inputs.features([[1, 2]], 2, "learn", dtype=np.float64).dtype == np.float64
    cases = [
        (lambda: inputs.features(np.zeros((2, 3)), 2, "predict"), r"predict: X must have shape \(n, 2\)"),
        (lambda: inputs.labels(np.zeros(3, np.int64), 2, 5, "learn"), r"learn: y must have shape \(2,\) to match X"),
        (lambda: inputs.labels(np.array([0.5]), 1, 5, "learn"), "integer labels"),
        (lambda: inputs.labels(np.array([0, 5]), 2, 5, "forget"), r"forget: labels must lie in 0..4, got 0..5"),
        (lambda: inputs.not_empty(0, "t"), "holds no samples"),
    ]
    for call, message in cases:
        with pytest.raises(StrategyInputError, match=message):
            call()
    assert issubclass(StrategyInputError, ValueError)
    assert inputs.labels(np.array([1, 2], np.int32), 2, 5, "learn").dtype == np.int64


def test_fit_is_reproducible_and_leaves_nothing_trainable():
    X, y = torch.randn(50, 3, generator=torch.Generator().manual_seed(0)), torch.arange(50) % 2

    def train(seed: int) -> torch.Tensor:
        W = torch.zeros(3, 2)
        with training.trainable([W]) as params:
            training.fit(params, lambda rows: torch.nn.functional.cross_entropy(X[rows] @ W, y[rows]), n=50,
                         epochs=3, batch_size=16, lr=0.1, generator=torch.Generator().manual_seed(seed))
        assert not W.requires_grad
        return W

    assert torch.equal(train(1), train(1)) and not torch.equal(train(1), train(2))
