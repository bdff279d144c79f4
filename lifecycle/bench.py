"""The comparative benchmark: one learn/forget sequence through every strategy and beside them
Avalanche baselines and a retrain-from-scratch reference.

Registered strategies run through the real ledger and worker (a temporary
SQLite ledger each), so their times are what a request costs in service.
The Avalanche baselines (Naive, EWC, Replay, LwF) cannot unlearn: they train
on the retained stream only, continuing with each learn and starting over on
the retained tasks, in learn order, at each forget. The reference is a fresh
MLP trained jointly on the retained tasks after every request: what an exact
unlearner should look like. Baselines and reference share one MLP.

Per method: RA and FA (latest accuracy over retained and forgotten tasks),
spill (mean over forgets of summed |delta acc| of the tasks retained across
it), relapse (the worst one-sided relapse since a forget, and UnCLe's
|acc_end - acc_at_forget|), the membership-inference AUC on the forgotten
tasks' training samples against their unseen probe samples and its gap to
the reference's AUC under the same attack, seconds per learn and per forget,
the exactness class and what a forget needs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import re
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lifecycle import strategies as registry
from lifecycle import metrics, mia
from lifecycle.datasets import StreamTask, permuted_mnist5k, split_digits
from lifecycle.report import figure_png, jsonable

STREAMS = {"split-digits": split_digits, "permuted-mnist5k": permuted_mnist5k}
BASELINES = ("naive", "ewc", "replay", "lwf")
REFERENCE = "retrain"
N_CLASSES = 10

# Smaller settings for CI and smoke runs. A strategy being written beside this
# file may not have every key yet, so keys its config lacks are left out.
QUICK_CONFIGS: dict[str, dict[str, Any]] = {
    "analytic": {"width": 256},
    "hypernet": {"epochs": 3, "forget_steps": 60, "hnet_layers": [64, 64], "hidden": [50, 50], "noise_samples": 4},
    "olora": {"hidden": [128, 128], "epochs": 10},
    "s3t": {"n_sequences": 2, "epochs": 30},
}

FORGET_NEEDS_TEXT = {"nothing": "nothing", "forget data": "the forgotten samples",
                     "ids only": "the forgotten samples' ids"}
RETRAIN_NEEDS = "all retained data"


@dataclass(frozen=True)
class Op:
    kind: str  # "learn" or "forget"
    task: int

    def __str__(self) -> str:
        return f"{'L' if self.kind == 'learn' else 'U'}{self.task}"


@dataclass(frozen=True)
class MlpSettings:
    """The baselines' and the reference's network and training."""

    hidden_size: int = 256
    hidden_layers: int = 2
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3


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
    std: dict[str, float] = field(default_factory=dict)  # across seeds, for the numeric columns


@dataclass(frozen=True)
class BenchResult:
    stream: str
    sequence: str
    rows: tuple[BenchRow, ...]
    runs: tuple[Run, ...]
    markdown: str
    markdown_path: Path
    json_path: Path
    png_path: Path


# ---- the sequence --------------------------------------------------------------------------


def parse_sequence(text: str, n_tasks: int) -> tuple[Op, ...]:
    """``"L0 L1 U0 L0"``: learn (L) or unlearn (U) task k. A task is learned again only after a forget."""
    ops, learned = [], set()
    for token in text.split():
        match = re.fullmatch(r"([LU])(\d+)", token.upper())
        if match is None:
            raise ValueError(f"bad step {token!r} in {text!r}: write L<k> to learn task k, U<k> to forget it")
        op = Op("learn" if match[1] == "L" else "forget", int(match[2]))
        if op.task >= n_tasks:
            raise ValueError(f"step {token}: the stream has tasks 0..{n_tasks - 1}")
        if op.kind == "learn" and op.task in learned:
            raise ValueError(f"step {token}: task {op.task} is already learned")
        if op.kind == "forget" and op.task not in learned:
            raise ValueError(f"step {token}: task {op.task} is not learned, there is nothing to forget")
        (learned.add if op.kind == "learn" else learned.discard)(op.task)
        ops.append(op)
    if not ops:
        raise ValueError("the sequence is empty")
    return tuple(ops)


def role_masks(ops: Sequence[Op]) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    """Columns (task indices in first-learn order) and the retained, forgotten and learned masks."""
    columns = list(dict.fromkeys(op.task for op in ops))
    shape = (len(ops), len(columns))
    retained, forgotten, learned = (np.zeros(shape, dtype=bool) for _ in range(3))
    state: dict[int, str] = {}
    for i, op in enumerate(ops):
        state[op.task] = "retained" if op.kind == "learn" else "forgotten"
        for k, task in enumerate(columns):
            retained[i, k] = state.get(task) == "retained"
            forgotten[i, k] = state.get(task) == "forgotten"
        if op.kind == "learn":
            learned[i, columns.index(op.task)] = True
    return columns, retained, forgotten, learned


# ---- the benchmark ---------------------------------------------------------------------------


def run_bench(
    stream: str,
    sequence: str,
    strategies: Sequence[str] | str,
    out_dir: str | Path,
    seeds: int = 1,
    quick: bool = False,
    *,
    baselines: Sequence[str] = BASELINES,
    configs: dict[str, dict[str, Any]] | None = None,
    mlp: MlpSettings | None = None,
    progress: bool = True,
    console=None,
    threads: int | None = 1,
) -> BenchResult:
    """Run ``sequence`` on ``stream`` through the strategies (names, or ``"all"``), the
    ``baselines`` and the reference, for ``seeds`` seeds; print the table and write
    ``bench.md``, ``bench.json`` and ``bench.png`` into ``out_dir``.

    ``configs`` overrides a strategy's config (merged over the quick settings
    when ``quick``); ``mlp`` the baselines' and reference's network.
    ``threads`` caps torch's and BLAS's threads for every method while the
    bench runs (None leaves them be): on a busy machine, OpenMP threads
    spinning over these small networks turned a 0.08 s fit into 16 s, and
    timings that depend on the neighbours' load compare nothing.
    """
    from rich.console import Console

    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=200)  # a log file would otherwise get an 80-column table
    if stream not in STREAMS:
        raise ValueError(f"unknown stream {stream!r}; choose from {', '.join(STREAMS)}")
    names = registry.names() if strategies == "all" else list(strategies)
    for name in names:
        registry.get(name)  # raises naming the registered ones
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; choose from {', '.join(BASELINES)}")
    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer, not {seeds!r}")
    mlp = mlp or (MlpSettings(epochs=5) if quick else MlpSettings())
    n_tasks = 5
    ops = parse_sequence(sequence, n_tasks)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    runs: list[Run] = []
    methods = [REFERENCE, *baselines, *names]
    with _threads(threads), _progress(console, progress) as bar:
        _warm_up(mlp)
        job = bar.add_task("bench", total=seeds * len(methods) * len(ops))
        for seed in range(seeds):
            tasks = STREAMS[stream](n_tasks=n_tasks, seed=seed)

            def step(method: str, i: int) -> None:
                bar.update(job, advance=1, description=f"seed {seed} {method}: {ops[i]} ({i + 1}/{len(ops)})")

            reference, ref_run = _run_reference(tasks, ops, seed, mlp, step)
            runs.append(ref_run)
            for name in baselines:
                runs.append(_run_avalanche(name, tasks, ops, seed, mlp, reference, step))
            for name in names:
                config = _config(name, seed, quick, (configs or {}).get(name))
                runs.append(_run_strategy(name, config, tasks, ops, seed, reference, step))

    rows = tuple(_row(method, [r for r in runs if r.method == method]) for method in methods)
    markdown = to_markdown(rows, stream, sequence, seeds, quick)
    result = BenchResult(stream, sequence, rows, tuple(runs), markdown,
                         out / "bench.md", out / "bench.json", out / "bench.png")
    result.markdown_path.write_text(markdown)
    result.json_path.write_text(json.dumps(jsonable({
        "stream": stream, "sequence": sequence, "seeds": seeds, "quick": quick,
        "mlp": dataclasses.asdict(mlp), "rows": [dataclasses.asdict(r) for r in rows],
        "runs": [dataclasses.asdict(r) for r in runs],
    }), indent=2, allow_nan=False))
    result.png_path.write_bytes(plot(rows, f"{stream}: {sequence}"))
    console.print(_rich_table(rows, stream, sequence))
    return result


@contextlib.contextmanager
def _threads(n: int | None):
    import torch
    from threadpoolctl import threadpool_limits

    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before)


def _progress(console, enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, disable=not enabled)


def _warm_up(settings: MlpSettings) -> None:
    """Pay for importing Avalanche (seconds) and torch's first training step outside the timings."""
    import avalanche.benchmarks  # noqa: F401
    import avalanche.training  # noqa: F401

    rng = np.random.default_rng(0)
    tiny = StreamTask("warm-up", rng.random((8, 4), dtype=np.float32), np.arange(8) % 2,
                      np.zeros((1, 4), np.float32), np.zeros(1, np.int64))
    _fit_jointly([tiny], dataclasses.replace(settings, epochs=1), seed=0)


