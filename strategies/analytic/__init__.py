"""``analytic``: exact closed-form learning and unlearning (after ACU).

A frozen, seeded random ReLU feature map followed by a ridge-regression head
whose float64 sufficient statistics are the source of truth.
"""

from __future__ import annotations

from lifecycle.strategies.analytic.config import AnalyticConfig
from lifecycle.strategies.base import Tags
from lifecycle.strategies.registry import StrategySpec

TAGS = Tags(forget_unit="sample", exactness="exact", forget_needs="forget data", needs_task_id=False)

SPEC = StrategySpec(
    name="analytic",
    config_class=AnalyticConfig,
    tags=TAGS,
    implementation="lifecycle.strategies.analytic.model:AnalyticStrategy",
)

__all__ = ["AnalyticConfig", "SPEC", "TAGS"]
