"""Time an analytic forget request against retraining the head from scratch.

For each size n the strategy first learns n samples in batches. Then, per
request, only the ``forget`` call is timed; the retrain it is compared with is
what rebuilding the head on the retained samples costs: their features,
Phi^T Phi, and a Cholesky solve. Both run in this process, one after the
other, on the same BLAS threads (``--threads`` limits them for both), so the
ratio compares like with like. The exactness gap is the relative difference
between the head after the forgets and the retrained head.

    .venv/bin/python bench/analytic_forget.py --sizes 5000 50000 --width 2048 --forget 100
    .venv/bin/python bench/analytic_forget.py --quick    # n = 50,000 only
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from threadpoolctl import threadpool_info, threadpool_limits

from lifecycle.strategies import ForgetSet, TaskData
from lifecycle.strategies.analytic import AnalyticConfig
from lifecycle.strategies.analytic.model import AnalyticStrategy

N_FEATURES = 64
N_CLASSES = 10
TARGET_N = 50_000
TARGET_SPEEDUP = 300.0
TARGET_GAP = 1e-8


def retrain_head(strategy: AnalyticStrategy, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    gamma = strategy.config.gamma
    Phi = strategy.features(X)
    A = Phi.T @ Phi
    A[np.diag_indices_from(A)] += gamma
    C = Phi.T @ np.eye(N_CLASSES)[y]
    return cho_solve(cho_factor(A, lower=True), C)


def run_size(n: int, args: argparse.Namespace) -> dict[str, float]:
    rng = np.random.default_rng(args.seed)
    X = rng.standard_normal((n, N_FEATURES)).astype(np.float32)
    y = rng.integers(0, N_CLASSES, size=n)
    ids = np.array([f"s{i}" for i in range(n)])

    strategy = AnalyticStrategy(AnalyticConfig(width=args.width, gamma=args.gamma, seed=args.seed), N_FEATURES, N_CLASSES)
    start = time.perf_counter()
    for lo in range(0, n, args.batch):
        hi = min(n, lo + args.batch)
        strategy.learn(TaskData(task="bench", X=X[lo:hi], y=y[lo:hi], sample_ids=tuple(ids[lo:hi])))
    build_s = time.perf_counter() - start

    # Successive requests for disjoint samples, as a stream of deletions would arrive.
    order = rng.permutation(n)
    forget_s = []
    for r in range(args.repeats):
        chosen = order[r * args.forget:(r + 1) * args.forget]
        request = ForgetSet(sample_ids=tuple(ids[chosen]), X=X[chosen], y=y[chosen])
        start = time.perf_counter()
        strategy.forget(request)
        forget_s.append(time.perf_counter() - start)

    retained = np.ones(n, dtype=bool)
    retained[order[:args.repeats * args.forget]] = False
    retrain_s = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        W_retrained = retrain_head(strategy, X[retained], y[retained])
        retrain_s.append(time.perf_counter() - start)

    gap = np.linalg.norm(strategy.weights - W_retrained) / np.linalg.norm(W_retrained)
    forget_med, retrain_med = float(np.median(forget_s)), float(np.median(retrain_s))
    return {
        "n": n,
        "build_s": build_s,
        "forget_ms": forget_med * 1e3,
        "retrain_ms": retrain_med * 1e3,
        "speedup": retrain_med / forget_med,
        "gap": float(gap),
        "refreshes": strategy.refreshes,
        "refinements": strategy.refinements,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 50_000], help="samples learned before forgetting")
    parser.add_argument("--width", type=int, default=2048, help="random features d")
    parser.add_argument("--forget", type=int, default=100, help="samples per forget request")
    parser.add_argument("--repeats", type=int, default=3, help="forget requests (and retrains) timed; medians shown")
    parser.add_argument("--batch", type=int, default=5000, help="learn batch size while building")
    parser.add_argument("--gamma", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="limit BLAS threads for the forgets and the retrains alike (default: as configured)")
    parser.add_argument("--quick", action="store_true", help=f"only the target size, n = {TARGET_N:,}")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = [TARGET_N]
    if min(args.sizes) <= args.forget * args.repeats:
        parser.error("every size must exceed --forget x --repeats")
    if args.threads is not None:
        threadpool_limits(args.threads)

    print("analytic forget vs retraining the head from scratch")
    print(f"data: synthetic Gaussian inputs, {N_FEATURES} features, {N_CLASSES} uniform random classes "
          "(timing only; the numbers do not depend on the data's meaning)")
    print(f"width d={args.width}, gamma={args.gamma}, forget request={args.forget} samples, "
          f"learned in batches of {args.batch}, median of {args.repeats} requests / retrains")
    blas_threads = sorted({pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"})
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}, "
          f"BLAS threads {'/'.join(map(str, blas_threads))}, load average {os.getloadavg()[0]:.2f} at start")
    print(f"target: >= {TARGET_SPEEDUP:.0f}x at n = {TARGET_N:,}, gap < {TARGET_GAP:g}")
    print()
    header = f"{'n':>8} {'build s':>8} {'forget ms':>10} {'retrain ms':>11} {'speed-up':>9} {'gap':>9} {'refreshes':>9} {'refined':>7}"
    print(header)
    print("-" * len(header))
    rows = []
    for n in args.sizes:
        row = run_size(n, args)
        rows.append(row)
        print(f"{row['n']:>8,} {row['build_s']:>8.1f} {row['forget_ms']:>10.1f} {row['retrain_ms']:>11.1f} "
              f"{row['speedup']:>8.1f}x {row['gap']:>9.1e} {row['refreshes']:>9} {row['refinements']:>7}", flush=True)
    target = [row for row in rows if row["n"] == TARGET_N]
    if not target:
        print(f"\ntarget: n = {TARGET_N:,} was not run, so no verdict")
    for row in target:
        met = row["speedup"] >= TARGET_SPEEDUP and row["gap"] < TARGET_GAP
        print(f"\ntarget at n = {TARGET_N:,} (>= {TARGET_SPEEDUP:.0f}x, gap < {TARGET_GAP:g}): "
              f"{'met' if met else 'NOT met'}: speed-up {row['speedup']:.1f}x "
              f"(forget {row['forget_ms']:.1f} ms against retrain {row['retrain_ms']:,.0f} ms), gap {row['gap']:.1e}")


if __name__ == "__main__":
    main()
