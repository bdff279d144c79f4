"""``olora``: orthogonal LoRA stacks with OOD-gated unlearning adapters (after O3).

Learned knowledge and forgetting are both stacks of low-rank adapters on a
frozen base MLP. A forget trains an unlearning adapter on the forget data with
random wrong labels and a detector on its features; at inference the
strongest detector gate decides how much of the unlearning delta an input
gets. The knowledge stays in the weights: forgetting here is suppression.
"""

from __future__ import annotations

from lifecycle.strategies.base import Exactness, ForgetNeeds, ForgetUnit, Tags
from lifecycle.strategies.olora.config import OloraConfig
from lifecycle.strategies.registry import StrategySpec

TAGS = Tags(ForgetUnit.TASK, Exactness.SUPPRESSION, ForgetNeeds.FORGET_DATA, needs_task_id=False, scores=True,
            gated=True)

SAMPLE_FORGET_REFUSAL = (
    "its forget gate is an out-of-distribution detector that only separates whole distributions (a class, a "
    "task, a topic): in the feasibility prototype a gate fitted on a random 10% of samples fired on about 94% "
    "of all inputs, so it cannot single out individual samples or one subject's data"
)

SPEC = StrategySpec(
    name="olora",
    config_class=OloraConfig,
    tags=TAGS,
    implementation="lifecycle.strategies.olora.model:OloraStrategy",
    sample_forget_refusal=SAMPLE_FORGET_REFUSAL,
    test_config={"hidden": [64], "epochs": 10},
)

__all__ = ["OloraConfig", "SAMPLE_FORGET_REFUSAL", "SPEC", "TAGS"]
