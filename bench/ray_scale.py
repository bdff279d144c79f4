"""Time the work inside one request locally and on Ray with 1 and 2 worker processes, side by side.

Two workloads, each run the same way in every mode:

- s3t shard retrain: the strategy (m = 5 shards, B = 6 sequences, L = 6
  slices) learns the 1,797 digits of sklearn in one request; then shard 0 is
  retrained from its retained samples (its B sequences are the jobs). Only
  the retrain is timed.
- analytic learn: a first learn of 1,000,000 x 256 float32 rows at width
  1,024 (its statistics are summed from one block per worker). The whole
  learn is timed.

Each mode runs ``--repeat`` times, the modes taking turns, and keeps its best
time. Modes: ``local`` runs in this process with one torch and BLAS thread (the
baseline of the targets: one worker process against one local process on the
same threads); ``local, all threads`` leaves the threads as they are, for
reference; ``ray-N`` starts a local Ray instance of N CPUs and runs the jobs
as tasks of one CPU and one thread each. Ray's worker processes are started
import the strategies and take a few torch optimiser steps (one warm-up task
each) before the timing, as a running service's are after its first step; and
every mode waits for the machine to be quiet first (a fresh Ray instance's own
processes spend several seconds of CPU starting up, and Ray's workers run at
nice 15).
Every mode checks its result against the local one: s3t's state bit for bit,
analytic's statistics to 1e-8.

Targets (2-core machine): ray-2 at least 1.7x faster than local for both
workloads, and ray-1 at most 15 % slower than local (Ray's own overhead).

    scripts/private-network.sh .venv/bin/python -m bench.ray_scale            # full sizes: ~10 min on 2 cores
    scripts/private-network.sh .venv/bin/python -m bench.ray_scale --quick    # small sizes: a smoke run

Ray binds to the machine's own address, never loopback: the bench runs only
in a network namespace of its own (``lifecycle.testing.network``).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import os
import platform
import secrets
import sys
import time
from collections.abc import Callable

import numpy as np

from bench.harness import limited_threads

from lifecycle import arrays
from lifecycle.datasets import split_digits
from lifecycle.ray_executor import RayExecutor
from lifecycle.strategies import RetrainPlan, TaskData, get
from lifecycle.strategies.executor import LOCAL, Executor
from lifecycle.testing.network import HOW, private_network

TARGET_SPEEDUP = 1.7
TARGET_OVERHEAD = 0.15
MODES = ("local", "local, all threads", "ray-1", "ray-2")


class S3TRetrain:
    name = "s3t shard retrain (m=5, B=6)"

    def __init__(self, quick: bool) -> None:
        spec = get("s3t")
        config = {"n_shards": 5, "n_sequences": 6, "n_slices": 6}
        if quick:
            config.update(hidden=32, rank=8, epochs=10)
        tasks = split_digits(n_tasks=5)
        X = np.concatenate([t.X for t in tasks])
        y = np.concatenate([t.y for t in tasks])
        ids = tuple(f"digit/{i}" for i in range(len(y)))
        self.learned = spec.build(spec.make_config(config), X.shape[1], 10)
        with limited_threads(1):
            self.learned.learn(TaskData("digits", X, y, ids))
        live = self.learned.book.live_ids(0)
        row = {s: i for i, s in enumerate(ids)}
        self.plan = RetrainPlan(0, tuple(live))
        self.data = TaskData("retrain", X[[row[s] for s in live]], y[[row[s] for s in live]], tuple(live))

    def run(self, executor: Executor) -> tuple[float, object]:
        strategy = copy.deepcopy(self.learned)
        strategy.executor = executor
        started = time.perf_counter()
        strategy.retrain(self.plan, self.data)
        seconds = time.perf_counter() - started
        return seconds, hashlib.sha256(arrays.pack(strategy.state_dict())).hexdigest()

    @staticmethod
    def check(results: list, reference) -> str:
        return "state bit-identical" if all(r == reference for r in results) else "STATE DIFFERS"


class AnalyticLearn:
    def __init__(self, rows: int, features: int, width: int) -> None:
        self.name = f"analytic learn ({rows:,} x {features})"
        rng = np.random.default_rng(0)
        self.data = TaskData("all", rng.standard_normal((rows, features), dtype=np.float32),
                             rng.integers(0, 10, rows), tuple(map(str, range(rows))))
        self.features, self.width = features, width

    def run(self, executor: Executor) -> tuple[float, object]:
        spec = get("analytic")
        strategy = spec.build(spec.make_config({"width": self.width}), self.features, 10)
        strategy.executor = executor
        started = time.perf_counter()
        strategy.learn(self.data)
        seconds = time.perf_counter() - started
        state = strategy.state_dict()
        return seconds, (state["A"], state["C"])

    @staticmethod
    def check(results: list, reference) -> str:
        gap = max(np.linalg.norm(a - b) / np.linalg.norm(b) for r in results for a, b in zip(r, reference))
        return f"statistics within {gap:.1e} {'(<= 1e-8)' if gap <= 1e-8 else '(OVER 1e-8)'}"


def _warm_up(_: int) -> int:
    """Import what the jobs run and take a few optimiser steps in the worker process, as a worker
    that ran a step before has done: a process's first torch training pays about a second of
    one-time set-up, which the local baseline (a process that learned before) does not."""
    import torch

    import lifecycle.strategies.analytic.model  # noqa: F401
    import lifecycle.strategies.s3t.model  # noqa: F401

    layer = torch.nn.Linear(8, 4)
    optimiser = torch.optim.Adam(layer.parameters(), lr=0.01)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(layer(torch.randn(16, 8)), torch.randint(0, 4, (16,)))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return os.getpid()


def settle(quiet_percent: float = 10.0, longest: float = 60.0) -> float:
    """Wait until the machine is quiet (under ``quiet_percent`` CPU over a second), for at most
    ``longest`` seconds; returns the seconds waited. A Ray instance's own processes (dashboard
    agent, runtime-env agent, log monitor) spend several seconds of CPU starting up, and Ray's
    workers run at nice 15, so without this the timing measures the start-up, not a running
    cluster."""
    import psutil

    started = time.monotonic()
    while psutil.cpu_percent(interval=1.0) >= quiet_percent and time.monotonic() - started < longest:
        pass
    return time.monotonic() - started


def on_ray(cpus: int, run: Callable[[Executor], tuple[float, object]]) -> tuple[float, object]:
    import ray

    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        executor = RayExecutor(threads=1)
        # start the worker processes (and warm torch and the strategies in them) before the timing
        warmed = set(executor.map(_warm_up, list(range(cpus))))
        if len(warmed) != cpus:
            print(f"  (warm-up reached {len(warmed)} of {cpus} worker processes)")
        settle()
        return run(executor)
    finally:
        ray.shutdown()


def measure(workload, repeat: int) -> dict[str, tuple[float, str]]:
    """Every mode's best time over ``repeat`` rounds (the modes take turns, so a neighbour's load
    falls on all of them alike), and its results checked against the first local one."""
    runs: dict[str, list[tuple[float, object]]] = {mode: [] for mode in MODES}
    for _ in range(repeat):
        settle()
        with limited_threads(1):
            runs["local"].append(workload.run(LOCAL))
        settle()
        runs["local, all threads"].append(workload.run(LOCAL))
        for cpus in (1, 2):
            runs[f"ray-{cpus}"].append(on_ray(cpus, workload.run))
    reference = runs["local"][0][1]
    return {mode: (min(seconds for seconds, _ in done), workload.check([result for _, result in done], reference))
            for mode, done in runs.items()}


def report(name: str, timings: dict[str, tuple[float, str]]) -> list[str]:
    local = timings["local"][0]
    print(f"\n{name}")
    for mode in MODES:
        seconds, check = timings[mode]
        print(f"  {mode:<20} {seconds:8.2f} s   {local / seconds:5.2f}x local   {check}")
    speedup = local / timings["ray-2"][0]
    overhead = timings["ray-1"][0] / local - 1
    return [
        (f"{name}: ray-2 {speedup:.2f}x local (target >= {TARGET_SPEEDUP}x): "
         f"{'met' if speedup >= TARGET_SPEEDUP else 'NOT met'}"),
        (f"{name}: ray-1 overhead {overhead * 100:+.1f} % against local (target < {TARGET_OVERHEAD * 100:.0f} %): "
         f"{'met' if overhead < TARGET_OVERHEAD else 'NOT met'}"),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run, not the targets' sizes)")
    parser.add_argument("--rows", type=int, default=None, help="analytic rows (default 1,000,000; quick 50,000)")
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--width", type=int, default=None, help="analytic width (default 1,024; quick 256)")
    parser.add_argument("--only", choices=("s3t", "analytic"), default=None, help="run one workload only")
    parser.add_argument("--repeat", type=int, default=2, help="rounds; each mode's best time is kept (default 2)")
    args = parser.parse_args(argv)
    if not private_network():
        sys.exit(f"bench/ray_scale.py starts Ray, which must not reach this machine's own network address; {HOW}")
    # a throwaway token for the throwaway Ray instances (Ray reads it when first imported), rather
    # than the one a local ray.init would write into the home folder
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    rows = args.rows or (50_000 if args.quick else 1_000_000)
    width = args.width or (256 if args.quick else 1024)
    print(f"{platform.node()}: {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} at the start")
    verdicts = []
    if args.only in (None, "s3t"):
        workload = S3TRetrain(args.quick)
        verdicts += report(workload.name, measure(workload, args.repeat))
    if args.only in (None, "analytic"):
        workload = AnalyticLearn(rows, args.features, width)
        verdicts += report(workload.name, measure(workload, args.repeat))
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
