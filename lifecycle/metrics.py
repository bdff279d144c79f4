"""Continual-learning and unlearning metrics as pure functions of an accuracy matrix.

``acc[i, k]`` is the accuracy on task ``k``'s probe set after step ``i`` (NaN
while the task has not been learned yet). Boolean masks of the same shape say
what each task was meant to be at that step:

- ``retained[i, k]``: the task should be known after step ``i``;
- ``forgotten[i, k]``: the task was deliberately forgotten and not relearned;
- ``learned[i, k]``: step ``i`` was a learn request of task ``k``.

Learning metrics (average accuracy, forgetting, BWT) look at tasks retained at
the last step only, so a successful forget never shows up as forgetting.
Forgetting follows Avalanche (``avalanche.evaluation.functional.forgetting``,
``forgetting_to_bwt``): accuracy right after the task was last trained minus
the latest accuracy, not Chaudhry's best-earlier-accuracy variant.
A sample or subject forget leaves its task retained, so what it costs that
task counts as forgetting (and as spill): no probe set says which part of the
drop was meant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lifecycle import relapse as relapse_check
from lifecycle.store.records import RequestKind, Role

if TYPE_CHECKING:
    from lifecycle.api import Lifecycle, Step


@dataclass(frozen=True)
class AccuracyMatrix:
    """A model's history as an accuracy matrix plus the role masks."""

    tasks: tuple[str, ...]
    versions: tuple[int, ...]
    request_ids: tuple[str, ...]  # the request that produced each step's version
    kinds: tuple[RequestKind, ...]  # learn or forget, per step
    targets: tuple[str | None, ...]  # the task a step named; None for a sample or subject forget
    acc: np.ndarray  # (steps, tasks) float, NaN before a task is learned
    retained: np.ndarray  # (steps, tasks) bool
    forgotten: np.ndarray  # (steps, tasks) bool
    learned: np.ndarray  # (steps, tasks) bool
    chance: np.ndarray  # (tasks,) accuracy of guessing, as the worker recorded it


# ---- learning metrics, over tasks retained at the last step --------------------


def learned_at(learned: np.ndarray) -> np.ndarray:
    """Per task, the last step that trained it (-1 if none): Avalanche's boundary index."""
    learned = np.asarray(learned, dtype=bool)
    out = np.full(learned.shape[1], -1, dtype=np.int64)
    for k in range(learned.shape[1]):
        rows = np.flatnonzero(learned[:, k])
        if len(rows):
            out[k] = rows[-1]
    return out


def average_accuracy(acc: np.ndarray, retained: np.ndarray) -> float:
    """ACC: unweighted mean of the latest accuracy over tasks retained at the last step.

    Unweighted per task, as ``mean_k R[T, k]``; Avalanche's StreamAccuracy
    weights by sample count instead, which lets a large task hide a small one.
    """
    acc, retained = np.asarray(acc, dtype=float), np.asarray(retained, dtype=bool)
    if acc.size == 0 or not retained[-1].any():
        return float("nan")
    return float(np.mean(acc[-1, retained[-1]]))


def forgetting(acc: np.ndarray, retained: np.ndarray, learned: np.ndarray) -> np.ndarray:
    """Per task: accuracy right after it was last trained minus its latest accuracy.

    NaN for a task that is not retained at the last step (forgotten on
    purpose, or never learned) and for one trained by the last step itself,
    which Avalanche does not report either.
    """
    acc, retained = np.asarray(acc, dtype=float), np.asarray(retained, dtype=bool)
    out = np.full(acc.shape[1], np.nan)
    if acc.size == 0:
        return out
    boundary = learned_at(learned)
    last = acc.shape[0] - 1
    counted = np.flatnonzero(retained[-1] & (boundary >= 0) & (boundary < last))
    # Avalanche's definition, written out so a report needs neither Avalanche nor torch
    out[counted] = acc[boundary[counted], counted] - acc[last, counted]
    return out


def stream_forgetting(acc: np.ndarray, retained: np.ndarray, learned: np.ndarray) -> float:
    """Avalanche's StreamForgetting: the mean of ``forgetting`` over the tasks it counts."""
    per_task = forgetting(acc, retained, learned)
    return float(np.mean(per_task[~np.isnan(per_task)])) if (~np.isnan(per_task)).any() else float("nan")


def bwt(acc: np.ndarray, retained: np.ndarray, learned: np.ndarray) -> float:
    """Backward transfer: the negative of stream forgetting (Avalanche's StreamBWT)."""
    return -stream_forgetting(acc, retained, learned)


# ---- unlearning metrics ------------------------------------------------------------


def retained_accuracy(acc: np.ndarray, retained: np.ndarray) -> float:
    """RA: mean latest accuracy over retained tasks (the same number as ACC)."""
    return average_accuracy(acc, retained)


