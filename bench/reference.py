"""The retrain-from-scratch reference: what exact unlearning should look like.

After every request a fresh network is trained, jointly, on what is retained.
The comparative bench and the sequence scripts share it; each picks the
network and the training (``mlp``/``train``/``fit_jointly`` here, or a
network of its own through ``Retrain``'s ``fit``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

N_CLASSES = 10

# What ``Retrain`` hands its ``fit``: the retained (task, X, y), in learn order.
Parts = list[tuple[Hashable, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class MlpSettings:
    """The comparative bench's network and training, for its reference and its Avalanche baselines."""

    hidden_size: int = 256
    hidden_layers: int = 2
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3

    @property
    def hidden(self) -> tuple[int, ...]:
        return (self.hidden_size,) * self.hidden_layers


def mlp(n_features: int, hidden: Sequence[int], seed: int, n_classes: int = N_CLASSES) -> torch.nn.Sequential:
    """A ReLU MLP with the given hidden widths, initialised after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    layers, width = [], n_features
    for h in hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
        width = h
    return torch.nn.Sequential(*layers, torch.nn.Linear(width, n_classes))


def train(net: torch.nn.Module, X: np.ndarray, y: np.ndarray, epochs: int, *, lr: float = 1e-3,
          batch_size: int = 64, seed: int = 0) -> torch.nn.Module:
    """Minibatch Adam on cross-entropy, ``epochs`` passes in orders drawn from a generator seeded with ``seed``."""
    X_t, y_t = torch.as_tensor(X), torch.as_tensor(y)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(y_t), generator=generator)
        for start in range(0, len(y_t), batch_size):
            rows = order[start:start + batch_size]
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(net(X_t[rows]), y_t[rows]).backward()
            optimiser.step()
    return net


def fit_jointly(parts: Parts, n_features: int, hidden: Sequence[int], epochs: int, seed: int, *,
                lr: float = 1e-3, batch_size: int = 64) -> torch.nn.Sequential:
    """A fresh MLP trained on the union of ``parts`` (an untrained one when there are none)."""
    net = mlp(n_features, hidden, seed)
    if not parts:
        return net
    X = np.concatenate([X for _, X, _ in parts])
    y = np.concatenate([y for _, _, y in parts])
    return train(net, X, y, epochs, lr=lr, batch_size=batch_size, seed=seed)


def accuracy(net: torch.nn.Module, X: np.ndarray, y: np.ndarray) -> float:
    """The share of ``X`` a torch classifier labels as ``y`` (argmax over all classes)."""
    net.eval()
    with torch.no_grad():
        return float(np.mean(net(torch.as_tensor(X)).argmax(1).numpy() == y))


class Retrain:
    """Exact unlearning by retraining from scratch on what is retained, after every request.

    ``fit`` gets the retained ``(task, X, y)`` in learn order (an empty list
    when nothing is) and returns the new model; a task learned again before
    it is forgotten adds to its data. ``predict`` is the model's.
    """

    def __init__(self, fit: Callable[[Parts], Any]) -> None:
        self._fit = fit
        self._data: dict[Hashable, tuple[np.ndarray, np.ndarray]] = {}
        self.model: Any = None

    @property
    def retained(self) -> list[Hashable]:
        return list(self._data)

    def learn(self, task: Hashable, X: np.ndarray, y: np.ndarray) -> Any:
        if task in self._data:
            X0, y0 = self._data[task]
            X, y = np.concatenate([X0, X]), np.concatenate([y0, y])
        self._data[task] = (X, y)
        return self._refit()

    def forget(self, task: Hashable) -> Any:
        del self._data[task]
        return self._refit()

    def predict(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return self.model.predict(*args, **kwargs)

    def _refit(self) -> Any:
        self.model = self._fit([(task, X, y) for task, (X, y) in self._data.items()])
        return self.model
