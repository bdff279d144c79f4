"""Big learns: memory and time of one large learn, through the API and a worker.

For each size (default 200,000 and 1,000,000 rows x 128 float32 features),
on a throwaway PostgreSQL: a submitting process learns the rows (given as an
in-memory array, and from a ``.npy`` file), then a worker process applies
each learn (analytic, width 1,024). Each runs in a process of its own and
reports its peak resident memory (``VmHWM``) and its resident memory before
the learn, against the data's size. On SQLite, a reader process calls
``predict`` in a loop while the largest learn is submitted, and reports its
worst latency and any refusal.

    python bench/big_learn.py                  # 200k and 1M rows (a few minutes, ~3 GB of disk)
    python bench/big_learn.py --quick          # 20k rows: a CI-size run
    python bench/big_learn.py --rows 200000 --forms file --no-reader

Targets: submitter peak <= data bytes + 300 MB, worker peak <= data bytes +
600 MB at width 1,024, the reader never refused.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MB = 1024 * 1024
N_CLASSES = 10
SUBMIT_SLACK, WORKER_SLACK = 300 * MB, 600 * MB


def memory() -> dict[str, int]:
    """This process's resident memory now and at its peak, in bytes (Linux /proc)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


# ---- the child processes ---------------------------------------------------------------


class Phases:
    """Peak resident memory per phase of a step: the peak is reset (``/proc/self/clear_refs``) as a
    phase begins and read as it ends, so each phase's figure is its own, not an earlier one's."""

    def __init__(self) -> None:
        self.peaks: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.overall = 0

    def _reset(self) -> None:
        self.overall = max(self.overall, memory()["VmHWM"])
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass  # then every phase reports the peak so far

    def wrap(self, owner, name: str, phase: str) -> None:
        inner = getattr(owner, name)

        def measured(*args, **kwargs):
            self._reset()
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                peak = memory()["VmHWM"]
                self.peaks[phase] = max(self.peaks.get(phase, 0), peak)
                self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - started
                self._reset()

        setattr(owner, name, measured)


def child_submit(args: dict) -> dict:
    import lifecycle

    lc = lifecycle.connect(args["url"], artifacts=args["artifacts"], keys=args["keys"])
    Xp, yp = np.load(args["probe_X"]), np.load(args["probe_y"])
    y = np.load(args["y"])
    X = np.load(args["X"]) if args["form"] == "array" else args["X"]
    phases = Phases()
    phases.wrap(type(lc), "_stage_rows", "check, digest, stage")
    phases.wrap(lc.ledger, "submit_learn", "ledger transaction")
    before = memory()
    started = time.perf_counter()
    request = lc.learn(args["model"], task="big", X=X, y=y, probe=(Xp, yp))
    seconds = time.perf_counter() - started
    phases._reset()
    return {"request": request.id, "seconds": seconds, "rss_before": before["VmRSS"], "peak": phases.overall,
            "phases": phases.peaks, "phase_seconds": phases.seconds}


def child_worker(args: dict) -> dict:
    import lifecycle
    from lifecycle import strategies

    lc = lifecycle.connect(args["url"], artifacts=args["artifacts"], keys=args["keys"])
    model = lc.model(args["model"])
    strategies.get(model.strategy)  # imports the strategies before measuring
    worker = lc.worker()
    phases = Phases()
    phases.wrap(lc.ledger, "step_context", "ledger read")
    phases.wrap(worker.vault, "rows", "vault read")
    phases.wrap(type(strategies.get(model.strategy).build(strategies.get(model.strategy).make_config(model.config),
                                                          model.n_features, model.n_classes)), "learn",
                "strategy learn")
    before = memory()
    started = time.perf_counter()
    done = worker.drain(model.id)
    seconds = time.perf_counter() - started
    phases._reset()
    return {"statuses": [r.status for r in done], "errors": [r.error for r in done if r.error],
            "seconds": seconds, "rss_before": before["VmRSS"], "peak": phases.overall, "phases": phases.peaks,
            "phase_seconds": phases.seconds}