def _config(name: str, seed: int, quick: bool, override: dict[str, Any] | None) -> dict[str, Any]:
    known = {f.name for f in dataclasses.fields(registry.get(name).config_class)}
    config = {"seed": seed} if "seed" in known else {}
    if quick:
        config.update({k: v for k, v in QUICK_CONFIGS.get(name, {}).items() if k in known})
    config.update(override or {})
    return config


# ---- registered strategies, through the ledger -------------------------------------------------


def _run_strategy(name, config, tasks: list[StreamTask], ops, seed, reference, step) -> Run:
    import lifecycle
    from lifecycle.worker import load_strategy

    spec = registry.get(name)
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        lc = lifecycle.connect(f"sqlite:///{Path(tmp) / 'ledger.db'}")
        lc.create_model("bench", strategy=name, n_features=tasks[0].X.shape[1], n_classes=N_CLASSES, config=config)
        for i, op in enumerate(ops):
            t = tasks[op.task]
            if op.kind == "learn":
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
        gone = [by_name[t] for t in _forgotten_now(matrix.tasks, matrix.forgotten)]
        auc, gap, score = _attack(model, reference, gone, spec.tags.needs_task_id, kind=None)
        lc.ledger.engine.dispose()  # before its folder goes
    return Run(
        method=name, seed=seed, tasks=matrix.tasks, acc=matrix.acc, retained=matrix.retained,
        forgotten=matrix.forgotten, chance=matrix.chance,
        forget_steps=tuple(i for i, k in enumerate(matrix.kinds) if k == "forget"),
        learn_seconds=tuple(s for s, k in zip(seconds, matrix.kinds) if k == "learn"),
        forget_seconds=tuple(s for s, k in zip(seconds, matrix.kinds) if k == "forget"),
        mia_auc=auc, mia_gap=gap, mia_score=score,
    )


