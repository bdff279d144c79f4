"""S3T deletions: capacity, retrain cost against SISA, accuracy under deletions, timings.

    .venv/bin/python -m bench.s3t_deletions [--streams 2000] [--acc-streams 5] [--quick]

Capacity and cost drive the strategy's own bookkeeping (``Book.deactivate``,
``Book.rebuild``) with uniformly random single-sample deletions; accuracy runs
the real strategy (m = 5 shards, L = 6 slices, B = 6 cyclic sequences, the
frozen base pretrained on the *other* offline data set) next to a SISA
ensemble of per-shard networks and one network trained on all data.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a file: the checkout root, for `bench`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.reference import mlp, train  # noqa: E402
from bench.streams import DATA_SETS, class_split  # noqa: E402
from lifecycle.strategies import ForgetSet, TaskData  # noqa: E402
from lifecycle.strategies.s3t.book import slot_hash  # noqa: E402
from lifecycle.strategies.s3t.capacity import (  # noqa: E402
    expected_first_retrain,
    expected_outage,
    measure_capacity,
    measure_costs,
    s3t_cost_per_deletion,
    sisa_cost_per_deletion,
    template_book,
)
from lifecycle.strategies.s3t.config import S3TConfig  # noqa: E402
from lifecycle.strategies.s3t.model import S3TStrategy  # noqa: E402

M, L = 5, 6
HIDDEN = (128, 128)  # the full-data and SISA networks
# per data set: the share held out for testing, and the other data set (S3T's frozen base is pretrained on it)
SPLIT = {"digits": (0.3, "mnist"), "mnist": (0.2, "digits")}


def capacity_table(streams: int) -> None:
    print(f"\n## Deletion capacity (m={M}, L={L}, cyclic sequences, {streams} streams through Book.deactivate)")
    print("| B | first retrain: measured ± se | exact | within ±1.0 | outage: measured ± se | exact | within ±3.0 |")
    print("|---|---|---|---|---|---|---|")
    for B in range(1, 7):
        book, ids = template_book(M, L, B, per_slice=300)
        cap = measure_capacity(book, ids, streams, np.random.default_rng(100 + B))
        f, o = cap.first_retrain.astype(float), cap.outage.astype(float)
        ef, eo = expected_first_retrain(M, L, B), expected_outage(M, L, B)
        se = np.sqrt(len(f))
        print(f"| {B} | {f.mean():.2f} ± {f.std() / se:.2f} | {ef:.2f} | {abs(f.mean() - ef) <= 1.0} | "
              f"{o.mean():.2f} ± {o.std() / se:.2f} | {eo:.2f} | {abs(o.mean() - eo) <= 3.0} |")


def cost_table(deletions: int) -> None:
    print(f"\n## Retrain cost per deletion, full-shard units ({deletions} deletions per B, same streams for SISA)")
    stages, data = sisa_cost_per_deletion(L)
    print("| B | S3T retrain-on-death: measured | exact B/(L H(B)) | SISA by stages: measured (exact) "
          "| SISA by data: measured (exact) |")
    print("|---|---|---|---|---|")
    for B in range(1, 7):
        book, ids = template_book(M, L, B, per_slice=300)
        c = measure_costs(book, ids, deletions, np.random.default_rng(200 + B))
        print(f"| {B} | {c['s3t']:.3f} | {s3t_cost_per_deletion(L, B):.3f} | {c['sisa_stages']:.3f} ({stages:.3f}) "
              f"| {c['sisa_data']:.3f} ({data:.3f}) |")


# ---- accuracy ------------------------------------------------------------------------


def load(name: str, seed: int = 0):
    """Stratified 70/30 (digits) or 80/20 (MNIST-5k) split, class pairs as tasks, all 10 classes."""
    X, y = DATA_SETS[name]()
    test_fraction, base = SPLIT[name]
    train_rows, test_rows = class_split(X, y, test_fraction, seed)
    ids = tuple(f"{name}/{i}" for i in train_rows)
    return X[train_rows], y[train_rows], ids, X[test_rows], y[test_rows], base


def fit(X, y, epochs: int, seed: int) -> torch.nn.Module:
    """A network trained from scratch on (X, y): the full-data reference, or one SISA shard's."""
    return train(mlp(X.shape[1], HIDDEN, seed), X, y, epochs, seed=seed)


def restricted(state: dict, full_B: int, B: int) -> dict:
    """The state of the first B sequences: cyclic sequence k does not depend on the budget."""
    out = {}
    for key, value in state.items():
        parts = key.split("/")
        if key.startswith("book/seq/") and int(parts[3]) >= B:
            continue
        if key.startswith("stage/") and int(parts[2]) >= B:
            continue
        out[key] = value
    return out


