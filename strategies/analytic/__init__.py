"""``analytic``: exact closed-form learning and unlearning (after ACU).

A frozen, seeded random ReLU feature map followed by a ridge-regression head
whose float64 sufficient statistics are the source of truth.
"""

from __future__ import annotations

from lifecycle.strategies.analytic.config import AnalyticConfig
from lifecycle.strategies.base import Exactness, ForgetNeeds, ForgetUnit, Tags
from lifecycle.strategies.registry import StrategySpec

TAGS = Tags(ForgetUnit.SAMPLE, Exactness.EXACT, ForgetNeeds.FORGET_DATA, needs_task_id=False, scores=True)

SPEC = StrategySpec(
    name="analytic",
    config_class=AnalyticConfig,
    tags=TAGS,
    implementation="lifecycle.strategies.analytic.model:AnalyticStrategy",
    test_config={"width": 256},
)

__all__ = ["AnalyticConfig", "SPEC", "TAGS"]
