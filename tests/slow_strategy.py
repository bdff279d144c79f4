"""A test-only strategy: analytic, but each learn takes a set time and leaves a
marker file when it starts, so a test can kill a worker in the middle of a step."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from lifecycle import strategies
from lifecycle.strategies.analytic import TAGS
from lifecycle.strategies.analytic.config import AnalyticConfig
from lifecycle.strategies.analytic.model import AnalyticStrategy
from lifecycle.strategies.registry import StrategySpec


@dataclass(frozen=True)
class SlowConfig(AnalyticConfig):
    sleep_seconds: float = 0.0
    marker_dir: str = ""


class SlowAnalytic(AnalyticStrategy):
    name = "slow_analytic"
    config_class = SlowConfig

    def learn(self, data):
        if self.config.marker_dir:
            Path(self.config.marker_dir, f"started-{data.task}-{time.time_ns()}").touch()
        time.sleep(self.config.sleep_seconds)
        super().learn(data)


SPEC = strategies.register(
    StrategySpec("slow_analytic", SlowConfig, TAGS, "tests.slow_strategy:SlowAnalytic")
)


@dataclass(frozen=True)
class LeakyGateConfig(AnalyticConfig):
    gate_open_share: float = 0.5


LEAKY_TAGS = dataclasses.replace(TAGS, gated=True)


class LeakyGate(AnalyticStrategy):
    """Analytic, with a suppression gate that opens on a fixed share of any inputs."""

    name = "leaky_gate"
    config_class = LeakyGateConfig
    tags = LEAKY_TAGS

    def gate_weights(self, X):
        import numpy as np

        return (np.arange(len(X)) < self.config.gate_open_share * len(X)).astype(np.float32)

    @property
    def gate_recall_floor(self) -> float:
        return 0.9


LEAKY_SPEC = strategies.register(
    StrategySpec("leaky_gate", LeakyGateConfig, LEAKY_TAGS, "tests.slow_strategy:LeakyGate")
)
