"""Tiny real data sets for tests: split digits, cached once per process."""

from __future__ import annotations

import functools

import numpy as np

from lifecycle.datasets import split_digits

WIDTH = 128  # analytic random features: small keeps tests fast


@functools.cache
def digits_tasks(n_tasks: int = 3):
    return split_digits(n_tasks=n_tasks)


def make_model(lc, name: str = "digits", width: int = WIDTH, **kwargs):
    return lc.create_model(name, strategy="analytic", n_features=64, n_classes=10, config={"width": width}, **kwargs)


def learn_task(lc, model: str, t, *, prefix: str | None = None, subjects=None, n: int | None = None, **kwargs):
    n = len(t.y) if n is None else n
    prefix = prefix or t.name
    ids = [f"{prefix}/{i}" for i in range(n)]
    return lc.learn(model, task=t.name, X=t.X[:n], y=t.y[:n], sample_ids=ids,
                    subjects=None if subjects is None else subjects[:n], probe=(t.X_probe, t.y_probe), **kwargs)


def alternating_subjects(n: int, names=("alice", "bob", "carol")) -> list[str]:
    return [names[i % len(names)] for i in range(n)]


def accuracy_of(lc, model: str, t) -> float:
    return float(np.mean(lc.predict(model, t.X_probe) == t.y_probe))
