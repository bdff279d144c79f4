"""Task relapse: a forgotten task whose accuracy comes back.

``relapse(f, k) = max(0, acc_k(f) - max(acc_s(f), chance(f)))`` where ``s``
is the step that forgot ``f``. One-sided on purpose: a task pushed below
chance that drifts back up to chance has not relapsed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lifecycle.store.records import Role


def relapse(acc_now: float, acc_at_forget: float, chance: float) -> float:
    return max(0.0, acc_now - max(acc_at_forget, chance))


@dataclass(frozen=True)
class Forgotten:
    """A forgotten task as the check sees it after a step."""

    task: str
    forgotten_at_version: int
    acc_at_forget: float
    peak_since_forget: float
    accuracy: float
    chance: float


def findings(tasks: Sequence[Forgotten], threshold: float) -> list[dict]:
    """One finding per forgotten task whose relapse exceeds ``threshold``."""
    out = []
    for t in tasks:
        value = relapse(t.accuracy, t.acc_at_forget, t.chance)
        if value > threshold:
            out.append(_finding(t, value, threshold))
    return out


def _finding(t: Forgotten, value: float, threshold: float) -> dict:
    return {
        "task": t.task,
        "forgotten_at_version": t.forgotten_at_version,
        "acc_at_forget": t.acc_at_forget,
        "accuracy": t.accuracy,
        "chance": t.chance,
        "relapse": value,
        "threshold": threshold,
        "peak_since_forget": max(t.peak_since_forget, t.accuracy),
    }


def spill(before: Mapping[str, float], after: Mapping[str, float]) -> float:
    """UnCLe's spill of one forget: sum of |delta acc| over tasks retained across it."""
    return sum(abs(after[t] - before[t]) for t in before if t in after)


def end_of_run_relapse(acc_end: float, acc_at_forget: float) -> float:
    """UnCLe's paper number for one forgotten task: |acc_end - acc_at_forget|."""
    return abs(acc_end - acc_at_forget)


def gate_report(gates: Mapping[str, tuple[str, float]], false_activation_target: float | None = None) -> dict:
    """Gate figures of a gated (suppression) strategy after a step.

    ``gates`` maps each evaluated task to (role, share of its probes with gate
    weight >= 0.5): recall for forgotten tasks, false activations for retained ones.
    With ``false_activation_target`` (the model's ``max_false_activation``) the
    report also names the retained tasks whose false activations exceed it.
    """
    recall = {t: share for t, (role, share) in gates.items() if role == Role.FORGOTTEN}
    false_act = {t: share for t, (role, share) in gates.items() if role != Role.FORGOTTEN}
    report = {
        "recall": recall,
        "false_activation": false_act,
        "min_recall": min(recall.values()) if recall else None,
        "max_false_activation": max(false_act.values()) if false_act else None,
    }
    if false_activation_target is not None:
        report["false_activation_target"] = false_activation_target
        report["false_activation_over_target"] = sorted(t for t, share in false_act.items()
                                                        if share > false_activation_target)
    return report


def gate_misses(tasks: Sequence[Forgotten], gates: Mapping[str, tuple[str, float]], floor: float,
                already: set[str]) -> list[dict]:
    """A gate miss is a gated strategy's relapse: the gate opens on fewer than ``floor`` of a
    forgotten task's probes. Recorded as a finding whose ``relapse`` is the miss rate
    (1 - recall) and whose ``threshold`` is 1 - floor; tasks in ``already`` have a finding."""
    out = []
    for t in tasks:
        if t.task in already or t.task not in gates:
            continue
        recall = gates[t.task][1]
        if recall < floor:
            out.append(_finding(t, 1.0 - recall, 1.0 - floor))
    return out


@dataclass(frozen=True)
class Retained:
    """A retained task as the gate check sees it after a step."""

    task: str
    accuracy: float
    chance: float


def gate_false_activations(tasks: Sequence[Retained], gates: Mapping[str, tuple[str, float]], target: float,
                           gate_since: int | None) -> list[dict]:
    """A gate that fires on retained inputs suppresses what the model keeps: one finding per
    retained task whose probes open the gate (weight >= 0.5) more often than ``target``
    (the model's ``max_false_activation``).

    The finding has the shape of every other (a relapse finding's row): ``task`` is the
    retained task, ``relapse`` its false-activation rate and ``threshold`` the target;
    ``forgotten_at_version`` is ``gate_since``, the version of the latest forget whose gate
    is in force, and the accuracy fields hold the task's accuracy now. Nothing is found
    while no forget has installed a gate (``gate_since`` None).
    """
    if gate_since is None:
        return []
    out = []
    for t in tasks:
        if t.task not in gates:
            continue
        share = gates[t.task][1]
        if share > target:
            out.append(_finding(Forgotten(t.task, gate_since, t.accuracy, t.accuracy, t.accuracy, t.chance),
                                share, target))
    return out
