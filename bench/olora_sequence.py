"""Sequence benchmark of the ``olora`` strategy (issue 7) on split digits and split MNIST-5k.

For each stream it runs the sequence "L0 L1 L2 U1 L3 U0 L4" (Lk: learn task k,
Uk: forget task k) through
- olora (combined detector), printing after each operation the accuracy on
  every task, the gate's AUROC / recall / false-activation rate (per forget
  detector, positives = its task's probes, negatives = every other task's
  probes; the AUROC is of the detector's score alone, recall and false
  activations are of the deployed gate, which also weighs the router's
  posterior of the forgotten task) and the time of the request;
- olora in Mahalanobis-only detector mode (state size, accuracy, gate);
- a retrain-from-scratch reference (an MLP trained jointly on the retained tasks);
- naive fine-tuning (one MLP fine-tuned on each learn; a forget fine-tunes it on
  the forget data with random wrong labels, ungated).
At the end: RA, FA, spill, relapse, and the relearning probe (a few full-batch
Adam steps on 20 forgotten training samples, on a copy) for olora, the
retrain reference, ``analytic`` and ``hypernet``, as a diagnostic.

    .venv/bin/python -m bench.olora_sequence [--streams digits mnist] [--seed 0]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a file: the checkout root, for `bench`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.reference import Retrain, accuracy, fit_jointly, mlp, train  # noqa: E402
from bench.sequence import parse_sequence  # noqa: E402
from bench.streams import load_stream  # noqa: E402
from lifecycle import strategies  # noqa: E402
from lifecycle.strategies import ForgetSet, TaskData  # noqa: E402
from lifecycle.strategies.olora.detector import roc_auc  # noqa: E402

SEQUENCE = "L0 L1 L2 U1 L3 U0 L4"
OPS = parse_sequence(SEQUENCE, 5)
STREAMS = {"digits": "split-digits", "mnist": "split-mnist5k"}  # --streams name: bench.streams name
RELEARN_STEPS = (0, 3, 5, 10, 15, 20, 30, 50)
RELEARN_SAMPLES = 20
STREAM_CONFIG = {
    # MNIST-5k: a random base's features leave the gate far below target; the
    # base is pretrained on scikit-learn's bundled 8x8 digits (another data set).
    "digits": {},
    "mnist": {"base": "digits"},
}


# ----------------------------------------------------------------------- baselines


class Naive:
    """One MLP fine-tuned on each learn; a forget fine-tunes it on random wrong labels (ungated)."""

    def __init__(self, d, hidden, epochs, seed):
        self.net, self.epochs, self.seed, self.seen, self.gone = mlp(d, hidden, seed), epochs, seed, set(), set()

    def apply(self, op, t):
        classes = set(np.unique(t.y).tolist())
        if op.learns:
            self.seen |= classes
            self.gone -= classes
            train(self.net, t.X, t.y, self.epochs, seed=self.seed)
        else:
            self.gone |= classes
            wrong = np.array(sorted(self.seen - self.gone) or sorted(set(range(10)) - classes))
            rng = np.random.default_rng(self.seed)
            train(self.net, t.X, wrong[rng.integers(len(wrong), size=len(t.y))], 8, lr=5e-3, batch_size=32,
                  seed=self.seed)

    def acc(self, t):
        return accuracy(self.net, t.X_probe, t.y_probe)


# ---------------------------------------------------------------------- the olora run


def run_olora(tasks, d, config, *, verbose: bool):
    spec = strategies.get("olora")
    s = spec.build(spec.make_config(config), d, 10)
    rows, forgotten = [], []
    for op in OPS:
        k, t = op.task, tasks[op.task]
        start = time.perf_counter()
        if op.learns:
            s.learn(TaskData(t.name, t.X, t.y, tuple(f"{t.name}/{i}" for i in range(len(t.y)))))
            forgotten = [f for f in forgotten if f != k]
        else:
            s.forget(ForgetSet(tuple(f"{t.name}/{i}" for i in range(len(t.y))), task=t.name, X=t.X, y=t.y))
            forgotten.append(k)
        seconds = time.perf_counter() - start
        learned = sorted({done.task for done in OPS[: len(rows) + 1] if done.learns})
        accs = {i: float(np.mean(s.predict(tasks[i].X_probe) == tasks[i].y_probe)) for i in learned}
        gates = []
        retained = [i for i in learned if i not in forgotten]
        for j, f in enumerate(forgotten):
            pos = s.gate_scores(tasks[f].X_probe, which=j)
            neg = np.concatenate([s.gate_scores(tasks[i].X_probe, which=j) for i in range(len(tasks)) if i != f])
            recall = float(np.mean(s.gate(tasks[f].X_probe) >= 0.5))
            far = float(np.mean(s.gate(np.concatenate([tasks[i].X_probe for i in retained])) >= 0.5)) \
                if retained else float("nan")
            gates.append((f, roc_auc(pos, neg), recall, far))
        train_acc = {f: float(np.mean(s.predict(tasks[f].X) == tasks[f].y))
                     for f in forgotten if not op.learns and f == k}
        rows.append({"op": str(op), "acc": accs, "forgotten": list(forgotten), "gates": gates,
                     "seconds": seconds, "train_acc": train_acc})
        if verbose:
            acc_text = " ".join(f"{tasks[i].name}:{100 * a:5.1f}{'*' if i in forgotten else ' '}" for i, a in accs.items())
            gate_text = "; ".join(f"gate[{tasks[f].name}] auroc {a:.3f} recall {100 * r:.1f} FAR {100 * fa:.1f}"
                                  for f, a, r, fa in gates)
            extra = "".join(f" forgotten-train-acc {100 * v:.1f}" for v in train_acc.values())
            print(f"  {str(op):<3} {seconds:6.2f}s  {acc_text}  {gate_text}{extra}", flush=True)
    return s, rows


def summarise(rows, tasks):
    """RA, FA, spill per forget, drop per forget, end-of-run relapse."""
    final = rows[-1]
    retained = [i for i in final["acc"] if i not in final["forgotten"]]
    ra = float(np.mean([final["acc"][i] for i in retained]))
    fa = float(np.mean([final["acc"][i] for i in final["forgotten"]])) if final["forgotten"] else float("nan")
    spills, drops, relapse = [], [], {}
    for prev, row in zip(rows, rows[1:]):
        if row["op"].startswith("U"):
            f = int(row["op"][1:])
            kept = [i for i in prev["acc"] if i in row["acc"] and i not in row["forgotten"]]
            spills.append(sum(abs(row["acc"][i] - prev["acc"][i]) for i in kept))
            drops.append(max(prev["acc"][i] - row["acc"][i] for i in kept))
            relapse[f] = (row["acc"][f], final["acc"].get(f))
    end_relapse = {f: abs(b - a) for f, (a, b) in relapse.items() if f in final["forgotten"]}
    return ra, fa, spills, drops, end_relapse


# ------------------------------------------------------------------------ relearning


def steps_to(curve, level):
    for step, value in curve:
        if value >= level:
            return step
    return None


def relearn_curve(forward, params, X_few, y_few, X_probe, y_probe, lr=1e-3):
    """Full-batch Adam on the few forgotten samples; probe accuracy at RELEARN_STEPS."""
    opt = torch.optim.Adam(params, lr=lr)
    X_t, y_t, P = torch.as_tensor(X_few), torch.as_tensor(y_few), torch.as_tensor(X_probe)
    curve, step = [], 0
    for target in RELEARN_STEPS:
        while step < target:
            loss = torch.nn.functional.cross_entropy(forward(X_t), y_t)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        with torch.no_grad():
            curve.append((target, float(np.mean(forward(P).argmax(1).numpy() == y_probe))))
    return curve


def olora_relearn(s, ft, X_few, y_few):
    c = copy.deepcopy(s)
    params = []
    for W, b in c._base:
        params += [W.requires_grad_(True), b.requires_grad_(True)]
    for a in c._learn + c._forgets:
        params += [p.requires_grad_(True) for p in a["A"] + a["B"]]
    cache = {}

    def forward(X_t):
        key = (X_t.data_ptr(), len(X_t))
        if key not in cache:  # gate and routing as the original detector and router computed them
            with torch.no_grad():
                feats = s._base_features_t(X_t)
                route = s._route_weights(feats)
                gate = torch.as_tensor(s._gate_np(feats, route), dtype=torch.float32)
            cache[key] = (route, gate)
        route, gate = cache[key]
        return c._forward(X_t, c._learn_terms(route), c._forgets, gate=gate)

    return relearn_curve(forward, params, X_few, y_few, ft.X_probe, ft.y_probe)


def analytic_relearn(tasks, f, d, X_few, y_few, seed):
    spec = strategies.get("analytic")
    a = spec.build(spec.make_config({"seed": seed} if "seed" in spec.config_class.__dataclass_fields__ else {}), d, 10)
    for t in tasks:
        a.learn(TaskData(t.name, t.X, t.y, tuple(f"{t.name}/{i}" for i in range(len(t.y)))))
    ft = tasks[f]
    a.forget(ForgetSet(tuple(f"{ft.name}/{i}" for i in range(len(ft.y))), task=None, X=ft.X, y=ft.y,
                       tasks=(ft.name,) * len(ft.y)))
    W_rand = torch.tensor(a._W_rand, dtype=torch.float32, requires_grad=True)
    b = torch.tensor(a._b, dtype=torch.float32, requires_grad=True)
    W = torch.tensor(a.weights, dtype=torch.float32, requires_grad=True)

    def forward(X_t):
        return torch.relu(X_t @ W_rand + b) @ W

    return relearn_curve(forward, [W_rand, b, W], X_few, y_few, ft.X_probe, ft.y_probe)


def hypernet_relearn(tasks, f, d, X_few, y_few, seed):
    spec = strategies.get("hypernet")
    h = spec.build(spec.make_config({"seed": seed, "epochs": 10}), d, 10)
    for t in tasks:
        h.learn(TaskData(t.name, t.X, t.y, tuple(f"{t.name}/{i}" for i in range(len(t.y)))))
    ft = tasks[f]
    h.forget(ForgetSet((), task=ft.name))
    index = h._index_of(ft.name)
    heads = torch.as_tensor(np.flatnonzero(h._classes[index]))
    with torch.no_grad():
        weights = [w.detach().clone().requires_grad_(True) for w in h._hnet(cond_input=h._embeddings[index][None])]
    full = torch.full((10,), -1e9)

    def forward(X_t):  # the task's generated network, fine-tuned directly; task id given (chance 50 %)
        out = full.expand(len(X_t), 10).clone()
        out[:, heads] = h._mnet(X_t, weights=weights)[:, heads]
        return out

    return relearn_curve(forward, weights, X_few, y_few, ft.X_probe, ft.y_probe)


def retrain_relearn(tasks, f, d, hidden, epochs, X_few, y_few, seed):
    net = fit_jointly([(i, t.X, t.y) for i, t in enumerate(tasks) if i != f], d, hidden, epochs, seed)
    return relearn_curve(net, list(net.parameters()), X_few, y_few, tasks[f].X_probe, tasks[f].y_probe)


# ------------------------------------------------------------------------------ main


def state_mb(s) -> float:
    return sum(v.nbytes for v in s.state_dict().values()) / 1e6


def run_stream(name, seed, relearn_baselines: bool):
    tasks = load_stream(STREAMS[name], 5, seed)
    d = tasks[0].X.shape[1]
    hidden = (256, 256)
    ref_epochs = 60 if name == "digits" else 20
    config = {**STREAM_CONFIG[name], "seed": seed}
    print(f"\n=== {name}: {SEQUENCE}  (olora config {config}; * = forgotten)", flush=True)
    t0 = time.perf_counter()
    s, rows = run_olora(tasks, d, config, verbose=True)
    print(f"  olora total {time.perf_counter() - t0:.1f}s, state {state_mb(s):.2f} MB, "
          f"learn-adapter overlap (max per layer) {[f'{v:.1e}' for v in s.adapter_overlaps('learn')]}, "
          f"forget-adapter overlap {[f'{v:.1e}' for v in s.adapter_overlaps('forget')]}")

    t0 = time.perf_counter()
    m, mrows = run_olora(tasks, d, {**config, "detector": "mahalanobis"}, verbose=False)
    m_seconds = time.perf_counter() - t0
    retrain = Retrain(lambda parts: fit_jointly(parts, d, hidden, ref_epochs, seed))
    naive = Naive(d, hidden, 10, seed)
    ref_rows = {"retrain": [], "naive-ft": []}
    for j, op in enumerate(OPS):
        t = tasks[op.task]
        if op.learns:
            retrain.learn(op.task, t.X, t.y)
        else:
            retrain.forget(op.task)
        ref_rows["retrain"].append({i: accuracy(retrain.model, tasks[i].X_probe, tasks[i].y_probe)
                                    for i in rows[j]["acc"]})
        naive.apply(op, t)
        ref_rows["naive-ft"].append({i: naive.acc(tasks[i]) for i in rows[j]["acc"]})
    print("  side by side (accuracy % per task after each op: olora | olora-maha | retrain | naive-ft)")
    for j, row in enumerate(rows):
        def fmt(accs):
            return " ".join(f"{100 * accs[i]:5.1f}" for i in sorted(accs))
        print(f"  {row['op']:<4} {fmt(row['acc'])} | {fmt(mrows[j]['acc'])} | {fmt(ref_rows['retrain'][j])} | "
              f"{fmt(ref_rows['naive-ft'][j])}")

    results = {}
    for label, rr in (("olora", rows), ("olora-maha", mrows),
                      ("retrain", [{**r, "acc": a} for r, a in zip(rows, ref_rows["retrain"])]),
                      ("naive-ft", [{**r, "acc": a} for r, a in zip(rows, ref_rows["naive-ft"])])):
        results[label] = summarise(rr, tasks)
        ra, fa, spills, drops, end_relapse = results[label]
        print(f"  {label:<10} RA {100 * ra:5.1f}  FA {100 * fa:5.1f}  spill per forget "
              f"{[round(100 * x, 1) for x in spills]}  max retained drop per forget {[round(100 * x, 1) for x in drops]}"
              f"  end-of-run relapse {[(tasks[f].name, round(100 * v, 1)) for f, v in end_relapse.items()]}")
    for label, rr in (("olora", rows), ("olora-maha", mrows)):
        g = [x for r in rr for x in r["gates"]]
        last = rr[-1]["gates"]
        print(f"  {label:<10} gate over all ops: AUROC min {min(x[1] for x in g):.3f}, recall min "
              f"{100 * min(x[2] for x in g):.1f}, FAR max {100 * max(x[3] for x in g):.1f}; at end "
              + "; ".join(f"{tasks[f].name}: {a:.3f}/{100 * r:.1f}/{100 * fa:.1f}" for f, a, r, fa in last))
    learn_t = [sec for kind, sec in ((r["op"][0], r["seconds"]) for r in rows) if kind == "L"]
    forget_t = [sec for kind, sec in ((r["op"][0], r["seconds"]) for r in rows) if kind == "U"]
    print(f"  time per request: learn {np.mean(learn_t):.2f}s, forget {np.mean(forget_t):.2f}s; "
          f"Mahalanobis-only: state {state_mb(m):.2f} MB vs {state_mb(s):.2f} MB combined, whole run {m_seconds:.1f}s")

    # relearning probe: the first forgotten task (U1), forget-only, lr 1e-3, 20 samples
    f = OPS[3].task
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(tasks[f].y), RELEARN_SAMPLES, replace=False)
    X_few, y_few = tasks[f].X[pick], tasks[f].y[pick]
    probe_s = copy.deepcopy(s)
    curves = {"olora": olora_relearn(probe_s, tasks[f], X_few, y_few),
              "retrain": retrain_relearn(tasks, f, d, hidden, ref_epochs, X_few, y_few, seed)}
    if relearn_baselines:
        curves["analytic"] = analytic_relearn(tasks, f, d, X_few, y_few, seed)
        curves["hypernet (task id, chance 50%)"] = hypernet_relearn(tasks, f, d, X_few, y_few, seed)
    print(f"  relearning probe on {tasks[f].name} ({RELEARN_SAMPLES} samples, full-batch Adam 1e-3); accuracy % at steps "
          f"{list(RELEARN_STEPS)}; steps to 50% / 90%:")
    for label, curve in curves.items():
        print(f"    {label:<32} {[round(100 * v) for _, v in curve]}  {steps_to(curve, 0.5)} / {steps_to(curve, 0.9)}")
    # dropping the unlearning adapters (anyone with the weights can)
    dropped = copy.deepcopy(s)
    dropped._forgets = []
    print(f"    olora with its unlearning adapters dropped: {tasks[f].name} "
          f"{100 * np.mean(dropped.predict(tasks[f].X_probe) == tasks[f].y_probe):.1f}% at step 0")
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", nargs="+", default=["digits", "mnist"], choices=["digits", "mnist"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-baseline-relearn", action="store_true", help="skip analytic and hypernet in the probe")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    for name in args.streams:
        run_stream(name, args.seed, not args.no_baseline_relearn)
    print(f"\ntotal {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
