"""A model's strategy, built from its config and loaded from a stored state."""

from __future__ import annotations

from lifecycle import arrays, strategies
from lifecycle.store.records import Model, ModelVersion, Task
from lifecycle.vault import Vault


def load_strategy(vault: Vault, model: Model, version: ModelVersion | None) -> strategies.Strategy:
    spec = strategies.get(model.strategy)
    strategy = spec.build(spec.make_config(model.config), model.n_features, model.n_classes)
    if version is not None:
        strategy.load_state_dict(arrays.unpack(vault.blob(version.artifact_digest)))
    return strategy


def chance(model: Model, task: Task, tags: strategies.Tags) -> float:
    """Accuracy of guessing: among the task's classes when the task id is given, else among all."""
    return 1.0 / (len(task.classes) if tags.needs_task_id else model.n_classes)
