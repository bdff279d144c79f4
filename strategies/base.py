"""The strategy contract: what every learn/unlearn strategy provides.

Strategies know nothing of the ledger. They take plain numpy arrays, keep
their own state, and hand it back as a flat ``dict[str, np.ndarray]`` so the
ledger can store it without knowing the strategy (and without torch).
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

ForgetUnit = Literal["task", "sample"]
Exactness = Literal["exact", "approximate", "suppression"]
ForgetNeeds = Literal["nothing", "forget data", "ids only"]


class StrategyConfigError(ValueError):
    """A strategy config value is out of range or of the wrong type."""


@dataclass(frozen=True)
class Tags:
    """Capability tags; the ledger uses them to accept or reject requests."""

    forget_unit: ForgetUnit
    exactness: Exactness
    forget_needs: ForgetNeeds
    needs_task_id: bool

    def __post_init__(self) -> None:
        if self.forget_unit not in ("task", "sample"):
            raise StrategyConfigError(f"forget_unit must be 'task' or 'sample', not {self.forget_unit!r}")
        if self.exactness not in ("exact", "approximate", "suppression"):
            raise StrategyConfigError(f"unknown exactness class {self.exactness!r}")
        if self.forget_needs not in ("nothing", "forget data", "ids only"):
            raise StrategyConfigError(f"unknown forget_needs {self.forget_needs!r}")


@dataclass(frozen=True)
class TaskData:
    """One learn step's data: ``X`` (n, n_features) float32, ``y`` (n,) int64."""

    task: str
    X: np.ndarray
    y: np.ndarray
    sample_ids: tuple[str, ...]


@dataclass(frozen=True)
class ForgetSet:
    """What one forget step removes.

    ``task`` is set for a task-level forget (the whole task goes). ``sample_ids``
    always lists the concrete samples being removed (possibly none, when an
    earlier request already removed them). ``X``/``y`` are given only to
    strategies tagged ``forget_needs == "forget data"``; ``tasks`` maps each
    sample to its task so sample-level strategies can keep per-task books.
    """

    sample_ids: tuple[str, ...]
    task: str | None = None
    X: np.ndarray | None = None
    y: np.ndarray | None = None
    tasks: tuple[str, ...] = ()


@dataclass(frozen=True)
class RetrainPlan:
    """A part of a strategy's state that a background job must rebuild from
    retained samples (e.g. an S3T shard left without a usable sequence)."""

    unit: int
    sample_ids: tuple[str, ...]


class Strategy(abc.ABC):
    """Base class. Subclasses set ``name``, ``config_class`` and ``tags``.

    Constructors only store parameters; state is created by the first
    ``learn`` or by ``load_state_dict``.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    tags: ClassVar[Tags]

    def __init__(self, config: Any, n_features: int, n_classes: int) -> None:
        self.config = config
        self.n_features = n_features
        self.n_classes = n_classes

    @abc.abstractmethod
    def learn(self, data: TaskData) -> None:
        """Learn one batch of a task's samples."""

    @abc.abstractmethod
    def forget(self, forget_set: ForgetSet) -> None:
        """Remove what ``forget_set`` names."""

    @abc.abstractmethod
    def predict(self, X: np.ndarray, task: str | None = None) -> np.ndarray:
        """Predicted labels (n,) int64. ``task`` is required when tags.needs_task_id."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, np.ndarray]:
        """The whole state as named numpy arrays (scalars as 0-d arrays)."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore a state produced by ``state_dict`` of an equal config."""

    def scores(self, X: np.ndarray, task: str | None = None) -> np.ndarray:
        """Per-class scores (n, n_classes) whose argmax is the prediction.

        Optional: membership-inference checks use it for a margin attack and
        fall back to correctness when a strategy raises NotImplementedError.
        """
        raise NotImplementedError(f"{type(self).__name__} offers no class scores")

    def verify_forgotten(self, sample_ids: frozenset[str]) -> dict[str, Any] | None:
        """A provenance check after a forget: proof that no part of the state
        still in use was trained on any of ``sample_ids`` (every forgotten
        sample of the model so far). Strategies without provenance return None.
        The result goes into the step's certificate.
        """
        return None

    def retrain_plan(self) -> list[RetrainPlan]:
        """Parts of the state that need a background retrain (none by default).

        After a forget the worker enqueues a ``retrain`` request for the model
        when this is not empty; applying that request calls ``retrain`` with
        each plan's retained samples as the ledger stores them.
        """
        return []

    def retrain(self, plan: RetrainPlan, data: TaskData) -> None:
        """Rebuild ``plan.unit`` from ``data``: exactly ``plan.sample_ids``, all retained."""
        raise NotImplementedError(f"{type(self).__name__} has nothing to retrain")

    def certificate_notes(self) -> list[str]:
        """Plain statements a deletion certificate must carry about this strategy's state."""
        return []

    def gate_weights(self, X: np.ndarray) -> np.ndarray | None:
        """Per-input weight in [0, 1] of a forget gate, for strategies that forget by
        inference-time gating (``exactness == "suppression"``); None for the others.

        The worker reads it after each step: the gate's recall on forgotten tasks'
        probes (share with weight >= 0.5) and its false-activation rate on retained
        tasks' probes. A forgotten task whose recall falls below
        ``gate_recall_floor`` is recorded as relapsed: a gate miss.
        """
        return None

    @property
    def gate_recall_floor(self) -> float:
        """Lowest acceptable gate recall on a forgotten task's probes (see ``gate_weights``)."""
        return 0.9

    @property
    def is_fitted(self) -> bool:
        """True once the strategy holds state (after a learn or a load)."""
        return False


def config_from_dict(config_class: type, values: dict[str, Any] | None) -> Any:
    """Build a config dataclass from a plain dict, naming unknown keys."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise StrategyConfigError(
            f"unknown config keys for {config_class.__name__}: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})"
        )
    return config_class(**values)


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)
