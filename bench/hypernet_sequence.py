"""UnCLe-style learn/forget request sequences for the ``hypernet`` strategy.

The strategy runs end to end through the ledger and worker (a temporary SQLite
ledger; lc.learn / lc.forget / lc.drain; accuracies read back from lc.history).
Beside it, on the same sequence, data and probes, four references run in
process and are evaluated the same way (task id given, argmax over the task's
classes):

- learn-only: the same hypernetwork and config on the sequence without its
  forgets (the RA target compares with it);
- retrain: the same target net (a shared trunk with one head per task)
  trained from scratch, jointly, on the retained tasks' data after every
  request: what exact unlearning would give;
- fine-tune: that net trained on each request's data in turn with no
  regulariser; a forget re-initialises the task's head (the only part a
  data-free forget can drop);
- discard: the hypernetwork, forgetting by replacing the task's embedding
  with a fresh draw and leaving the hypernetwork as it is.

Metrics, all in accuracy points; "forgotten" means forgotten at the end, as of
its last forget:
  RA       mean final accuracy over tasks retained at the end
  FA       mean final accuracy over forgotten tasks (target: chance)
  spill    mean over forgets of the summed |delta acc| of the tasks retained across it
  relapse  UnCLe's mean |acc_end - acc_right_after_forget| over forgotten tasks
  1-sided  mean max(0, acc_end - max(acc_right_after_forget, chance))
  swing    largest |delta acc| of a forgotten task between two operations
  findings relapse findings the ledger recorded (hypernet only)

    .venv/bin/python bench/hypernet_sequence.py --quick
    .venv/bin/python bench/hypernet_sequence.py --sequences pmnist-main --seeds 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a file: the checkout root, for `bench`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lifecycle  # noqa: E402
from bench.reference import Retrain  # noqa: E402
from bench.sequence import Op, parse_sequence  # noqa: E402
from bench.streams import load_stream  # noqa: E402
from lifecycle.relapse import end_of_run_relapse, relapse, spill  # noqa: E402
from lifecycle.strategies import ForgetSet, TaskData  # noqa: E402
from lifecycle.strategies.hypernet import HypernetConfig  # noqa: E402
from lifecycle.strategies.hypernet.model import HypernetStrategy  # noqa: E402

STREAMS = {"pmnist": "permuted-mnist5k", "digits": "split-digits"}  # short name: bench.streams name
SEQUENCES = {
    # name: (stream, number of tasks, operations)
    "pmnist-main": ("pmnist", 5, "L0 L1 L2 U1 L3 U0 L4"),
    "pmnist-relearn": ("pmnist", 5, "L0 L1 L2 U1 L3 L1 U0 L4"),
    "pmnist-long": ("pmnist", 10, "L0 L1 L2 L3 U0 L4 U1 L5 L0 U2 L6 U0 L7 L1 U3 L8 U1 L2 U4 L9 U2 L0 U5 U0 "
                                  "L1 U6 U1 L2"),
    "digits-main": ("digits", 5, "L0 L1 L2 U1 L3 U0 L4"),
    "digits-relearn": ("digits", 5, "L0 L1 L2 U1 L3 L1 U0 L4"),
}
DEFAULT_SEQUENCES = ["pmnist-main", "pmnist-relearn", "digits-main", "digits-relearn", "pmnist-long"]
QUICK_SEQUENCES = ["digits-main", "digits-relearn"]
# The strategy's test configuration: a small target net, few epochs.
QUICK_CONFIG = {"hidden": [32], "hnet_layers": [200, 200], "chunk_size": 500, "epochs": 10, "batch_size": 32}
METHODS = ["hypernet", "learn-only", "retrain", "fine-tune", "discard"]

TARGETS = {"dRA": 3.0, "FA-chance": 2.0, "spill": 1.0, "relapse": 2.0, "forget_s": 2.0}


def shares(ops: tuple[Op, ...]) -> list[tuple[int, int]]:
    """Per step, the share of its task's training data a learn uses and how many shares there are:
    a task learned k times gets k disjoint shares. Forgets get (-1, 0)."""
    total = Counter(op.task for op in ops if op.learns)
    done: Counter[int] = Counter()
    out = []
    for op in ops:
        if op.learns:
            out.append((done[op.task], total[op.task]))
            done[op.task] += 1
        else:
            out.append((-1, 0))
    return out


def learn_data(task, share: tuple[int, int]):
    part, n_shares = share
    rows = np.array_split(np.arange(len(task.y)), n_shares)[part]
    ids = tuple(f"{task.name}/{part}/{i}" for i in rows)
    return task.X[rows], task.y[rows], ids


# ---------------------------------------------------------------- references


class DiscardEmbedding(HypernetStrategy):
    """Forgets by throwing the task's embedding away; the hypernetwork is untouched.

    The task still has to be evaluated, so its slot gets a fresh draw from the
    distribution new embeddings start from.
    """

    def forget(self, forget_set: ForgetSet) -> None:
        index = self.embedding_index(forget_set.task)
        generator = torch.Generator().manual_seed(10_000 + self._n_ops)
        fresh = torch.randn(self.config.task_emb_dim, generator=generator) * self.config.emb_init_var ** 0.5
        self._embeddings[index] = fresh.to(self._embeddings[index].device)
        self._active[index] = False
        self._n_ops += 1


class MultiHeadNet:
    """The target MLP with one head per task (masked to the task's classes), trained by plain Adam."""

    def __init__(self, config: HypernetConfig, n_features: int, n_classes: int, n_tasks: int, seed: int) -> None:
        self.config, self.n_classes, self.seed = config, n_classes, seed
        self.n_features, self.n_tasks = n_features, n_tasks
        self.classes: dict[int, np.ndarray] = {}
        self.reset()

    def reset(self) -> None:
        torch.manual_seed(self.seed)
        layers, width = [], self.n_features
        for h in self.config.hidden:
            layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
            width = h
        self.trunk = torch.nn.Sequential(*layers)
        self.heads = torch.nn.ModuleList(torch.nn.Linear(width, self.n_classes) for _ in range(self.n_tasks))

    def reset_head(self, task: int) -> None:
        torch.manual_seed(self.seed + 1000 + task)
        self.heads[task].reset_parameters()

    def fit(self, parts: list[tuple[int, np.ndarray, np.ndarray]]) -> None:
        """Adam over the given (task, X, y) parts together, config.epochs passes."""
        params = [*self.trunk.parameters(), *self.heads.parameters()]
        optimiser = torch.optim.Adam(params, lr=self.config.lr)
        tasks = np.concatenate([np.full(len(y), t) for t, _, y in parts])
        X = torch.as_tensor(np.concatenate([X for _, X, _ in parts]))
        y = np.concatenate([y for _, _, y in parts])
        for t in set(tasks.tolist()):
            self.classes[t] = np.union1d(self.classes.get(t, []), y[tasks == t]).astype(np.int64)
        generator = torch.Generator().manual_seed(self.seed)
        for _ in range(self.config.epochs):
            order = torch.randperm(len(y), generator=generator).numpy()
            for start in range(0, len(y), self.config.batch_size):
                rows = order[start:start + self.config.batch_size]
                features = self.trunk(X[rows])
                loss = 0.0
                for t in np.unique(tasks[rows]):
                    mine = tasks[rows] == t
                    heads = self.classes[t]
                    logits = self.heads[t](features[torch.as_tensor(mine)])[:, torch.as_tensor(heads)]
                    local = torch.as_tensor(np.searchsorted(heads, y[rows][mine]))
                    loss = loss + torch.nn.functional.cross_entropy(logits, local, reduction="sum")
                optimiser.zero_grad()
                (loss / len(rows)).backward()
                optimiser.step()

    def predict(self, X: np.ndarray, task: int) -> np.ndarray:
        heads = self.classes[task]
        with torch.no_grad():
            logits = self.heads[task](self.trunk(torch.as_tensor(X)))[:, torch.as_tensor(heads)]
        return heads[logits.argmax(dim=1).numpy()]


def retrain(net: MultiHeadNet) -> Retrain:
    """Exact unlearning: the net retrained from scratch, jointly, on the retained tasks after every request."""

    def refit(parts):
        # The head of a forgotten task must not keep what it learned either.
        retained = {task for task, _, _ in parts}
        kept = {t: classes for t, classes in net.classes.items() if t not in retained}
        net.reset()
        net.classes = kept
        if parts:
            net.fit(sorted(parts, key=lambda part: part[0]))
        return net

    return Retrain(refit)


class FineTune:
    def __init__(self, net: MultiHeadNet) -> None:
        self.net = net

    def learn(self, task: int, X, y) -> None:
        self.net.fit([(task, X, y)])

    def forget(self, task: int) -> None:
        self.net.reset_head(task)

    def predict(self, X, task: int) -> np.ndarray:
        return self.net.predict(X, task)


class OnHypernet:
    """Adapts a hypernet strategy (or a subclass) to the in-process runner."""

    def __init__(self, strategy: HypernetStrategy, names: list[str]) -> None:
        self.strategy, self.names = strategy, names

    def learn(self, task: int, X, y, ids=()) -> None:
        self.strategy.learn(TaskData(self.names[task], X, y, ids))

    def forget(self, task: int) -> None:
        self.strategy.forget(ForgetSet((), task=self.names[task]))

    def predict(self, X, task: int) -> np.ndarray:
        return self.strategy.predict(X, task=self.names[task])


# ---------------------------------------------------------------- runners


@dataclass
class Run:
    acc: list[dict[int, float]]  # after each operation: accuracy of every task seen so far
    learn_s: list[float]
    forget_s: list[float]
    findings: int | None = None


def run_ledger(stream, ops: tuple[Op, ...], config: dict, n_classes: int, workdir: str) -> Run:
    # A throwaway key: bench certificates must not be signed with the operator's.
    lc = lifecycle.connect(f"sqlite:///{os.path.join(workdir, 'ledger.db')}",
                           signing_key=os.path.join(workdir, "signing-key.pem"))
    lc.create_model("bench", strategy="hypernet", n_features=stream[0].X.shape[1], n_classes=n_classes, config=config)
    index = {t.name: i for i, t in enumerate(stream)}
    run = Run([], [], [])
    for op, share in zip(ops, shares(ops)):
        task = stream[op.task]
        if op.learns:
            X, y, ids = learn_data(task, share)
            request = lc.learn("bench", task=task.name, X=X, y=y, sample_ids=list(ids),
                               probe=(task.X_probe, task.y_probe))
        else:
            request = lc.forget("bench", task=task.name)
        lc.drain("bench")
        done = lc.status(request.id)
        if done.status != "applied":
            raise RuntimeError(f"{op} ended {done.status}: {done.error}")
        (run.learn_s if op.learns else run.forget_s).append(done.step_seconds)
        step = next(s for s in lc.history("bench") if s.request.id == request.id)
        run.acc.append({index[e.task]: e.accuracy for e in step.evaluations})
    run.findings = len(lc.relapse("bench"))
    return run


def run_in_process(method, stream, ops: tuple[Op, ...], skip_forgets: bool = False) -> Run:
    seen: list[int] = []
    run = Run([], [], [])
    for op, share in zip(ops, shares(ops)):
        if not op.learns and skip_forgets:
            continue
        started = time.perf_counter()
        if op.learns:
            method.learn(op.task, *learn_data(stream[op.task], share)[:2])
            run.learn_s.append(time.perf_counter() - started)
            seen += [op.task] if op.task not in seen else []
        else:
            method.forget(op.task)
            run.forget_s.append(time.perf_counter() - started)
        run.acc.append({t: float(np.mean(method.predict(stream[t].X_probe, t) == stream[t].y_probe)) for t in seen})
    return run


# ---------------------------------------------------------------- metrics


def metrics(run: Run, ops: tuple[Op, ...], chance: float) -> dict[str, float]:
    """RA, FA, spill, relapse (paper and one-sided) and swing, in accuracy points."""
    end = run.acc[-1]
    state: dict[int, str] = {}
    forgot_at: dict[int, int] = {}
    spills, swing = [], 0.0
    for k, op in enumerate(ops):
        # Swing: tasks forgotten before this operation and still forgotten after it.
        for t, s in state.items():
            if s == "forgotten" and t != op.task:
                swing = max(swing, abs(run.acc[k][t] - run.acc[k - 1][t]))
        if not op.learns:
            before = {t: a for t, a in run.acc[k - 1].items() if state.get(t) == "active" and t != op.task}
            spills.append(spill(before, run.acc[k]))
            forgot_at[op.task] = k
        state[op.task] = "active" if op.learns else "forgotten"
    retained = [t for t, s in state.items() if s == "active"]
    forgotten = [t for t, s in state.items() if s == "forgotten"]
    after = {t: run.acc[forgot_at[t]][t] for t in forgotten}
    return {
        "RA": 100 * float(np.mean([end[t] for t in retained])) if retained else float("nan"),
        "FA": 100 * float(np.mean([end[t] for t in forgotten])) if forgotten else float("nan"),
        "spill": 100 * float(np.mean(spills)) if spills else float("nan"),
        "relapse": 100 * float(np.mean([end_of_run_relapse(end[t], after[t]) for t in forgotten] or [0.0])),
        "1-sided": 100 * float(np.mean([relapse(end[t], after[t], chance) for t in forgotten] or [0.0])),
        "swing": 100 * swing,
        "learn s": float(np.mean(run.learn_s)) if run.learn_s else float("nan"),
        "forget s": float(np.mean(run.forget_s)) if run.forget_s else float("nan"),
        "findings": float("nan") if run.findings is None else float(run.findings),
    }


def learn_only_ra(run: Run, ops: tuple[Op, ...]) -> float:
    """The learn-only run's final accuracy on the tasks the full sequence retains at the end."""
    state = {}
    for op in ops:
        state[op.task] = "active" if op.learns else "forgotten"
    return 100 * float(np.mean([run.acc[-1][t] for t, s in state.items() if s == "active"]))


# ---------------------------------------------------------------- driver


def run_sequence(name: str, seeds: list[int], config: dict) -> None:
    kind, n_tasks, text = SEQUENCES[name]
    ops = parse_sequence(text, n_tasks)
    per_method: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
    tables: list[list[dict[int, float]]] = []
    for seed in seeds:
        stream, n_classes = load_stream(STREAMS[kind], n_tasks, seed), 10
        chance = 1.0 / len(np.unique(stream[0].y))
        names = [t.name for t in stream]
        cfg = {**config, "seed": seed}
        hcfg = HypernetConfig(**cfg)
        n_features = stream[0].X.shape[1]
        with tempfile.TemporaryDirectory() as workdir:
            ledger_run = run_ledger(stream, ops, cfg, n_classes, workdir)
        tables.append(ledger_run.acc)
        per_method["hypernet"].append(metrics(ledger_run, ops, chance))
        learn_only = run_in_process(OnHypernet(HypernetStrategy(hcfg, n_features, n_classes), names), stream, ops,
                                    skip_forgets=True)
        per_method["learn-only"].append({"RA": learn_only_ra(learn_only, ops),
                                         "learn s": float(np.mean(learn_only.learn_s))})
        net = lambda: MultiHeadNet(hcfg, n_features, n_classes, n_tasks, seed)  # noqa: E731
        for method, runner in (
            ("retrain", retrain(net())),
            ("fine-tune", FineTune(net())),
            ("discard", OnHypernet(DiscardEmbedding(hcfg, n_features, n_classes), names)),
        ):
            per_method[method].append(metrics(run_in_process(runner, stream, ops), ops, chance))
        hyper = per_method["hypernet"][-1]
        print(f"  seed {seed}: hypernet RA {hyper['RA']:.1f} FA {hyper['FA']:.1f} spill {hyper['spill']:.2f} "
              f"relapse {hyper['relapse']:.2f} (learn-only RA {per_method['learn-only'][-1]['RA']:.1f})", flush=True)

    print_sequence(name, kind, n_tasks, text, ops, tables, per_method, chance, len(seeds))


def print_sequence(name, kind, n_tasks, text, ops, tables, per_method, chance, n_seeds) -> None:
    print(f"\n=== {name}: {kind}, {n_tasks} tasks, chance {100 * chance:.0f}%, {n_seeds} seed(s) ===")
    print(f"sequence: {text}")
    print("hypernet accuracy (%) after each operation, mean over seeds; (x) = forgotten at that point")
    header = f"{'op':>6} " + " ".join(f"{'T' + str(t):>7}" for t in range(n_tasks))
    print(header)
    state: dict[int, str] = {}
    for k, op in enumerate(ops):
        state[op.task] = "active" if op.learns else "forgotten"
        cells = []
        for t in range(n_tasks):
            if t not in state:
                cells.append(f"{'':>7}")
                continue
            value = 100 * np.mean([table[k][t] for table in tables])
            cells.append(f"{f'({value:.1f})' if state[t] == 'forgotten' else f'{value:.1f}':>7}")
        print(f"{str(op):>6} " + " ".join(cells))

    columns = ["RA", "FA", "spill", "relapse", "1-sided", "swing", "learn s", "forget s", "findings"]
    print(f"\n{'method':<11}" + "".join(f"{c:>9}" for c in columns))
    for method in METHODS:
        rows = per_method[method]
        cells = []
        for c in columns:
            values = [r[c] for r in rows if c in r]
            cells.append(f"{np.mean(values):>9.2f}" if values and not np.isnan(np.mean(values)) else f"{'-':>9}")
        print(f"{method:<11}" + "".join(cells))

    hyper = {c: float(np.mean([r[c] for r in per_method["hypernet"]])) for c in per_method["hypernet"][0]}
    d_ra = hyper["RA"] - float(np.mean([r["RA"] for r in per_method["learn-only"]]))
    checks = [
        (f"RA within {TARGETS['dRA']:.0f} points of learn-only", abs(d_ra) <= TARGETS["dRA"], f"{d_ra:+.2f}"),
        (f"FA within {TARGETS['FA-chance']:.0f} points of chance", abs(hyper["FA"] - 100 * chance)
         <= TARGETS["FA-chance"], f"{hyper['FA']:.2f} vs {100 * chance:.0f}"),
        (f"mean spill <= {TARGETS['spill']:.0f} point", hyper["spill"] <= TARGETS["spill"], f"{hyper['spill']:.2f}"),
        (f"mean relapse <= {TARGETS['relapse']:.0f} points", hyper["relapse"] <= TARGETS["relapse"],
         f"{hyper['relapse']:.2f}"),
        (f"forget step < {TARGETS['forget_s']:.0f} s", hyper["forget s"] < TARGETS["forget_s"],
         f"{hyper['forget s']:.2f} s"),
    ]
    print("\ntargets (set for permuted MNIST-5k):" if kind == "pmnist" else
          "\ntargets (set for permuted MNIST-5k; shown for reference):")
    for label, ok, value in checks:
        print(f"  {'met   ' if ok else 'MISSED'} {label}: {value}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", nargs="+", choices=sorted(SEQUENCES), help="default: all (quick: digits)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 3; quick: 1)")
    parser.add_argument("--quick", action="store_true", help="digits sequences, small nets, one seed: a smoke run")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads; 1 gives timings that survive a shared machine (default: torch's)")
    parser.add_argument("--config", type=json.loads, default={},
                        help='JSON object of HypernetConfig overrides, e.g. \'{"epochs": 15}\'')
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    sequences = args.sequences or (QUICK_SEQUENCES if args.quick else DEFAULT_SEQUENCES)
    seeds = list(range(args.seeds if args.seeds is not None else (1 if args.quick else 3)))
    config = {**(QUICK_CONFIG if args.quick else {}), **args.config}

    print("hypernet (UnCLe-style) request sequences through the ledger and worker")
    print(f"config: {HypernetConfig(**config)}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads")
    for name in sequences:
        started = time.perf_counter()
        print(f"\n{name} ...", flush=True)
        run_sequence(name, seeds, config)
        print(f"({name}: {time.perf_counter() - started:.0f} s wall)", flush=True)


if __name__ == "__main__":
    main()
