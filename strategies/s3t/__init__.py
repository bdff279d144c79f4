"""``s3t``: exact sample deletion by sharded, sliced adapter training (after S3T).

Shards of the data train sequences of small adapter blocks on a frozen base,
one block per slice prefix; deleting a sample deactivates the blocks that saw
it, and a shard left without a usable sequence is retrained in the background.
"""

from __future__ import annotations

from lifecycle.strategies.base import Exactness, ForgetNeeds, ForgetUnit, Tags
from lifecycle.strategies.registry import StrategySpec
from lifecycle.strategies.s3t.config import S3TConfig

TAGS = Tags(ForgetUnit.SAMPLE, Exactness.EXACT, ForgetNeeds.IDS_ONLY, needs_task_id=False, scores=True,
            provenance=True, background_retrain=True)

SPEC = StrategySpec(
    name="s3t",
    config_class=S3TConfig,
    tags=TAGS,
    implementation="lifecycle.strategies.s3t.model:S3TStrategy",
    # retrain_below at least the slice count: every shard a forget touches is
    # retrained, so a forget followed by its retrains equals a retrain
    test_config={"n_shards": 2, "n_slices": 3, "continual_slices": 1, "n_sequences": 2, "hidden": 64, "rank": 16,
                 "epochs": 10, "retrain_below": 64},
)

__all__ = ["S3TConfig", "SPEC", "TAGS"]