# ---- the MLP baselines and the reference -------------------------------------------------------


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


def _mlp(n_features: int, settings: MlpSettings, seed: int):
    import torch
    from avalanche.models import SimpleMLP

    torch.manual_seed(seed)
    return SimpleMLP(num_classes=N_CLASSES, input_size=n_features, hidden_size=settings.hidden_size,
                     hidden_layers=settings.hidden_layers, drop_rate=0.0)


def _fit_jointly(tasks: list[StreamTask], settings: MlpSettings, seed: int):
    """A fresh MLP trained on the union of ``tasks`` (an untrained one when there are none)."""
    import torch

    model = _mlp(_n_features(tasks), settings, seed)
    if not tasks:
        return model
    X = torch.as_tensor(np.concatenate([t.X for t in tasks]))
    y = torch.as_tensor(np.concatenate([t.y for t in tasks]))
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(settings.epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), settings.batch_size):
            batch = order[start:start + settings.batch_size]
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(model(X[batch]), y[batch]).backward()
            optimiser.step()
    return model


def _run_reference(tasks, ops, seed, settings, step) -> tuple[TorchClassifier, Run]:
    retained: list[int] = []
    models, seconds = [], []
    for i, op in enumerate(ops):
        (retained.append if op.kind == "learn" else retained.remove)(op.task)
        started = time.perf_counter()
        models.append(_fit_jointly([tasks[k] for k in retained], settings, seed))
        seconds.append(time.perf_counter() - started)
        step(REFERENCE, i)
    classifier = _classifier(models[-1], tasks)
    run = _mlp_run(REFERENCE, tasks, ops, seed, [_classifier(m, tasks) for m in models], seconds, None)
    return classifier, run


