"""``s3t``: exact sample deletion by sharded, sliced adapter training (after S3T).

Shards of the data train sequences of small adapter blocks on a frozen base,
one block per slice prefix; deleting a sample deactivates the blocks that saw
it, and a shard left without a usable sequence is retrained in the background.
"""

from __future__ import annotations

from lifecycle.strategies.base import Tags
from lifecycle.strategies.registry import StrategySpec
from lifecycle.strategies.s3t.config import S3TConfig

TAGS = Tags(forget_unit="sample", exactness="exact", forget_needs="ids only", needs_task_id=False)

SPEC = StrategySpec(
    name="s3t",
    config_class=S3TConfig,
    tags=TAGS,
    implementation="lifecycle.strategies.s3t.model:S3TStrategy",
)

__all__ = ["S3TConfig", "SPEC", "TAGS"]
