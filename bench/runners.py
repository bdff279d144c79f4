"""The comparative bench's runners: one method through one sequence on one seed, as a ``Run``.

``run_strategy`` drives a registered strategy through the real ledger and
worker; ``run_reference`` retrains from scratch after every request. Both,
and the Avalanche baselines (``bench.baselines``), end in the same
measurements: the accuracy matrix, seconds per request and the
membership-inference attack on the tasks forgotten at the end.
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.reference import N_CLASSES, MlpSettings, Retrain, fit_jointly
from bench.sequence import Op, role_masks
from lifecycle import metrics, mia
from lifecycle import strategies as registry
from lifecycle.datasets import StreamTask

REFERENCE = "retrain"

# step(method, i): the method has done step i of the sequence (for the progress bar)
Step = Callable[[str, int], None]


@dataclass(frozen=True)
class Run:
    """One method on one seed: its accuracy matrix and what it cost."""

    method: str
    seed: int
    tasks: tuple[str, ...]
    acc: np.ndarray
    retained: np.ndarray
    forgotten: np.ndarray
    chance: np.ndarray
    forget_steps: tuple[int, ...]
    learn_seconds: tuple[float, ...]
    forget_seconds: tuple[float, ...]
    mia_auc: float  # mean over tasks forgotten at the end; NaN when none
    mia_gap: float
    mia_score: str | None


class TorchClassifier:
    """A torch classifier behind the strategy verbs the metrics use (predict, scores).

    Given ``task``, it answers among that task's classes only, as a
    task-incremental strategy does; without, among all classes.
    """

    def __init__(self, model, task_classes: dict[str, Sequence[int]]) -> None:
        self.model = model
        self.task_classes = task_classes

    def scores(self, X: np.ndarray, task: str | None = None) -> np.ndarray:
        import torch

        self.model.eval()
        with torch.no_grad():
            out = self.model(torch.as_tensor(np.asarray(X, dtype=np.float32))).double().numpy()
        if task is not None:
            hidden = np.ones(out.shape[1], dtype=bool)
            hidden[list(self.task_classes[task])] = False
            out[:, hidden] = -np.inf
        return out

    def predict(self, X: np.ndarray, task: str | None = None) -> np.ndarray:
        return self.scores(X, task).argmax(axis=1)


def classifier(model, tasks: list[StreamTask]) -> TorchClassifier:
    return TorchClassifier(model, {t.name: sorted(set(t.y.tolist()) | set(t.y_probe.tolist())) for t in tasks})


def frozen_copy(model):
    return copy.deepcopy(model).eval()


def n_features(tasks: list[StreamTask]) -> int:
    return tasks[0].X.shape[1]


# ---- registered strategies, through the ledger -------------------------------------------------


def run_strategy(name: str, config: dict, tasks: list[StreamTask], ops: Sequence[Op], seed: int,
                 reference: TorchClassifier, step: Step) -> Run:
    import lifecycle
    from lifecycle.loading import load_strategy

    spec = registry.get(name)
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        lc = lifecycle.connect(f"sqlite:///{Path(tmp) / 'ledger.db'}")
        lc.create_model("bench", strategy=name, n_features=n_features(tasks), n_classes=N_CLASSES, config=config)
        for i, op in enumerate(ops):
            t = tasks[op.task]
            if op.learns:
                # fresh ids for every learn: a forgotten task's old ids stay tombstoned
                ids = [f"{t.name}/{i}/{j}" for j in range(len(t.y))]
                lc.learn("bench", task=t.name, X=t.X, y=t.y, sample_ids=ids, probe=(t.X_probe, t.y_probe))
            else:
                lc.forget("bench", task=t.name)
            for req in lc.drain("bench"):
                if req.status != "applied":
                    raise RuntimeError(f"{name}: step {op} was {req.status}: {req.error}")
            step(name, i)
        matrix = metrics.model_matrix(lc, "bench")
        requests = {r.id: r for r in lc.requests("bench")}
        seconds = [requests[rid].step_seconds for rid in matrix.request_ids]
        m = lc.model("bench")
        model = load_strategy(lc.vault, m, lc.ledger.latest_version(m.id))
        by_name = {t.name: t for t in tasks}
        gone = [by_name[t] for t in forgotten_now(matrix.tasks, matrix.forgotten)]
        auc, gap, score = attack(model, reference, gone, spec.tags.needs_task_id)
        lc.ledger.engine.dispose()  # before its folder goes
    return Run(
        method=name, seed=seed, tasks=matrix.tasks, acc=matrix.acc, retained=matrix.retained,
        forgotten=matrix.forgotten, chance=matrix.chance,
        forget_steps=tuple(i for i, k in enumerate(matrix.kinds) if k == "forget"),
        learn_seconds=tuple(s for s, k in zip(seconds, matrix.kinds) if k == "learn"),
        forget_seconds=tuple(s for s, k in zip(seconds, matrix.kinds) if k == "forget"),
        mia_auc=auc, mia_gap=gap, mia_score=score,
    )


@dataclass(frozen=True)
class StrategyRun:
    """One ``run_strategy`` as a job an executor may run in another process (``run_strategy_job``)."""

    name: str
    config: dict
    tasks: tuple[StreamTask, ...]
    ops: tuple[Op, ...]
    seed: int
    reference: TorchClassifier


def run_strategy_job(job: StrategyRun) -> Run:
    """``run_strategy`` without a progress callback: what a Ray task runs."""
    return run_strategy(job.name, job.config, list(job.tasks), job.ops, job.seed, job.reference, lambda *_: None)


# ---- the retrain reference ---------------------------------------------------------------------


def run_reference(tasks: list[StreamTask], ops: Sequence[Op], seed: int, settings: MlpSettings,
                  step: Step) -> tuple[TorchClassifier, Run]:
    """The reference's run, and its final model (what the other methods' attacks are compared with)."""
    retrain = Retrain(lambda parts: fit_jointly(parts, n_features(tasks), settings.hidden, settings.epochs, seed,
                                                lr=settings.lr, batch_size=settings.batch_size))
    models, seconds = [], []
    for i, op in enumerate(ops):
        t = tasks[op.task]
        started = time.perf_counter()
        models.append(retrain.learn(op.task, t.X, t.y) if op.learns else retrain.forget(op.task))
        seconds.append(time.perf_counter() - started)
        step(REFERENCE, i)
    run = classifier_run(REFERENCE, tasks, ops, seed, [classifier(m, tasks) for m in models], seconds, None)
    return classifier(models[-1], tasks), run


def classifier_run(method: str, tasks: list[StreamTask], ops: Sequence[Op], seed: int,
                   classifiers: Sequence[TorchClassifier], seconds: Sequence[float],
                   reference: TorchClassifier | None) -> Run:
    """The run of a method evaluated in process: ``classifiers[i]`` is its model after step i.

    Without ``reference`` the method is the reference, and its gap is zero by definition.
    """
    columns, retained, forgotten, _ = role_masks(ops)
    acc = np.full(retained.shape, np.nan)
    for i, model in enumerate(classifiers):
        for k, task in enumerate(columns):
            if retained[i, k] or forgotten[i, k]:
                t = tasks[task]
                acc[i, k] = float(np.mean(model.predict(t.X_probe) == t.y_probe))
    names = tuple(tasks[k].name for k in columns)
    gone = [tasks[columns[k]] for k in np.flatnonzero(forgotten[-1])]
    if reference is None:
        auc, _, score = attack(classifiers[-1], classifiers[-1], gone, False)
        gap = 0.0 if gone else math.nan
    else:
        auc, gap, score = attack(classifiers[-1], reference, gone, False)
    return Run(
        method=method, seed=seed, tasks=names, acc=acc, retained=retained, forgotten=forgotten,
        chance=np.full(len(columns), 1.0 / N_CLASSES),
        forget_steps=tuple(i for i, op in enumerate(ops) if not op.learns),
        learn_seconds=tuple(s for s, op in zip(seconds, ops) if op.learns),
        forget_seconds=tuple(s for s, op in zip(seconds, ops) if not op.learns),
        mia_auc=auc, mia_gap=gap, mia_score=score,
    )


# ---- membership inference ---------------------------------------------------------------------


def forgotten_now(task_names: Sequence[str], forgotten: np.ndarray) -> list[str]:
    return [t for t, gone in zip(task_names, forgotten[-1]) if gone] if forgotten.size else []


def attack(model, reference, gone: list[StreamTask], needs_task_id: bool) -> tuple[float, float, str | None]:
    """Mean AUC over the forgotten tasks (training samples against their unseen probe
    samples), the mean gap to the reference under the same attack, and the score used."""
    if not gone:
        return math.nan, math.nan, None
    aucs, gaps, used = [], [], None
    for t in gone:
        task = t.name if needs_task_id else None
        result = mia.membership_auc(model, (t.X, t.y), (t.X_probe, t.y_probe), task=task, kind=None)
        ref = mia.membership_auc(reference, (t.X, t.y), (t.X_probe, t.y_probe), task=task, kind=result.score)
        aucs.append(result.auc)
        gaps.append(mia.auc_gap(result.auc, ref.auc))
        used = result.score
    return float(np.mean(aucs)), float(np.mean(gaps)), used