def _avalanche_strategy(name: str, model, settings: MlpSettings):
    import torch
    from avalanche.training import EWC, LwF, Naive, Replay
    from avalanche.training.plugins import EvaluationPlugin

    common = dict(
        model=model, optimizer=torch.optim.Adam(model.parameters(), lr=settings.lr),
        criterion=torch.nn.CrossEntropyLoss(), train_mb_size=settings.batch_size, train_epochs=settings.epochs,
        eval_mb_size=512, device="cpu",
        # an empty evaluator: the default one logs every iteration to stdout
        evaluator=EvaluationPlugin(),
    )
    if name == "naive":
        return Naive(**common)
    if name == "ewc":
        return EWC(ewc_lambda=1000.0, **common)
    if name == "replay":
        return Replay(mem_size=200, **common)
    return LwF(alpha=1.0, temperature=2.0, **common)


def _run_avalanche(name, tasks, ops, seed, settings, reference, step) -> Run:
    import torch
    from avalanche.benchmarks import tensors_benchmark

    # One experience per task, all task label 0: a single head, as the
    # class-incremental strategies see it. (LwF breaks on the streams of
    # class_incremental_benchmark; tensor benchmarks carry what it needs.)
    benchmark = tensors_benchmark(
        train_tensors=[[torch.as_tensor(t.X), torch.as_tensor(t.y)] for t in tasks],
        test_tensors=[[torch.as_tensor(t.X_probe), torch.as_tensor(t.y_probe)] for t in tasks],
        task_labels=[0] * len(tasks),
    )
    n_features = _n_features(tasks)
    retained: list[int] = []
    snapshots, seconds = [], []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No loggers specified")
        model = _mlp(n_features, settings, seed)
        learner = _avalanche_strategy(name, model, settings)
        for i, op in enumerate(ops):
            started = time.perf_counter()
            # avalanche 0.6's replay plugin calls its own deprecated API on every step, and its
            # deprecation decorator re-enables the warning whatever the filters say: keep it off the console
            with contextlib.redirect_stderr(io.StringIO()):
                if op.kind == "learn":
                    retained.append(op.task)
                    learner.train(benchmark.train_stream[op.task])
                else:
                    # no way to unlearn: start over on the retained stream, in learn order
                    retained.remove(op.task)
                    model = _mlp(n_features, settings, seed)
                    learner = _avalanche_strategy(name, model, settings)
                    for k in retained:
                        learner.train(benchmark.train_stream[k])
            seconds.append(time.perf_counter() - started)
            snapshots.append(_classifier(_frozen_copy(model), tasks))
            step(name, i)
    return _mlp_run(name, tasks, ops, seed, snapshots, seconds, reference)


def _mlp_run(method, tasks, ops, seed, classifiers, seconds, reference) -> Run:
    columns, retained, forgotten, _ = role_masks(ops)
    acc = np.full(retained.shape, np.nan)
    for i, classifier in enumerate(classifiers):
        for k, task in enumerate(columns):
            if retained[i, k] or forgotten[i, k]:
                t = tasks[task]
                acc[i, k] = float(np.mean(classifier.predict(t.X_probe) == t.y_probe))
    names = tuple(tasks[k].name for k in columns)
    gone = [tasks[columns[k]] for k in np.flatnonzero(forgotten[-1])]
    if reference is None:  # the reference itself: its gap is zero by definition
        auc, _, score = _attack(classifiers[-1], classifiers[-1], gone, False, kind=None)
        gap = 0.0 if gone else math.nan
    else:
        auc, gap, score = _attack(classifiers[-1], reference, gone, False, kind=None)
    return Run(
        method=method, seed=seed, tasks=names, acc=acc, retained=retained, forgotten=forgotten,
        chance=np.full(len(columns), 1.0 / N_CLASSES),
        forget_steps=tuple(i for i, op in enumerate(ops) if op.kind == "forget"),
        learn_seconds=tuple(s for s, op in zip(seconds, ops) if op.kind == "learn"),
        forget_seconds=tuple(s for s, op in zip(seconds, ops) if op.kind == "forget"),
        mia_auc=auc, mia_gap=gap, mia_score=score,
    )


def _classifier(model, tasks: list[StreamTask]) -> TorchClassifier:
    return TorchClassifier(model, {t.name: sorted(set(t.y.tolist()) | set(t.y_probe.tolist())) for t in tasks})


def _frozen_copy(model):
    import copy

    return copy.deepcopy(model).eval()


def _n_features(tasks: list[StreamTask]) -> int:
    return tasks[0].X.shape[1]


# ---- membership inference ---------------------------------------------------------------------


