"""The strategy contract: what every learn/unlearn strategy provides.

Strategies know nothing of the ledger. They take plain numpy arrays, keep
their own state, and hand it back as a flat ``dict[str, np.ndarray]`` so the
ledger can store it without knowing the strategy (and without torch).
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

import numpy as np

from lifecycle.strategies.executor import LOCAL, Executor


class ForgetUnit(StrEnum):
    """The smallest thing a strategy can forget."""

    TASK = "task"
    SAMPLE = "sample"


class Exactness(StrEnum):
    """What a forget guarantees; it goes into every certificate."""

    EXACT = "exact"  # the state equals a retrain on the retained samples
    APPROXIMATE = "approximate"
    SUPPRESSION = "suppression"  # inference-time gating; the knowledge stays in the weights


class ForgetNeeds(StrEnum):
    """What a forget step must be handed besides the sample ids."""

    NOTHING = "nothing"
    FORGET_DATA = "forget data"
    IDS_ONLY = "ids only"


class StrategyConfigError(ValueError):
    """A strategy config value is out of range or of the wrong type."""


class StrategyInputError(ValueError):
    """Data handed to a strategy verb has the wrong shape, type or range; nothing was changed."""


class MissingCapability(NotImplementedError):
    """An optional verb was called on a strategy whose tags do not offer it."""


# capability tag -> the optional verbs it stands for
CAPABILITY_VERBS: dict[str, tuple[str, ...]] = {
    "scores": ("scores",),
    "gated": ("gate_weights",),
    "provenance": ("verify_forgotten",),
    "background_retrain": ("retrain_plan", "retrain"),
}


def _enum(kind: type[StrEnum], value: Any, what: str) -> StrEnum:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in kind)
        raise StrategyConfigError(f"{what} must be one of {allowed}, not {value!r}") from None


@dataclass(frozen=True)
class Tags:
    """Capability tags; the ledger uses them to accept or reject requests and to
    find a strategy's optional verbs (never ``getattr`` or NotImplementedError).

    forget_unit, exactness, forget_needs: see the enums (plain strings are
    accepted and converted; the enums compare equal to their values).
    needs_task_id: predict needs ``task=``.
    scores: offers ``scores(X, task)``, per-class scores whose argmax is the prediction.
    gated: offers ``gate_weights(X)``, the weight of an inference-time forget gate.
    provenance: ``verify_forgotten`` returns a proof (a dict), not None.
    background_retrain: ``retrain_plan()`` may name units that ``retrain`` rebuilds.
    """

    forget_unit: ForgetUnit
    exactness: Exactness
    forget_needs: ForgetNeeds
    needs_task_id: bool
    scores: bool = False
    gated: bool = False
    provenance: bool = False
    background_retrain: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "forget_unit", _enum(ForgetUnit, self.forget_unit, "forget_unit"))
        object.__setattr__(self, "exactness", _enum(Exactness, self.exactness, "exactness"))
        object.__setattr__(self, "forget_needs", _enum(ForgetNeeds, self.forget_needs, "forget_needs"))
        for flag in ("needs_task_id", *CAPABILITY_VERBS):
            value = getattr(self, flag)
            if not isinstance(value, bool):
                raise StrategyConfigError(f"tag {flag} must be True or False, not {value!r}")
        if self.exactness == Exactness.SUPPRESSION and not self.gated:
            raise StrategyConfigError("a suppression strategy forgets by gating at inference: tag it gated=True")

    def capabilities(self) -> frozenset[str]:
        """The capability tags that are set, e.g. ``{"scores", "gated"}``."""
        return frozenset(flag for flag in CAPABILITY_VERBS if getattr(self, flag))


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

    Optional verbs come with a capability tag (see ``Tags`` and
    ``CAPABILITY_VERBS``); a class tagged for one must override its verbs,
    which is checked when the class is created. Callers look at the tags, not
    at the methods. Called on a strategy not tagged for them, the two verbs
    that can only be answered by a capable strategy (``scores``, ``retrain``)
    raise ``MissingCapability``; the three queries keep their neutral answer
    (``verify_forgotten``: None, ``retrain_plan``: [], ``gate_weights``: None),
    so a caller that asks every strategy gets a true "none".
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    tags: ClassVar[Tags]
    # Where the independent jobs inside one request run (see ``executor``);
    # the worker sets it on the strategies it loads. Not part of the state.
    executor: Executor = LOCAL

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        tags = cls.__dict__.get("tags")
        if tags is None:
            return  # an intermediate class, or one that inherits its tags (checked where they were set)
        if not isinstance(tags, Tags):
            raise TypeError(f"{cls.__name__}.tags must be a Tags, not {type(tags).__name__}")
        missing = [verb for flag in tags.capabilities() for verb in CAPABILITY_VERBS[flag]
                   if getattr(cls, verb) is getattr(Strategy, verb)]
        if missing:
            raise TypeError(f"{cls.__name__} is tagged for {', '.join(missing)} but does not define "
                            f"{'it' if len(missing) == 1 else 'them'}")

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
        """Per-class scores (n, n_classes) whose argmax is the prediction (tag ``scores``).

        Membership-inference checks use them for a margin attack; strategies
        without the tag are attacked with their correctness instead.
        """
        raise self._missing("scores", "scores")

    def verify_forgotten(self, sample_ids: frozenset[str]) -> dict[str, Any] | None:
        """A provenance check after a forget (tag ``provenance``): proof that no
        part of the state still in use was trained on any of ``sample_ids``
        (every forgotten sample of the model so far), as a dict whose
        ``passed`` is a bool. The result goes into the step's certificate.
        None without the tag: no proof is offered.
        """
        return None

    def retrain_plan(self) -> list[RetrainPlan]:
        """Parts of the state that need a background retrain (tag ``background_retrain``;
        always none without it).

        After a forget the worker enqueues a ``retrain`` request for the model
        when this is not empty; applying that request calls ``retrain`` with
        each plan's retained samples as the ledger stores them.
        """
        return []

    def retrain(self, plan: RetrainPlan, data: TaskData) -> None:
        """Rebuild ``plan.unit`` from ``data``: exactly ``plan.sample_ids``, all retained
        (tag ``background_retrain``)."""
        raise self._missing("background_retrain", "retrain")

    def certificate_notes(self) -> list[str]:
        """Plain statements a deletion certificate must carry about this strategy's state."""
        return []

    def gate_weights(self, X: np.ndarray) -> np.ndarray | None:
        """Per-input weight in [0, 1] of a forget gate (tag ``gated``), for strategies
        that forget by inference-time gating (``exactness == "suppression"``);
        None without the tag.

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

    def _missing(self, flag: str, verb: str) -> MissingCapability:
        return MissingCapability(
            f"{type(self).__name__} is not tagged {flag!r}: it offers no "
            f"{verb}(); look at strategy.tags.{flag} before calling it"
        )


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
