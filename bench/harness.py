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

The parts: ``bench.sequence`` (the sequence language), ``bench.streams``
(the data), ``bench.reference`` (the retrain reference's network),
``bench.runners`` and ``bench.baselines`` (one method through the sequence),
``bench.results`` (rows and tables), ``bench.figures`` (``bench.png``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.baselines import BASELINES, run_avalanche
from bench.figures import plot
from bench.reference import MlpSettings, fit_jointly
from bench.results import BenchRow, rich_table, row, to_markdown
from bench.runners import REFERENCE, Run, StrategyRun, run_reference, run_strategy, run_strategy_job
from bench.sequence import parse_sequence
from bench.streams import STREAMS, load_stream
from lifecycle import strategies as registry
from lifecycle.report import jsonable
from lifecycle.strategies.executor import Executor

N_TASKS = 5


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
    executor: Executor | None = None,
) -> BenchResult:
    """Run ``sequence`` on ``stream`` through the strategies (names, or ``"all"``), the
    ``baselines`` and the reference, for ``seeds`` seeds; print the table and write
    ``bench.md``, ``bench.json`` and ``bench.png`` into ``out_dir``.

    ``quick`` runs each strategy with its spec's ``test_config`` and the
    reference and baselines with fewer epochs. ``configs`` overrides a
    strategy's config (merged over the quick settings when ``quick``);
    ``mlp`` the baselines' and reference's network.
    ``threads`` caps torch's and BLAS's threads for every method while the
    bench runs (None leaves them be): on a busy machine, OpenMP threads
    spinning over these small networks turned a 0.08 s fit into 16 s, and
    timings that depend on the neighbours' load compare nothing.
    ``executor`` (e.g. a ``RayExecutor``) runs the strategies' (strategy,
    seed) runs as its jobs, spread over its workers, once every seed's
    reference and baselines ran here; None runs them here, in turn.
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
    ops = parse_sequence(sequence, N_TASKS)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    runs: list[Run] = []
    spread: list[StrategyRun] = []  # the strategy runs left to the executor
    methods = [REFERENCE, *baselines, *names]
    with limited_threads(threads), _progress(console, progress) as bar:
        _warm_up(mlp)
        job = bar.add_task("bench", total=seeds * len(methods) * len(ops))
        for seed in range(seeds):
            tasks = load_stream(stream, N_TASKS, seed)

            def step(method: str, i: int) -> None:
                bar.update(job, advance=1, description=f"seed {seed} {method}: {ops[i]} ({i + 1}/{len(ops)})")

            reference, ref_run = run_reference(tasks, ops, seed, mlp, step)
            runs.append(ref_run)
            for name in baselines:
                runs.append(run_avalanche(name, tasks, ops, seed, mlp, reference, step))
            for name in names:
                config = _config(name, seed, quick, (configs or {}).get(name))
                if executor is None:
                    runs.append(run_strategy(name, config, tasks, ops, seed, reference, step))
                else:
                    spread.append(StrategyRun(name, config, tuple(tasks), tuple(ops), seed, reference))
        if spread:
            bar.update(job, description=f"{len(spread)} strategy runs on {executor!r}")
            runs.extend(executor.map(run_strategy_job, spread))
            bar.update(job, advance=len(spread) * len(ops))

    rows = tuple(row(method, [r for r in runs if r.method == method]) for method in methods)
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
    console.print(rich_table(rows, stream, sequence))
    return result


@contextlib.contextmanager
def limited_threads(n: int | None):
    """torch and BLAS limited to ``n`` threads (None: as they are)."""
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
    X, y = rng.random((8, 4), dtype=np.float32), np.arange(8) % 2
    fit_jointly([("warm-up", X, y)], 4, settings.hidden, 1, seed=0, lr=settings.lr, batch_size=settings.batch_size)


def _config(name: str, seed: int, quick: bool, override: dict[str, Any] | None) -> dict[str, Any]:
    """The strategy's config: its spec's small ``test_config`` when ``quick``, the seed, then ``override``."""
    spec = registry.get(name)
    config = copy.deepcopy(dict(spec.test_config)) if quick else {}
    if "seed" in {f.name for f in dataclasses.fields(spec.config_class)}:
        config["seed"] = seed
    config.update(override or {})
    return config