def _forgotten_now(task_names: Sequence[str], forgotten: np.ndarray) -> list[str]:
    return [t for t, gone in zip(task_names, forgotten[-1]) if gone] if forgotten.size else []


def _attack(model, reference, gone: list[StreamTask], needs_task_id: bool, kind: str | None):
    """Mean AUC over the forgotten tasks (training samples against their unseen probe
    samples), the mean gap to the reference under the same attack, and the score used."""
    if not gone:
        return math.nan, math.nan, None
    aucs, gaps, used = [], [], None
    for t in gone:
        task = t.name if needs_task_id else None
        result = mia.membership_auc(model, (t.X, t.y), (t.X_probe, t.y_probe), task=task, kind=kind)
        ref = mia.membership_auc(reference, (t.X, t.y), (t.X_probe, t.y_probe), task=task, kind=result.score)
        aucs.append(result.auc)
        gaps.append(mia.auc_gap(result.auc, ref.auc))
        used = result.score
    return float(np.mean(aucs)), float(np.mean(gaps)), used


# ---- the table ----------------------------------------------------------------------------------

_NUMERIC = ("ra", "fa", "spill", "relapse", "relapse_paper", "mia_auc", "mia_gap", "learn_s", "forget_s")


def _run_numbers(run: Run) -> dict[str, float]:
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


def _row(method: str, runs: list[Run]) -> BenchRow:
    numbers = [_run_numbers(r) for r in runs]
    mean = {k: _nanmean([n[k] for n in numbers]) for k in _NUMERIC}
    std = {k: _nanstd([n[k] for n in numbers]) for k in _NUMERIC} if len(runs) > 1 else {}
    if method == REFERENCE or method in BASELINES:
        family = "reference" if method == REFERENCE else "avalanche"
        exactness, task_id, needs = "exact (retrain)", False, RETRAIN_NEEDS
    else:
        tags = registry.get(method).tags
        family, exactness, task_id, needs = "strategy", tags.exactness, tags.needs_task_id, \
            FORGET_NEEDS_TEXT[tags.forget_needs]
    return BenchRow(method=method, family=family, exactness=exactness, task_id=task_id, **mean,
                    mia_score=runs[0].mia_score, forget_needs=needs, seeds=len(runs), std=std)


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


def _cell(row: BenchRow, key: str) -> str:
    value = getattr(row, key)
    if key == "task_id":
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if value is None or math.isnan(value):
        return "—"
    text = f"{value:.3f}"
    spread = row.std.get(key)
    if spread is not None and not math.isnan(spread):
        text += f" ± {spread:.3f}"
    if key == "mia_auc" and row.mia_score == mia.CORRECT:
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


def _rich_table(rows: Sequence[BenchRow], stream: str, sequence: str):
    from rich.table import Table

    table = Table(title=f"{stream}: {sequence}")
    for title, key in _COLUMNS:
        table.add_column(title, justify="left" if key in ("method", "family", "exactness", "forget_needs") else "right")
    for r in rows:
        table.add_row(*(_cell(r, key) for _, key in _COLUMNS))
    return table


def plot(rows: Sequence[BenchRow], title: str) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.8), dpi=100)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1.4]})
    keys = [("RA", "ra"), ("FA", "fa"), ("spill", "spill"), ("relapse", "relapse"), ("MIA gap", "mia_gap")]
    width = 0.8 / len(rows)
    x = np.arange(len(keys))
    for j, r in enumerate(rows):
        values = [getattr(r, key) for _, key in keys]
        left.bar(x + j * width, [0 if math.isnan(v) else v for v in values], width, label=r.method)
    left.set_xticks(x + width * (len(rows) - 1) / 2, [title for title, _ in keys])
    left.set_ylim(0, 1.05)
    left.set_title(title)
    left.legend(fontsize=8, ncol=2)
    left.grid(axis="y", alpha=0.3)
    x = np.arange(len(rows))
    for offset, (label, key) in ((-0.2, ("learn", "learn_s")), (0.2, ("forget", "forget_s"))):
        right.bar(x + offset, [max(getattr(r, key), 1e-4) if not math.isnan(getattr(r, key)) else 0 for r in rows],
                  0.4, label=f"s per {label}")
    right.set_yscale("log")
    right.set_xticks(x, [r.method for r in rows], rotation=45, ha="right", fontsize=8)
    right.set_title("seconds per request")
    right.legend(fontsize=8)
    fig.tight_layout()
    return figure_png(fig)
