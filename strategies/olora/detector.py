"""The forget detector of one unlearning adapter (O3's OOD detector, small-MLP form).

Per hidden layer of the frozen base it scores an input by
- the Mahalanobis distance of its features to the forget set (Ledoit-Wolf
  shrunk covariance), and, in "combined" mode,
- the largest cosine similarity to a stored bank of the forget set's features.

Each component is z-scored with cross-fitted forget-train scores (a sample is
never scored against itself), the z-scores are averaged, and the average is
calibrated to a gate weight ``w = sigmoid((s - tau) / T)`` with ``tau`` the
``q`` quantile of the cross-fitted forget-train scores and ``T`` chosen so
that ``w = 0.95`` at the ``q_upper`` quantile. No retained data is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_EPS = 1e-12


def ledoit_wolf(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and Ledoit-Wolf shrunk covariance of the rows of ``X`` (float64)."""
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    mean = X.mean(axis=0)
    Xc = X - mean
    S = Xc.T @ Xc / n
    m = np.trace(S) / d
    d2 = (np.sum(S * S) - 2 * m * np.trace(S) + m * m * d) / d
    sq_norms = np.sum(Xc * Xc, axis=1)
    quad = np.einsum("ij,jk,ik->i", Xc, S, Xc)
    b2_bar = float(np.sum(sq_norms**2 - 2 * quad + np.sum(S * S))) / (n * n * d)
    shrink = 1.0 if d2 <= _EPS else min(b2_bar, d2) / d2
    cov = (1 - shrink) * S
    cov[np.diag_indices(d)] += shrink * m + _EPS
    return mean, cov


def precision_of(cov: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(cov)
    vals = np.maximum(vals, max(float(vals.max()), _EPS) * 1e-10)
    return (vecs / vals) @ vecs.T


def _normalise(F: np.ndarray) -> np.ndarray:
    F = np.asarray(F, dtype=np.float32)
    return F / np.maximum(np.linalg.norm(F, axis=1, keepdims=True), _EPS)


@dataclass
class Detector:
    means: list[np.ndarray]
    precisions: list[np.ndarray]
    banks: list[np.ndarray] | None  # unit-norm forget features per layer; None in "mahalanobis" mode
    z_mean: np.ndarray
    z_std: np.ndarray
    tau: float
    temperature: float

    @property
    def mode(self) -> str:
        return "mahalanobis" if self.banks is None else "combined"

    def components(self, feats: list[np.ndarray]) -> np.ndarray:
        return _components(feats, self.means, self.precisions, self.banks)

    def score(self, feats: list[np.ndarray]) -> np.ndarray:
        return np.mean((self.components(feats) - self.z_mean) / self.z_std, axis=1)

    def logit(self, feats: list[np.ndarray]) -> np.ndarray:
        """The gate weight's log-odds, ``(s - tau) / T``."""
        return (self.score(feats) - self.tau) / self.temperature

    def weight(self, feats: list[np.ndarray]) -> np.ndarray:
        return _sigmoid(self.logit(feats))

    # ---------------------------------------------------------------- storage

    def to_state(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}z_mean": self.z_mean, f"{prefix}z_std": self.z_std,
               f"{prefix}calibration": np.array([self.tau, self.temperature])}
        for i, (m, p) in enumerate(zip(self.means, self.precisions)):
            out[f"{prefix}mean{i}"] = m
            out[f"{prefix}precision{i}"] = p
            if self.banks is not None:
                out[f"{prefix}bank{i}"] = self.banks[i]
        return out

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], prefix: str, n_layers: int) -> Detector:
        banks = None
        if f"{prefix}bank0" in state:
            banks = [np.asarray(state[f"{prefix}bank{i}"], dtype=np.float32) for i in range(n_layers)]
        tau, temperature = (float(v) for v in state[f"{prefix}calibration"])
        return cls(
            means=[np.asarray(state[f"{prefix}mean{i}"], dtype=np.float64) for i in range(n_layers)],
            precisions=[np.asarray(state[f"{prefix}precision{i}"], dtype=np.float64) for i in range(n_layers)],
            banks=banks,
            z_mean=np.asarray(state[f"{prefix}z_mean"], dtype=np.float64),
            z_std=np.asarray(state[f"{prefix}z_std"], dtype=np.float64),
            tau=tau,
            temperature=temperature,
        )

    def n_bank_rows(self) -> int:
        return 0 if self.banks is None else int(self.banks[0].shape[0])


def fit_detector(feats: list[np.ndarray], *, mode: str, quantile: float, upper_quantile: float, folds: int,
                 rng: np.random.Generator) -> Detector:
    """Fit on the forget set's per-layer features (one array per layer, same rows)."""
    n = feats[0].shape[0]
    if n < 4:
        raise ValueError(f"the forget detector needs at least 4 forget samples, got {n}")
    k = min(folds, n // 2)
    fold_of = rng.permutation(n) % k
    crossfit = None
    for f in range(k):
        held, rest = fold_of == f, fold_of != f
        fitted = _fit_parts([F[rest] for F in feats], mode)
        comp = _components([F[held] for F in feats], *fitted)
        if crossfit is None:
            crossfit = np.empty((n, comp.shape[1]))
        crossfit[held] = comp
    z_mean = crossfit.mean(axis=0)
    z_std = np.maximum(crossfit.std(axis=0), 1e-9)
    combined = np.mean((crossfit - z_mean) / z_std, axis=1)
    tau = float(np.quantile(combined, quantile))
    upper = float(np.quantile(combined, upper_quantile))
    temperature = max((upper - tau) / math.log(19.0), 1e-6)
    means, precisions, banks = _fit_parts(feats, mode)
    return Detector(means, precisions, banks, z_mean, z_std, tau, temperature)


def _fit_parts(feats: list[np.ndarray], mode: str):
    means, precisions = [], []
    for F in feats:
        mean, cov = ledoit_wolf(F)
        means.append(mean)
        precisions.append(precision_of(cov))
    banks = None if mode == "mahalanobis" else [_normalise(F) for F in feats]
    return means, precisions, banks


def _components(feats, means, precisions, banks) -> np.ndarray:
    cols = []
    for i, F in enumerate(feats):
        D = np.asarray(F, dtype=np.float64) - means[i]
        cols.append(-np.einsum("ij,jk,ik->i", D, precisions[i], D))
        if banks is not None:
            cols.append((_normalise(F) @ banks[i].T).max(axis=1).astype(np.float64))
    return np.stack(cols, axis=1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.clip(x, -60, 60)))


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Area under the ROC curve of scores (ties count half)."""
    pos, neg = np.asarray(positive, dtype=np.float64), np.asarray(negative, dtype=np.float64)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    allv = np.concatenate([pos, neg])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(len(allv))
    sorted_v = allv[order]
    i = 0
    while i < len(sorted_v):
        j = i
        while j + 1 < len(sorted_v) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i:j + 1]] = 0.5 * (i + j) + 1
        i = j + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))
