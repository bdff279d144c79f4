from __future__ import annotations

from dataclasses import dataclass

from lifecycle.strategies.base import StrategyConfigError


@dataclass(frozen=True)
class AnalyticConfig:
    """Settings of the ``analytic`` strategy.

    width: random ReLU features (the ACIL "buffer size").
    gamma: ridge penalty; A starts at gamma * I.
    seed: seeds the frozen random projection.
    drift_tol: relative residual of A @ inv(A) on a probe vector above which
        the kept inverse is refreshed from A.
    residual_tol: relative residual of the head's normal equations on a probe
        vector, |v^T (C - A W)| / (|v^T C| + |v^T A W|), above which the head
        is refined against the exact statistics.
    chunk_rows: rows of random features built at a time by learn, forget and
        predict; the statistics are sums over rows, so a request of any size
        holds at most chunk_rows x width float64 features at once.
    """

    width: int = 1024
    gamma: float = 0.1
    seed: int = 0
    drift_tol: float = 1e-9
    residual_tol: float = 1e-12
    chunk_rows: int = 8192

    def __post_init__(self) -> None:
        if not isinstance(self.width, int) or isinstance(self.width, bool) or not 1 <= self.width <= 65536:
            raise StrategyConfigError(f"width must be an integer in 1..65536, not {self.width!r}")
        if not isinstance(self.gamma, (int, float)) or not self.gamma > 0:
            raise StrategyConfigError(f"gamma must be a positive number, not {self.gamma!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise StrategyConfigError(f"seed must be a non-negative integer, not {self.seed!r}")
        if not isinstance(self.drift_tol, (int, float)) or not 0 < self.drift_tol < 1:
            raise StrategyConfigError(f"drift_tol must be in (0, 1), not {self.drift_tol!r}")
        if not isinstance(self.residual_tol, (int, float)) or not 0 < self.residual_tol < 1:
            raise StrategyConfigError(f"residual_tol must be in (0, 1), not {self.residual_tol!r}")
        if (not isinstance(self.chunk_rows, int) or isinstance(self.chunk_rows, bool)
                or not 1 <= self.chunk_rows <= 2**20):
            raise StrategyConfigError(f"chunk_rows must be an integer in 1..{2**20}, not {self.chunk_rows!r}")
