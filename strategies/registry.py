"""Explicit registration of strategies.

A ``StrategySpec`` carries what the ledger needs at submit time (config class
and tags) and names the implementation as ``"module:Class"``, imported only
when a worker actually runs the strategy. That keeps database-only commands
free of torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from lifecycle.strategies.base import Strategy, Tags, config_from_dict


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

    def make_config(self, values: dict[str, Any] | None) -> Any:
        return config_from_dict(self.config_class, values)

    def load_class(self) -> type[Strategy]:
        module_name, _, class_name = self.implementation.partition(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        if cls.tags != self.tags:
            raise TypeError(f"strategy {self.name!r}: implementation tags differ from its spec")
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
