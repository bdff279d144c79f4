"""``hypernet``: data-free task unlearning with a hypernetwork (after UnCLe).

A hypnettorch hypernetwork generates the weights of a target network from a
learned per-task embedding. Forgetting a task needs no data: the generated
weights of that task are pulled towards fresh Gaussian noise while those of
the remaining tasks are held in place.
"""

from __future__ import annotations

from lifecycle.strategies.base import Exactness, ForgetNeeds, ForgetUnit, Tags
from lifecycle.strategies.hypernet.config import HypernetConfig
from lifecycle.strategies.registry import StrategySpec

TAGS = Tags(ForgetUnit.TASK, Exactness.APPROXIMATE, ForgetNeeds.NOTHING, needs_task_id=True, scores=True)

SPEC = StrategySpec(
    name="hypernet",
    config_class=HypernetConfig,
    tags=TAGS,
    implementation="lifecycle.strategies.hypernet.model:HypernetStrategy",
    test_config={"hidden": [32], "hnet_layers": [50, 50], "chunk_size": 500, "epochs": 10, "batch_size": 32},
)

__all__ = ["HypernetConfig", "SPEC", "TAGS"]