def forget_accuracy(acc: np.ndarray, forgotten: np.ndarray) -> float:
    """FA: mean latest accuracy over tasks forgotten at the last step."""
    acc, forgotten = np.asarray(acc, dtype=float), np.asarray(forgotten, dtype=bool)
    if acc.size == 0 or not forgotten[-1].any():
        return float("nan")
    return float(np.mean(acc[-1, forgotten[-1]]))


def forgotten_at(forgotten: np.ndarray) -> np.ndarray:
    """Per task, the step that began its current forgotten stretch (-1 if not forgotten at the end)."""
    forgotten = np.asarray(forgotten, dtype=bool)
    out = np.full(forgotten.shape[1], -1, dtype=np.int64)
    if forgotten.size == 0:
        return out
    for k in np.flatnonzero(forgotten[-1]):
        i = forgotten.shape[0] - 1
        while i > 0 and forgotten[i - 1, k]:
            i -= 1
        out[k] = i
    return out


def forget_spill(acc: np.ndarray, retained: np.ndarray, step: int) -> float:
    """UnCLe's spill of the forget at ``step``: summed |delta acc| over tasks retained across it."""
    acc, retained = np.asarray(acc, dtype=float), np.asarray(retained, dtype=bool)
    if step <= 0:
        return 0.0
    across = np.flatnonzero(retained[step - 1] & retained[step])
    before = {int(k): float(acc[step - 1, k]) for k in across}
    after = {int(k): float(acc[step, k]) for k in across}
    return relapse_check.spill(before, after)


def spill(acc: np.ndarray, retained: np.ndarray, forget_steps: Sequence[int]) -> float:
    """Mean of ``forget_spill`` over the given forget steps (NaN if there are none)."""
    values = [forget_spill(acc, retained, s) for s in forget_steps]
    return float(np.mean(values)) if values else float("nan")


def relapse_paper(acc: np.ndarray, forgotten: np.ndarray) -> np.ndarray:
    """Per task forgotten at the end: UnCLe's |acc_end - acc_at_forget|; NaN for the others."""
    acc = np.asarray(acc, dtype=float)
    out = np.full(acc.shape[1], np.nan)
    for k, s in enumerate(forgotten_at(forgotten)):
        if s >= 0:
            out[k] = relapse_check.end_of_run_relapse(acc[-1, k], acc[s, k])
    return out


def relapse_one_sided(acc: np.ndarray, forgotten: np.ndarray, chance: np.ndarray, peak: bool = False) -> np.ndarray:
    """Per task forgotten at the end: ``max(0, acc - max(acc_at_forget, chance))``.

    ``peak=False`` takes the latest accuracy; ``peak=True`` the highest since
    the forget, which is what a relapse finding would have caught. NaN for
    tasks not forgotten at the end.
    """
    acc, chance = np.asarray(acc, dtype=float), np.asarray(chance, dtype=float)
    out = np.full(acc.shape[1], np.nan)
    for k, s in enumerate(forgotten_at(forgotten)):
        if s >= 0:
            now = np.nanmax(acc[s:, k]) if peak else acc[-1, k]
            out[k] = relapse_check.relapse(float(now), float(acc[s, k]), float(chance[k]))
    return out


# ---- building the matrix from a ledger --------------------------------------------


def from_history(steps: Sequence[Step]) -> AccuracyMatrix:
    """The accuracy matrix of a model's applied steps (``Lifecycle.history``), in version order.

    Tasks are columns in the order they were first evaluated.
    """
    applied = sorted((s for s in steps if s.version is not None and s.evaluations), key=lambda s: s.version)
    tasks: list[str] = []
    for step in applied:
        for ev in step.evaluations:
            if ev.task not in tasks:
                tasks.append(ev.task)
    column = {t: k for k, t in enumerate(tasks)}
    shape = (len(applied), len(tasks))
    acc = np.full(shape, np.nan)
    retained = np.zeros(shape, dtype=bool)
    forgotten = np.zeros(shape, dtype=bool)
    learned = np.zeros(shape, dtype=bool)
    chance = np.full(len(tasks), np.nan)
    for i, step in enumerate(applied):
        for ev in step.evaluations:
            k = column[ev.task]
            acc[i, k] = ev.accuracy
            retained[i, k] = ev.role == Role.RETAINED
            forgotten[i, k] = ev.role == Role.FORGOTTEN
            chance[k] = ev.chance
        target = step.request.target.get("task")
        if step.request.kind == RequestKind.LEARN and target in column:
            learned[i, column[target]] = True
    return AccuracyMatrix(
        tasks=tuple(tasks),
        versions=tuple(s.version for s in applied),
        request_ids=tuple(s.request.id for s in applied),
        kinds=tuple(s.request.kind for s in applied),
        targets=tuple(s.request.target.get("task") for s in applied),
        acc=acc,
        retained=retained,
        forgotten=forgotten,
        learned=learned,
        chance=chance,
    )


def model_matrix(lc: Lifecycle, model: str) -> AccuracyMatrix:
    return from_history(lc.history(model))
