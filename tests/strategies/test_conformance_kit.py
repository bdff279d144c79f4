"""The conformance kit itself: it picks checks by tags, needs no pytest, and catches broken strategies."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lifecycle import strategies
from lifecycle.strategies import ForgetSet, conformance
from lifecycle.strategies.analytic import TAGS as ANALYTIC_TAGS
from lifecycle.strategies.analytic.config import AnalyticConfig
from lifecycle.strategies.analytic.model import AnalyticStrategy
from lifecycle.strategies.registry import StrategySpec


class ForgetsNothing(AnalyticStrategy):
    """Sample-level and tagged exact, but its forget silently does nothing."""

    name = "forgets_nothing"

    def forget(self, forget_set: ForgetSet) -> None:
        return None


class ScoresDisagree(AnalyticStrategy):
    """Tagged ``scores``, but its predictions are not the argmax of its scores."""

    name = "scores_disagree"

    def predict(self, X, task=None):
        return ((super().predict(X, task) + 1) % self.n_classes).astype(np.int64)


def toy_spec(cls: type) -> StrategySpec:
    # not registered: the kit takes a spec, the registry is left alone
    return StrategySpec(cls.name, AnalyticConfig, ANALYTIC_TAGS, f"{__name__}:{cls.__name__}",
                        test_config={"width": 128})


def run(spec: StrategySpec, name: str) -> None:
    checks = {check.name: check for check in conformance.checks(spec)}
    checks[name]()


@pytest.mark.parametrize("name", ["sample_forget_removes_the_samples", "forget_equals_retrain",
                                  "forget_task_removes_it_and_spares_the_rest"])
def test_the_kit_catches_a_forget_that_does_nothing(name):
    with pytest.raises(AssertionError):
        run(toy_spec(ForgetsNothing), name)


def test_a_forget_that_does_nothing_passes_the_checks_that_do_not_forget():
    for name in ("spec_matches_implementation", "learn_then_predict", "bad_input_raises_and_changes_nothing"):
        run(toy_spec(ForgetsNothing), name)


def test_the_kit_catches_scores_that_disagree_with_predict():
    with pytest.raises(AssertionError, match="argmax"):
        run(toy_spec(ScoresDisagree), "scores_agree_with_predict")


def test_check_strategy_names_the_failing_check():
    with pytest.raises(AssertionError, match="forgets_nothing: .*forget"):
        conformance.check_strategy(toy_spec(ForgetsNothing))


def test_checks_follow_the_tags():
    builtin = ("analytic", "hypernet", "olora", "s3t")
    names = {n: {c.name for c in conformance.checks(strategies.get(n))} for n in builtin}
    generic = {conformance.check_name(c) for c in conformance.GENERIC}
    assert all(generic <= found for found in names.values())
    assert "forget_equals_retrain" in names["analytic"] & names["s3t"]
    assert "forget_equals_retrain" not in names["hypernet"] | names["olora"]
    assert "sample_forget_removes_the_samples" in names["analytic"] & names["s3t"]
    assert "task_level_strategy_refuses_sample_forgets" in names["hypernet"] & names["olora"]
    assert {"suppression_is_disclosed", "gate_follows_the_forget"} <= names["olora"]
    assert {"provenance_proof", "retrain_plan_names_retained_samples"} <= names["s3t"]
    assert "predict_needs_task_id" in names["hypernet"]
    assert all("scores_agree_with_predict" in found for found in names.values())


def test_the_kit_does_not_need_pytest():
    code = "import sys; import lifecycle.strategies.conformance; assert 'pytest' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
