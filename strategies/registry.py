"""Explicit registration of strategies.

A ``StrategySpec`` carries what the ledger needs at submit time (config class
and tags) and names the implementation as ``"module:Class"``, imported only
when a worker actually runs the strategy. That keeps database-only commands
free of torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lifecycle.strategies.base import Strategy, StrategyConfigError, Tags, config_from_dict


class UnknownStrategy(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0])


@dataclass(frozen=True)
class StrategySpec:
    name: str
    config_class: type
    tags: Tags
    implementation: str  # "package.module:ClassName"
    # Why the strategy refuses sample- and subject-level forgets, beyond its
    # forget unit; quoted in the submit-time rejection when set.
    sample_forget_refusal: str | None = None
    # A small, fast config (as JSON would hand it; read it, do not change it)
    # for tests, the conformance kit and quick bench runs: seconds on two CPU
    # cores, not a good model.
    test_config: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.tags, Tags):
            raise TypeError(f"strategy {self.name!r}: tags must be a Tags, not {type(self.tags).__name__}")
        if not isinstance(self.implementation, str) or self.implementation.count(":") != 1:
            raise ValueError(f"strategy {self.name!r}: implementation must read 'package.module:ClassName', "
                             f"not {self.implementation!r}")
        if not isinstance(self.test_config, Mapping):
            raise TypeError(f"strategy {self.name!r}: test_config must be a mapping, "
                            f"not {type(self.test_config).__name__}")
        object.__setattr__(self, "test_config", dict(self.test_config))  # the spec's own copy: JSON-ready
        try:
            self.make_config(self.test_config)
        except StrategyConfigError as exc:
            raise StrategyConfigError(f"strategy {self.name!r}: its test_config is not a valid config: {exc}") from None

    def make_config(self, values: Mapping[str, Any] | None) -> Any:
        return config_from_dict(self.config_class, values)

    def make_test_config(self, **overrides: Any) -> Any:
        """The config built from ``test_config``, with ``overrides`` on top."""
        return self.make_config({**self.test_config, **overrides})

    def load_class(self) -> type[Strategy]:
        module_name, _, class_name = self.implementation.partition(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        if cls.tags != self.tags:
            raise TypeError(f"strategy {self.name!r}: implementation tags differ from its spec "
                            f"({cls.tags} against {self.tags})")
        return cls

    def build(self, config: Any, n_features: int, n_classes: int) -> Strategy:
        return self.load_class()(config, n_features, n_classes)


_REGISTRY: dict[str, StrategySpec] = {}


def register(spec: StrategySpec) -> StrategySpec:
    if not spec.name or not spec.name.isidentifier():
        raise ValueError(f"strategy name must be an identifier, not {spec.name!r}")
    existing = _REGISTRY.get(spec.name)
    if existing is not None and existing != spec:
        raise ValueError(f"a different strategy is already registered as {spec.name!r}")
    _REGISTRY[spec.name] = spec
    return spec


def get(name: str) -> StrategySpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownStrategy(
            f"unknown strategy {name!r}; registered: {', '.join(sorted(_REGISTRY)) or 'none'}"
        ) from None


def names() -> list[str]:
    return sorted(_REGISTRY)
