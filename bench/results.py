"""The comparative bench's numbers per method (``BenchRow``) and their tables: markdown and rich."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bench.baselines import BASELINES
from bench.runners import REFERENCE, Run
from lifecycle import metrics, mia
from lifecycle import strategies as registry

FORGET_NEEDS_TEXT = {"nothing": "nothing", "forget data": "the forgotten samples",
                     "ids only": "the forgotten samples' ids"}
RETRAIN_NEEDS = "all retained data"


@dataclass(frozen=True)
class BenchRow:
    method: str
    family: str  # "strategy", "avalanche" or "reference"
    exactness: str
    task_id: bool  # whether inference was given the task id
    ra: float
    fa: float
    spill: float
    relapse: float  # worst one-sided relapse since a forget, over the tasks forgotten at the end
    relapse_paper: float  # mean |acc_end - acc_at_forget|
    mia_auc: float
    mia_gap: float
    mia_score: str | None
    learn_s: float
    forget_s: float
    forget_needs: str
    seeds: int
    chance: float  # accuracy of guessing, mean over the tasks (higher when inference is told the task)
    std: dict[str, float] = field(default_factory=dict)  # across seeds, for the numeric columns


_NUMERIC = ("ra", "fa", "spill", "relapse", "relapse_paper", "mia_auc", "mia_gap", "learn_s", "forget_s")


def run_numbers(run: Run) -> dict[str, float]:
    peak = metrics.relapse_one_sided(run.acc, run.forgotten, run.chance, peak=True)
    paper = metrics.relapse_paper(run.acc, run.forgotten)
    return {
        "ra": metrics.retained_accuracy(run.acc, run.retained),
        "fa": metrics.forget_accuracy(run.acc, run.forgotten),
        "spill": metrics.spill(run.acc, run.retained, run.forget_steps),
        "relapse": float(np.nanmax(peak)) if (~np.isnan(peak)).any() else math.nan,
        "relapse_paper": float(np.nanmean(paper)) if (~np.isnan(paper)).any() else math.nan,
        "mia_auc": run.mia_auc,
        "mia_gap": run.mia_gap,
        "learn_s": float(np.mean(run.learn_seconds)) if run.learn_seconds else math.nan,
        "forget_s": float(np.mean(run.forget_seconds)) if run.forget_seconds else math.nan,
    }


def row(method: str, runs: list[Run]) -> BenchRow:
    """One method's row: the mean over its runs (seeds) and, for more than one, the spread."""
    numbers = [run_numbers(r) for r in runs]
    mean = {k: _nanmean([n[k] for n in numbers]) for k in _NUMERIC}
    std = {k: _nanstd([n[k] for n in numbers]) for k in _NUMERIC} if len(runs) > 1 else {}
    chance = _nanmean([_nanmean(r.chance.tolist()) for r in runs])
    if method == REFERENCE or method in BASELINES:
        family = "reference" if method == REFERENCE else "avalanche"
        exactness, task_id, needs = "exact (retrain)", False, RETRAIN_NEEDS
    else:
        tags = registry.get(method).tags
        family, exactness, task_id, needs = "strategy", tags.exactness, tags.needs_task_id, \
            FORGET_NEEDS_TEXT[tags.forget_needs]
    return BenchRow(method=method, family=family, exactness=exactness, task_id=task_id, **mean,
                    mia_score=runs[0].mia_score, forget_needs=needs, seeds=len(runs), chance=chance, std=std)


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def _nanstd(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.std(kept)) if len(kept) > 1 else math.nan


_COLUMNS = [
    ("method", "method"), ("family", "family"), ("exactness", "exactness"), ("task id", "task_id"),
    ("RA", "ra"), ("FA", "fa"), ("spill", "spill"), ("relapse", "relapse"), ("relapse (paper)", "relapse_paper"),
    ("MIA AUC", "mia_auc"), ("MIA gap", "mia_gap"), ("learn s", "learn_s"), ("forget s", "forget_s"),
    ("data at forget", "forget_needs"),
]


def _cell(r: BenchRow, key: str) -> str:
    value = getattr(r, key)
    if key == "task_id":
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if value is None or math.isnan(value):
        return "—"
    text = f"{value:.3f}"
    spread = r.std.get(key)
    if spread is not None and not math.isnan(spread):
        text += f" ± {spread:.3f}"
    if key == "mia_auc" and r.mia_score == mia.CORRECT:
        text += " (0/1)"
    return text


def to_markdown(rows: Sequence[BenchRow], stream: str, sequence: str, seeds: int, quick: bool) -> str:
    lines = [
        f"Stream `{stream}`, sequence `{sequence}`, {seeds} seed(s){' (quick settings)' if quick else ''}.",
        "",
        "| " + " | ".join(title for title, _ in _COLUMNS) + " |",
        "|" + "|".join("---" for _ in _COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(_cell(r, key) for _, key in _COLUMNS) + " |" for r in rows]
    lines += [
        "",
        "RA/FA: mean latest probe accuracy over retained/forgotten tasks. Spill: mean over forgets of the summed "
        "|Δacc| of tasks retained across it. Relapse: worst max(0, acc − max(acc at forget, chance)) since a "
        "forget; paper: mean |acc end − acc at forget|. MIA: AUC of a threshold attack telling the forgotten "
        "tasks' training samples from their unseen probe samples (margin scores; (0/1): correctness, for "
        "strategies without scores); gap: |AUC − AUC of the retrain reference| under the same attack. "
        "Times: seconds of the strategy step per request (for baselines and the reference, the training they "
        "did for that request, retraining the retained data at a forget). Task id: whether inference was told "
        "the task and chose among its classes only (task-incremental accuracy, chance 1/classes of the task) "
        "rather than among all 10.",
    ]
    return "\n".join(lines) + "\n"


def rich_table(rows: Sequence[BenchRow], stream: str, sequence: str):
    from rich.table import Table

    table = Table(title=f"{stream}: {sequence}")
    for title, key in _COLUMNS:
        table.add_column(title, justify="left" if key in ("method", "family", "exactness", "forget_needs") else "right")
    for r in rows:
        table.add_row(*(_cell(r, key) for _, key in _COLUMNS))
    return table
