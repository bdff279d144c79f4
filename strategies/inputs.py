"""The input checks every strategy runs on the arrays its verbs are handed.

Each check raises ``StrategyInputError`` (a ``ValueError``) naming the verb
(``what``) and the problem, before anything is changed, and returns the array
in the dtype the strategy computes in.
"""

from __future__ import annotations

import numpy as np

from lifecycle.strategies.base import StrategyInputError


def features(X, n_features: int, what: str, dtype=np.float32) -> np.ndarray:
    """``X`` as an (n, n_features) array of ``dtype``."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != n_features:
        raise StrategyInputError(f"{what}: X must have shape (n, {n_features}), not {X.shape}")
    return np.asarray(X, dtype=dtype)


def labels(y, n: int, n_classes: int, what: str) -> np.ndarray:
    """``y`` as (n,) int64 labels in 0..n_classes-1, one per row of X."""
    y = np.asarray(y)
    if y.shape != (n,):
        raise StrategyInputError(f"{what}: y must have shape ({n},) to match X, not {y.shape}")
    if n and not np.issubdtype(y.dtype, np.integer):
        raise StrategyInputError(f"{what}: y must hold integer labels, not {y.dtype}")
    if n and (y.min() < 0 or y.max() >= n_classes):
        raise StrategyInputError(f"{what}: labels must lie in 0..{n_classes - 1}, got {y.min()}..{y.max()}")
    return y.astype(np.int64, copy=False)


def not_empty(n: int, task: str) -> None:
    """A learn that must hold at least one sample (strategies that train per request)."""
    if n == 0:
        raise StrategyInputError(f"learn of task {task!r} holds no samples")