def child_reader(args: dict) -> dict:
    """predict in a loop until the stop file appears; the worst latency and every refusal."""
    import lifecycle

    lc = lifecycle.connect(args["url"], artifacts=args["artifacts"], keys=args["keys"])
    X = np.load(args["probe_X"])[:16]
    idle = []
    for _ in range(5):  # its latency with nothing else going on, for comparison
        started = time.perf_counter()
        lc.predict(args["model"], X)
        idle.append(time.perf_counter() - started)
    Path(args["ready"]).touch()
    worst, calls, refused, errors = 0.0, 0, 0, []
    stop = Path(args["stop"])
    while not stop.exists():
        started = time.perf_counter()
        try:
            lc.predict(args["model"], X)
        except Exception as exc:  # a refusal is what this measures
            refused += 1
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
        worst = max(worst, time.perf_counter() - started)
        calls += 1
        time.sleep(0.01)
    return {"calls": calls, "worst_seconds": worst, "refused": refused, "errors": errors[:3],
            "idle_worst_seconds": max(idle)}


CHILDREN = {"submit": child_submit, "worker": child_worker, "reader": child_reader}


def run_child(kind: str, args: dict, env: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", kind, json.dumps(args)], cwd=REPO, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} process failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- the parent --------------------------------------------------------------------------


def write_data(folder: Path, rows: int, features: int, seed: int = 0) -> dict[str, str]:
    """X (rows x features float32, written a slice at a time), y, and a probe set, as .npy files."""
    rng = np.random.default_rng(seed)
    X = np.lib.format.open_memmap(folder / "X.npy", mode="w+", dtype=np.float32, shape=(rows, features))
    centres = rng.standard_normal((N_CLASSES, features)).astype(np.float32)
    y = rng.integers(0, N_CLASSES, rows)
    for start in range(0, rows, 65536):
        stop = min(rows, start + 65536)
        X[start:stop] = centres[y[start:stop]] + rng.standard_normal((stop - start, features), dtype=np.float32)
    X.flush()
    del X
    np.save(folder / "y.npy", y)
    yp = rng.integers(0, N_CLASSES, 500)
    np.save(folder / "Xp.npy", centres[yp] + rng.standard_normal((500, features), dtype=np.float32))
    np.save(folder / "yp.npy", yp)
    return {"X": str(folder / "X.npy"), "y": str(folder / "y.npy"), "probe_X": str(folder / "Xp.npy"),
            "probe_y": str(folder / "yp.npy")}


def postgres_runs(rows: int, features: int, width: int, forms: list[str], folder: Path, files: dict,
                  env: dict, apply: bool = True) -> list[dict]:
    from lifecycle.testing.postgres import PostgresServer

    import lifecycle

    server = PostgresServer()
    if not server.available:
        print("PostgreSQL binaries not found: the PostgreSQL runs are skipped", file=sys.stderr)
        return []
    server.start()
    try:
        url = server.new_database()
        where = {"url": url, "artifacts": str(folder / "pg.artifacts"), "keys": str(folder / "pg.keys")}
        lc = lifecycle.connect(url, artifacts=where["artifacts"], keys=where["keys"])
        results = []
        for form in forms:
            model = f"big-{form}"
            lc.create_model(model, strategy="analytic", n_features=features, n_classes=N_CLASSES,
                            config={"width": width})
            submit = run_child("submit", {**where, **files, "model": model, "form": form}, env)
            work = run_child("worker", {**where, "model": model}, env) if apply else None
            if work is not None and work["statuses"] != ["applied"]:
                raise RuntimeError(f"the learn was not applied: {work}")
            results.append({"backend": "postgresql", "rows": rows, "form": form, "submit": submit, "worker": work})
        lc.ledger.engine.dispose()
        return results
    finally:
        server.stop()


def sqlite_reader_run(rows: int, features: int, width: int, folder: Path, files: dict, env: dict) -> dict:
    """The reader's worst latency while a learn of ``rows`` rows is submitted from its file, on SQLite."""
    import lifecycle

    url = f"sqlite:///{folder / 'ledger.db'}"
    where = {"url": url, "artifacts": str(folder / "ledger.db.artifacts"), "keys": str(folder / "ledger.db.keys")}
    lc = lifecycle.connect(url)
    lc.create_model("served", strategy="analytic", n_features=features, n_classes=N_CLASSES, config={"width": width})
    Xp, yp = np.load(files["probe_X"]), np.load(files["probe_y"])
    lc.learn("served", task="warm", X=Xp, y=yp, probe=(Xp, yp))
    lc.drain()
    ready, stop = folder / "reader.ready", folder / "reader.stop"
    box: dict = {}
    reader = threading.Thread(target=lambda: box.update(run_child("reader", {
        **where, "model": "served", "probe_X": files["probe_X"], "ready": str(ready), "stop": str(stop)}, env)))
    reader.start()
    while not ready.exists() and reader.is_alive():
        time.sleep(0.05)
    try:
        submit = run_child("submit", {**where, **files, "model": "served", "form": "file"}, env)
    finally:
        stop.touch()
        reader.join()
    return {"backend": "sqlite", "rows": rows, "submit": submit, "reader": box}


def report(results: list[dict], features: int, width: int) -> None:
    print(f"\nbig learns: {features} float32 features a row, analytic width {width}; memory is peak resident "
          f"(VmHWM) of each process, with its resident memory before the learn in brackets")
    print(f"{'backend':<11}{'rows':>10}{'form':>7}{'data MB':>9}{'submit s':>10}{'submit peak MB':>19}"
          f"{'target':>8}{'apply s':>9}{'worker peak MB':>19}{'target':>8}")
    for r in results:
        if r["backend"] != "postgresql":
            continue
        data = r["rows"] * features * 4
        s, w = r["submit"], r["worker"]
        applied = (f"{w['seconds']:>9.1f}{w['peak'] / MB:>10.0f} ({w['rss_before'] / MB:>4.0f})"
                   f"{_verdict(w['peak'], data + WORKER_SLACK):>8}") if w else f"{'-':>9}{'-':>19}{'-':>8}"
        print(f"{r['backend']:<11}{r['rows']:>10,}{r['form']:>7}{data / MB:>9.0f}{s['seconds']:>10.1f}"
              f"{s['peak'] / MB:>10.0f} ({s['rss_before'] / MB:>4.0f}){_verdict(s['peak'], data + SUBMIT_SLACK):>8}"
              + applied)
    for r in results:
        for who in ("submit", "worker"):
            if r.get(who) and r[who].get("phases"):
                p = r[who]
                print(f"  {r['backend']} {who}, {r['rows']:,} rows ({r.get('form', 'file')}): peak per phase "
                      + ", ".join(f"{k} {v / MB:.0f} MB in {p['phase_seconds'][k]:.1f} s"
                                  for k, v in p["phases"].items()))
    for r in results:
        if r["backend"] == "sqlite":
            reader = r["reader"]
            print(f"sqlite: a learn of {r['rows']:,} rows from its file submitted in {r['submit']['seconds']:.1f} s "
                  f"(peak {r['submit']['peak'] / MB:.0f} MB); a concurrent reader made {reader['calls']} predict "
                  f"calls, worst {reader['worst_seconds'] * 1000:.0f} ms (alone: {reader['idle_worst_seconds'] * 1000:.0f} ms), "
                  f"refused {reader['refused']} "
                  f"{'(target met)' if reader['refused'] == 0 else 'TARGET MISSED: ' + '; '.join(reader['errors'])}")


def _verdict(peak: int, target: int) -> str:
    return "met" if peak <= target else "MISSED"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--features", type=int, default=128)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--forms", nargs="+", choices=["array", "file"], default=["array", "file"])
    parser.add_argument("--quick", action="store_true", help="20,000 rows: a CI-size run")
    parser.add_argument("--no-reader", action="store_true", help="skip the SQLite reader run")
    parser.add_argument("--no-apply", action="store_true", help="submit only: no worker runs")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child[0]](json.loads(args.child[1]))))
        return 0
    rows = [20_000] if args.quick else args.rows
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    results = []
    with tempfile.TemporaryDirectory(prefix="lifecycle-big-learn-") as tmp:
        env.setdefault("LIFECYCLE_ID_KEY", str(Path(tmp) / "id-key"))
        env.setdefault("LIFECYCLE_SIGNING_KEY", str(Path(tmp) / "signing-key.pem"))
        os.environ.update({k: env[k] for k in ("LIFECYCLE_ID_KEY", "LIFECYCLE_SIGNING_KEY")})
        for n in rows:
            folder = Path(tmp) / f"rows-{n}"
            folder.mkdir()
            files = write_data(folder, n, args.features)
            results += postgres_runs(n, args.features, args.width, args.forms, folder, files, env, not args.no_apply)
            if not args.no_reader and n == max(rows):
                results.append(sqlite_reader_run(n, args.features, args.width, folder, files, env))
            print(json.dumps(results[-1]), file=sys.stderr)
    report(results, args.features, args.width)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