def accuracy_section(name: str, epochs: int, mlp_epochs: int, acc_streams: int) -> None:
    Xtr, ytr, ids, Xte, yte, base = load(name)
    n_features = Xtr.shape[1]
    print(f"\n## Accuracy on split {name} ({len(ytr)} train, {len(yte)} test; S3T base pretrained on {base}; "
          f"stage epochs {epochs})")
    cfg = dict(n_shards=M, n_slices=L, n_sequences=6, base=base, epochs=epochs)
    s3t = S3TStrategy(S3TConfig(**cfg), n_features, 10)
    t = time.perf_counter()
    s3t.learn(TaskData(name, Xtr, ytr, ids))
    train_s = time.perf_counter() - t
    state = s3t.state_dict()

    t = time.perf_counter()
    full = fit(Xtr, ytr, mlp_epochs, 0)
    full_s = time.perf_counter() - t
    with torch.no_grad():
        full_acc = float((full(torch.from_numpy(Xte)).argmax(1).numpy() == yte).mean())
    shard_of = np.array([slot_hash(0, s) % M for s in ids])  # the same shards as S3T's
    t = time.perf_counter()
    logits = torch.zeros(len(yte), 10)
    for j in range(M):
        rows = shard_of == j
        net = fit(Xtr[rows], ytr[rows], mlp_epochs, j + 1)
        with torch.no_grad():
            logits += torch.log_softmax(net(torch.from_numpy(Xte)), 1)
    sisa_s = time.perf_counter() - t
    sisa_acc = float((logits.argmax(1).numpy() == yte).mean())

    print(f"- one network on all data: {100 * full_acc:.1f} % ({full_s:.1f} s); SISA ensemble of {M} per-shard "
          f"networks: {100 * sisa_acc:.1f} % ({sisa_s:.1f} s); S3T training of all {M * 6 * L} stages: {train_s:.1f} s")
    checkpoints = (10, 20, 40)
    print("| B | 0 deletions | 10 | 20 | 40 | (serving shards after 10 / 20 / 40) |")
    print("|---|---|---|---|---|---|")
    forget_ms: list[float] = []
    rng = np.random.default_rng(7)
    streams = [rng.choice(len(ids), size=max(checkpoints), replace=False) for _ in range(acc_streams)]
    for B in (1, 3, 6):
        sub = restricted(state, 6, B)
        model = S3TStrategy(S3TConfig(**{**cfg, "n_sequences": B}), n_features, 10)
        model.load_state_dict(sub)
        acc0 = float((model.predict(Xte) == yte).mean())
        accs = {c: [] for c in checkpoints}
        serving = {c: [] for c in checkpoints}
        for stream in streams:
            model = S3TStrategy(S3TConfig(**{**cfg, "n_sequences": B}), n_features, 10)
            model.load_state_dict(sub)
            for i, pos in enumerate(stream, start=1):
                t = time.perf_counter()
                model.forget(ForgetSet(sample_ids=(ids[pos],)))
                forget_ms.append(1000 * (time.perf_counter() - t))
                if i in accs:
                    n_serving = sum(model.book.serving(j) for j in range(M))
                    serving[i].append(n_serving)
                    if n_serving:
                        accs[i].append(float((model.predict(Xte) == yte).mean()))
        cells = " | ".join(f"{100 * np.mean(accs[c]):.1f}" if accs[c] else "outage" for c in checkpoints)
        srv = " / ".join(f"{np.mean(serving[c]):.1f}" for c in checkpoints)
        print(f"| {B} | {100 * acc0:.1f} | {cells} | {srv} |")
    gap_sisa, gap_full = 100 * (sisa_acc - acc0), 100 * (full_acc - acc0)
    print(f"- no deletions, B = 6: SISA minus S3T {gap_sisa:+.1f} points (target <= 4: {gap_sisa <= 4}); full-data "
          f"network minus S3T {gap_full:+.1f} points (target <= 5: {gap_full <= 5})")

    # timings: a deletion, and a background retrain of one shard from its retained samples
    model = S3TStrategy(S3TConfig(**cfg), n_features, 10)
    model.load_state_dict(state)
    plans = []
    for pos in streams[0]:
        model.forget(ForgetSet(sample_ids=(ids[pos],)))
        plans = model.retrain_plan()
        if plans:
            break
    row_of = {s: i for i, s in enumerate(ids)}
    if not plans:  # no shard died on this stream: retrain shard 0 anyway, for the timing
        from lifecycle.strategies import RetrainPlan

        plans = [RetrainPlan(0, tuple(model.book.live_ids(0)))]
    plan = plans[0]
    rows = [row_of[s] for s in plan.sample_ids]
    t = time.perf_counter()
    model.retrain(plan, TaskData("retrain", Xtr[rows], ytr[rows], plan.sample_ids))
    retrain_s = time.perf_counter() - t
    ms = np.array(forget_ms)
    print(f"- deletion (deactivation) time over {len(ms)} deletions: mean {ms.mean():.2f} ms, median "
          f"{np.median(ms):.2f} ms, max {ms.max():.2f} ms (target < 50 ms: {ms.max() < 50})")
    print(f"- background retrain of shard {plan.unit} ({len(rows)} retained samples, {6 * L} stages): {retrain_s:.1f} s")
    return acc0


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=2000)
    p.add_argument("--cost-deletions", type=int, default=30000)
    p.add_argument("--acc-streams", type=int, default=5)
    p.add_argument("--epochs-digits", type=int, default=100)
    p.add_argument("--epochs-mnist", type=int, default=40)
    p.add_argument("--quick", action="store_true", help="small numbers, to check the script runs")
    args = p.parse_args(argv)
    if args.quick:
        args.streams, args.cost_deletions, args.acc_streams, args.epochs_digits, args.epochs_mnist = 100, 3000, 1, 5, 2
    torch.set_num_threads(1)
    started = time.perf_counter()
    capacity_table(args.streams)
    cost_table(args.cost_deletions)
    acc = accuracy_section("digits", args.epochs_digits, 60 if not args.quick else 3, args.acc_streams)
    accuracy_section("mnist", args.epochs_mnist, 30 if not args.quick else 2, args.acc_streams)
    print(f"\n(total {time.perf_counter() - started:.0f} s, torch threads 1; digits S3T B=6 no deletions {100 * acc:.1f} %)")


if __name__ == "__main__":
    main()
