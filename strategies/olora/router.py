"""The routing of ``olora``: which learned task an input belongs to, and how far a forget's gate opens.

``TaskRouter`` keeps, per learned task, running sums of the frozen base's
hidden features by class (count, sum, outer product; every hidden layer
concatenated by default), so a task learned over several requests is one
entry. Its posterior of each task under class-conditional Gaussians (one
within-class covariance pooled over the tasks by default) weights the tasks'
learning adapters per input.

``strongest_gate`` combines every forget's detector (``detector.py``) with the router's
posterior of the forgotten task and keeps the strongest: the detector is
one-class (no retained data), the router knows every learned task, so an
input the router gives to a retained task keeps the gate shut.
"""

from __future__ import annotations

import numpy as np
import torch

from lifecycle.strategies.olora.config import OloraConfig
from lifecycle.strategies.olora.detector import _sigmoid

_STAT_KEYS = ("count", "sum", "outer")


class TaskRouter:
    def __init__(self, config: OloraConfig, n_classes: int, device: torch.device) -> None:
        self.config = config
        self.n_classes = n_classes
        self.device = device
        self.stats: dict[str, dict[str, np.ndarray]] = {}  # task -> {"count": (C,), "sum": (C, D), "outer": (D, D)}
        self._cache: dict | None = None

    def __contains__(self, task: str) -> bool:
        return task in self.stats

    def __len__(self) -> int:
        return len(self.stats)

    def tasks(self) -> list[str]:
        return list(self.stats)

    def classes(self, task: str) -> np.ndarray:
        """The classes ``task`` has samples of."""
        return np.flatnonzero(self.stats[task]["count"] > 0)

    def learned_classes(self) -> set[int]:
        return {int(c) for task in self.stats for c in self.classes(task)}

    def features(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(feats, dim=1) if self.config.router_layers == "all" else feats[-1]

    def add(self, task: str, feats: list[torch.Tensor], y: np.ndarray) -> None:
        """Add one learn request's samples (the base's hidden features, labels) to ``task``'s sums."""
        Z = self.features(feats).cpu().numpy().astype(np.float64)
        D = Z.shape[1]
        r = self.stats.setdefault(task, {"count": np.zeros(self.n_classes), "sum": np.zeros((self.n_classes, D)),
                                         "outer": np.zeros((D, D))})
        np.add.at(r["count"], y, 1.0)
        np.add.at(r["sum"], y, Z)
        r["outer"] += Z.T @ Z
        self._cache = None

    def retire(self, task: str) -> None:
        self.stats.pop(task, None)
        self._cache = None

    def weights(self, feats: list[torch.Tensor]) -> dict[str, torch.Tensor] | None:
        """Each learned task's posterior per input, from the base's hidden features (one tensor per layer);
        None when the router does not route ("sum") or knows no task."""
        if self.config.router == "sum" or not self.stats:
            return None
        params = self._params()
        names = list(params)
        Z64 = self.features(feats).to(torch.float64)
        scores, whitened = [], {}
        for name in names:
            p = params[name]
            key = id(p["whiten"]) if self.config.router_covariance == "pooled" else name
            if key not in whitened:  # the pooled whitening is shared: apply it once
                whitened[key] = Z64 @ p["whiten"]
            diff = whitened[key][:, None, :] - (p["means"] @ p["whiten"])[None]  # (n, classes, D)
            log_lik = -0.5 * (diff * diff).sum(-1) + p["log_prior"][None]
            scores.append(torch.logsumexp(log_lik, dim=1) - p["half_logdet"])
        weights = torch.softmax(torch.stack(scores, dim=1), dim=1).to(torch.float32)
        return {name: weights[:, j] for j, name in enumerate(names)}

    def _params(self) -> dict:
        """Class means, log priors and whitening of the router, cached until the router changes.

        "pooled": one within-class covariance over every task's classes, class priors over all samples
        (a linear discriminant; the log-determinant is common and drops out). "task": one covariance
        per task, class priors within the task, each task's log-determinant in its score."""
        if self._cache is None:
            lam = self.config.router_shrinkage
            stats = {}
            for task, r in self.stats.items():
                present = np.flatnonzero(r["count"] > 0)
                n_c = r["count"][present]
                means = r["sum"][present] / n_c[:, None]
                within = r["outer"] - (means * n_c[:, None]).T @ means
                stats[task] = (n_c, means, within, max(n_c.sum() - len(present), 1.0))
            pooled = self.config.router_covariance == "pooled"
            n_all = sum(float(v[0].sum()) for v in stats.values())

            def whitening(within, dof):
                cov = within / dof
                D = cov.shape[0]
                cov = (1 - lam) * cov + lam * (np.trace(cov) / D + 1e-6) * np.eye(D)
                vals, vecs = np.linalg.eigh(cov)
                vals = np.maximum(vals, 1e-9)
                return vecs / np.sqrt(vals), float(0.5 * np.sum(np.log(vals)))

            if pooled:
                shared, _ = whitening(sum(v[2] for v in stats.values()), max(sum(v[3] for v in stats.values()), 1.0))
            cache = {}
            for task, (n_c, means, within, dof) in stats.items():
                if pooled:
                    whiten, half_logdet, log_prior = shared, 0.0, np.log(n_c / n_all)
                else:
                    (whiten, half_logdet), log_prior = whitening(within, dof), np.log(n_c / n_c.sum())
                cache[task] = {
                    "means": torch.as_tensor(means, dtype=torch.float64, device=self.device),
                    "log_prior": torch.as_tensor(log_prior, dtype=torch.float64, device=self.device),
                    "whiten": torch.as_tensor(whiten, dtype=torch.float64, device=self.device),
                    "half_logdet": half_logdet,
                }
            self._cache = cache
        return self._cache

    # -------------------------------------------------------------------- state

    def to_state(self) -> dict[str, np.ndarray]:
        s = {"router/tasks": np.array(list(self.stats), dtype=str)}
        for t, r in enumerate(self.stats.values()):
            for key in _STAT_KEYS:
                s[f"router/{t}/{key}"] = r[key].copy()
        return s

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.stats = {str(name): {key: np.asarray(state[f"router/{t}/{key}"], dtype=np.float64) for key in _STAT_KEYS}
                      for t, name in enumerate(state["router/tasks"].tolist())}
        self._cache = None


def strongest_gate(forgets: list[dict], feats: list[torch.Tensor], route: dict[str, torch.Tensor] | None,
                   mode: str) -> np.ndarray:
    """w*(x): the strongest forget gate. Each is its detector's weight, combined with the router's
    posterior r of the forgotten task (Gaussian router): "product" w * r, "odds" sigmoid(logit w +
    logit r), "off" w alone."""
    F = [f.cpu().numpy() for f in feats]
    gates = []
    for f in forgets:
        if mode == "off" or route is None or f["task"] not in route:
            gates.append(f["detector"].weight(F))
            continue
        r = route[f["task"]].cpu().numpy().astype(np.float64)
        if mode == "product":
            gates.append(f["detector"].weight(F) * r)
        else:
            r = np.clip(r, 1e-7, 1 - 1e-7)
            gates.append(_sigmoid(f["detector"].logit(F) + np.log(r) - np.log1p(-r)))
    return np.max(np.stack(gates), axis=0)
