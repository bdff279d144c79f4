"""The executor contract without Ray: strategies split their work into jobs whose results do not
depend on where or in which order they ran, and a worker hands a step whose executor was lost back
to the queue with nothing applied."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import lifecycle
from lifecycle import arrays
from lifecycle.ray_executor import RayExecutor, executor_for
from lifecycle.strategies import ForgetSet, TaskData, get
from lifecycle.strategies.executor import LOCAL, ExecutorLost
from tests.data import digits_tasks, learn_task
from tests.helpers import REPO


class Spread:
    """An executor that claims ``workers`` workers and runs the jobs last to first (as a cluster
    may finish them), returning the results in the order of the items."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.jobs = 0

    def map(self, fn, items):
        self.jobs += len(items)
        return [fn(item) for item in reversed(items)][::-1]

    def ready(self) -> bool:
        return True


class Lost:
    """An executor whose cluster goes away during the first map."""

    workers = 2

    def __init__(self) -> None:
        self.up = True

    def map(self, fn, items):
        self.up = False
        raise ExecutorLost("the cluster went away")

    def ready(self) -> bool:
        return self.up


def test_the_local_executor_maps_in_order():
    assert LOCAL.map(lambda x: x * x, [3, 1, 2]) == [9, 1, 4]
    assert LOCAL.workers == 1 and LOCAL.ready()


def test_analytic_statistics_summed_from_blocks_equal_the_serial_ones():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((5000, 16)).astype(np.float32)
    y = rng.integers(0, 10, 5000)
    spec = get("analytic")
    serial = spec.build(spec.make_config({"width": 64, "chunk_rows": 300}), 16, 10)
    spread = spec.build(spec.make_config({"width": 64, "chunk_rows": 300}), 16, 10)
    spread.executor = Spread(workers=3)
    for s in (serial, spread):
        s.learn(TaskData("t", X[:4000], y[:4000], tuple(map(str, range(4000)))))
        s.forget(ForgetSet(tuple(map(str, range(1000))), X=X[:1000], y=y[:1000]))  # refactorises too
        s.learn(TaskData("t", X[4000:], y[4000:], tuple(map(str, range(4000, 5000)))))
    # at most three blocks of whole chunks: 14 chunks of the first learn in 3, the 4 of each other update in 2
    assert spread.executor.jobs == 3 + 2 + 2
    a, b = spread.state_dict(), serial.state_dict()
    for key in ("A", "C"):
        assert np.linalg.norm(a[key] - b[key]) / np.linalg.norm(b[key]) < 1e-12, key
    assert np.linalg.norm(spread.weights - serial.weights) / np.linalg.norm(serial.weights) < 1e-10


def test_s3t_sequences_trained_as_jobs_in_any_order_give_the_same_bits():
    spec = get("s3t")
    config = spec.make_config({**spec.test_config, "retrain_mode": "inline"})
    serial, spread = spec.build(config, 64, 10), spec.build(config, 64, 10)
    spread.executor = Spread(workers=4)
    tasks = digits_tasks()[:2]
    for s in (serial, spread):
        for t in tasks:
            s.learn(TaskData(t.name, t.X[:100], t.y[:100], tuple(f"{t.name}/{i}" for i in range(100))))
        s.forget(ForgetSet(tuple(f"{tasks[0].name}/{i}" for i in range(0, 30, 3))))  # retrains inline
    assert spread.retrains_done == serial.retrains_done > 0
    assert arrays.pack(spread.state_dict()) == arrays.pack(serial.state_dict())


def test_a_lost_executor_hands_the_step_back_to_the_queue_with_nothing_applied(lc):
    lc.create_model("s3t", strategy="s3t", n_features=64, n_classes=10, config=get("s3t").test_config)
    request = learn_task(lc, "s3t", digits_tasks()[0], n=60)
    worker = lc.worker(executor=Lost())
    with pytest.raises(ExecutorLost):
        worker.drain()
    now = lc.status(request.id)
    assert (now.status, now.attempt, now.result_version) == ("queued", 1, None)
    assert lc.versions("s3t") == []
    assert worker.drain() == []  # its executor is not ready: it claims nothing
    assert lc.status(request.id).attempt == 1
    # a worker with a working executor applies it
    assert [r.status for r in lc.drain()] == ["applied"]


def test_a_step_whose_executor_is_lost_in_its_last_attempt_fails(lc):
    lc.create_model("s3t", strategy="s3t", n_features=64, n_classes=10, config=get("s3t").test_config)
    request = learn_task(lc, "s3t", digits_tasks()[0], n=60)
    [done] = lc.worker(executor=Lost(), max_attempts=1).drain()
    assert done.id == request.id and done.status == "failed"
    assert "the executor was lost" in done.error


def test_bad_executor_settings_are_refused_before_anything_runs():
    with pytest.raises(lifecycle.InvalidConfig):
        executor_for("spark")
    for bad in ({"threads": 0}, {"max_retries": -1}, {"num_cpus": 0}, {"lost_after": 0}):
        with pytest.raises(lifecycle.InvalidConfig):
            RayExecutor(**bad)
    with pytest.raises(lifecycle.InvalidConfig):
        RayExecutor("")
    assert executor_for("local") is None


def test_the_local_executor_never_imports_ray(tmp_path):
    code = """
import sys
import numpy as np
import lifecycle
lc = lifecycle.connect(sys.argv[1])
lc.create_model("m", strategy="analytic", n_features=8, n_classes=3, config={"width": 16, "chunk_rows": 50})
rng = np.random.default_rng(0)
X, y = rng.standard_normal((400, 8)).astype(np.float32), rng.integers(0, 3, 400)
lc.learn("m", task="t", X=X, y=y, probe=(X[:30], y[:30]))
assert [r.status for r in lc.drain()] == ["applied"]
assert "ray" not in sys.modules, "ray was imported"
"""
    subprocess.run([sys.executable, "-c", code, f"sqlite:///{tmp_path / 'ledger.db'}"], cwd=REPO, check=True)
