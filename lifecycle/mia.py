"""Membership inference against forgotten samples.

A threshold attack ranks samples by how sure the model is of their true
label. The attack's AUC separates the forgotten (member) samples from unseen
samples of the same classes. Because the AUC is rank-based, no threshold has
to be chosen.

We report the raw AUC, not ``max(auc, 1 - auc)``: 0.5 means nothing leaks, a
value above it means the model still recognises what it was told to forget,
and one below it means the forgotten samples now stand out by being
*under*-confident (an over-unlearning, "Streisand" leak). Both directions
leak, so the number to judge is the gap to a retrain-from-scratch reference,
``|AUC - AUC_ref|``, computed with the same attack on the same samples.

Scores come from the optional ``scores(X, task=None) -> (n, n_classes)`` verb
of a strategy tagged ``scores`` (logits, or any scores whose argmax is the
prediction). A strategy without the tag is attacked with its correctness
(1 if right, 0 if wrong), a weaker attack that still catches a model that
gets its forgotten training samples right more often than unseen ones.
Models that are not strategies (a retrain-from-scratch reference) have no
tags: they are scored when their class defines ``scores``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lifecycle.strategies.base import Strategy

MARGIN, CORRECT = "margin", "correct"


@dataclass(frozen=True)
class AttackResult:
    auc: float  # raw: 0.5 is no signal, below 0.5 is a leak too
    score: str  # MARGIN or CORRECT: which per-sample score the attack ranked
    n_members: int
    n_nonmembers: int


def offers_scores(model: Any) -> bool:
    """Whether ``model`` has per-class scores: a strategy's ``scores`` tag, or for
    a plain classifier (not a Strategy, so without tags) a ``scores`` method."""
    if isinstance(model, Strategy):
        return model.tags.scores
    return callable(getattr(type(model), "scores", None))


def class_scores(strategy: Any, X: np.ndarray, task: str | None = None) -> np.ndarray | None:
    """The strategy's (n, n_classes) scores, or None when it offers none."""
    if not offers_scores(strategy):
        return None
    out = np.asarray(strategy.scores(X, task=task), dtype=np.float64)
    if out.ndim != 2 or out.shape[0] != len(X):
        raise ValueError(f"scores must have shape (n, n_classes) with n={len(X)}, not {out.shape}")
    return out


def margins(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per sample: the true class's score minus the best other class's score.

    Defined for logits and regression outputs alike, where a softmax would
    assume the scores are logits.
    """
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    rows = np.arange(len(y))
    true = scores[rows, y]
    others = scores.copy()
    others[rows, y] = -np.inf
    return true - others.max(axis=1)


def sample_scores(strategy: Any, X: np.ndarray, y: np.ndarray, task: str | None = None,
                  kind: str | None = None) -> tuple[np.ndarray, str]:
    """Per-sample confidence in the true label, and which kind it is.

    ``kind=None`` takes margins when the strategy has scores, else
    correctness; ``kind=CORRECT`` forces correctness so two models can be
    attacked alike.
    """
    if kind not in (None, MARGIN, CORRECT):
        raise ValueError(f"kind must be {MARGIN!r}, {CORRECT!r} or None, not {kind!r}")
    if kind != CORRECT:
        scores = class_scores(strategy, X, task)
        if scores is not None:
            return margins(scores, y), MARGIN
        if kind == MARGIN:
            raise ValueError(f"{type(strategy).__name__} offers no scores(); a margin attack needs them")
    correct = (np.asarray(strategy.predict(X, task=task)) == np.asarray(y)).astype(np.float64)
    return correct, CORRECT


def attack_auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """ROC AUC of "member" for higher scores; ties count half, so constant scores give 0.5."""
    from sklearn.metrics import roc_auc_score

    member_scores, nonmember_scores = np.ravel(member_scores), np.ravel(nonmember_scores)
    if len(member_scores) == 0 or len(nonmember_scores) == 0:
        raise ValueError("the attack needs at least one member and one non-member sample")
    labels = np.r_[np.ones(len(member_scores)), np.zeros(len(nonmember_scores))]
    return float(roc_auc_score(labels, np.r_[member_scores, nonmember_scores]))


def membership_auc(strategy: Any, members: tuple[np.ndarray, np.ndarray], nonmembers: tuple[np.ndarray, np.ndarray],
                   task: str | None = None, kind: str | None = None) -> AttackResult:
    """Attack ``strategy``: forgotten samples ``members`` against unseen ``nonmembers`` of the same classes."""
    m_scores, used = sample_scores(strategy, members[0], members[1], task, kind)
    n_scores, _ = sample_scores(strategy, nonmembers[0], nonmembers[1], task, used)
    return AttackResult(attack_auc(m_scores, n_scores), used, len(m_scores), len(n_scores))


def auc_gap(auc: float, auc_ref: float) -> float:
    """Distance from the retrain reference's AUC; both directions leak."""
    return abs(auc - auc_ref)
