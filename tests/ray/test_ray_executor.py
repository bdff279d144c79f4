"""Steps whose jobs run on a real two-node Ray cluster (``lifecycle serve --executor ray``).

Each Ray-backed worker is ``lifecycle serve`` in a process of its own, on a
PostgreSQL ledger; the reference is the same requests applied in this
process with the local executor. States are compared by the sha256 of their
plain bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lifecycle
from lifecycle.loading import load_strategy
from tests.data import digits_tasks, learn_task
from tests.helpers import REPO, wait_for
from tests.ray.conftest import RayCluster, free_port

pytestmark = pytest.mark.ray

S3T = {"n_shards": 2, "n_slices": 2, "continual_slices": 1, "n_sequences": 2, "hidden": 32, "rank": 8, "epochs": 5,
       "retrain_below": 64}
# slow enough (seconds a job) to kill a Ray worker, or the cluster, while one runs
SLOW_S3T = {**S3T, "epochs": 200, "batch_size": 16}


def connect(url: str, folder) -> lifecycle.Lifecycle:
    return lifecycle.connect(url, artifacts=folder / "artifacts", keys=folder / "keys")


def state_digests(lc, model: str) -> dict[int, str]:
    """Version -> sha256 of its plain state, for every version whose state is still kept."""
    return {v.version: hashlib.sha256(lc.vault.blob(v.artifact_digest)).hexdigest()
            for v in lc.versions(model) if not v.state_purged}


class RayWorker:
    """``lifecycle serve --executor ray`` in a process of its own, its output in a file."""

    def __init__(self, url: str, folder: Path, address: str, env: dict[str, str] | None = None,
                 name: str = "serve") -> None:
        self.log = folder / f"{name}.log"
        folder.mkdir(parents=True, exist_ok=True)
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lifecycle.cli", "serve", "--db", url, "--artifacts", str(folder / "artifacts"),
                 "--keys", str(folder / "keys"), "--interval", "0.1", "--executor", "ray", "--ray-address", address,
                 "--log-format", "text"],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> str:
        """Stop it (SIGTERM, as an operator would); its output."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        return self.output()


def settled(lc, model: str, count: int):
    """The model's requests once there are ``count`` and all are done."""
    requests = lc.requests(model)
    return requests if len(requests) == count and all(r.done for r in requests) else None


def test_s3t_learns_and_retrain_through_a_ray_worker_equal_the_local_ones(pg_url, postgres_server, tmp_path,
                                                                         ray_cluster):
    t0, t1 = digits_tasks()[:2]
    victims = [f"{t0.name}/{i}" for i in range(0, 36, 3)]
    local = connect(postgres_server.new_database(), tmp_path / "local")
    remote = connect(pg_url, tmp_path / "remote")
    for lc in (local, remote):
        lc.create_model("s3t", strategy="s3t", n_features=64, n_classes=10, config=S3T)

    learn_task(local, "s3t", t0, n=120)
    learn_task(local, "s3t", t1, n=120)
    local.drain()
    expected = state_digests(local, "s3t")
    local.forget("s3t", samples=victims)
    local.drain()
    expected.update(state_digests(local, "s3t"))
    assert sorted(expected) == [1, 2, 3, 4]  # two learns, the forget, its shards' retrain

    worker = RayWorker(pg_url, tmp_path / "remote", ray_cluster.address, ray_cluster.env)
    try:
        learn_task(remote, "s3t", t0, n=120)  # the first learn: every (shard, sequence) is a Ray task
        learn_task(remote, "s3t", t1, n=120)  # a continual learn: new stages of every sequence
        wait_for(lambda: settled(remote, "s3t", 2), 180, "the learns through Ray")
        got = state_digests(remote, "s3t")
        remote.forget("s3t", samples=victims)
        requests = wait_for(lambda: settled(remote, "s3t", 4), 180, "the forget and its retrain through Ray")
        got.update(state_digests(remote, "s3t"))
    finally:
        out = worker.stop()
    assert "joined Ray" in out
    assert [(r.kind, r.status, r.attempt) for r in requests] == [
        ("learn", "applied", 1), ("learn", "applied", 1), ("forget", "applied", 1), ("retrain", "applied", 1)]
    assert got == expected


def test_an_analytic_learn_of_200000_rows_through_ray_equals_the_local_statistics(pg_url, postgres_server, tmp_path,
                                                                                 ray_cluster):
    rng = np.random.default_rng(5)
    n = 200_000
    X = rng.standard_normal((n, 64)).astype(np.float32)
    y = rng.integers(0, 10, n)
    probe = (X[:200], y[:200])
    local = connect(postgres_server.new_database(), tmp_path / "local")
    remote = connect(pg_url, tmp_path / "remote")
    for lc in (local, remote):
        lc.create_model("big", strategy="analytic", n_features=64, n_classes=10, config={"width": 256})
        lc.learn("big", task="all", X=X, y=y, probe=probe)
    local.drain()
    worker = RayWorker(pg_url, tmp_path / "remote", ray_cluster.address, ray_cluster.env)
    try:
        [request] = wait_for(lambda: settled(remote, "big", 1), 180, "the learn through Ray")
    finally:
        out = worker.stop()
    assert "joined Ray" in out and "2.0 CPUs" in out  # both nodes: the rows went in two blocks
    assert request.status == "applied"

    def strategy(lc):
        m = lc.model("big")
        return load_strategy(lc.vault, m, lc.ledger.latest_version(m.id))

    a, b = strategy(remote), strategy(local)
    for key in ("A", "C"):
        gap = np.linalg.norm(a.state_dict()[key] - b.state_dict()[key]) / np.linalg.norm(b.state_dict()[key])
        assert gap < 1e-8, key
    assert np.linalg.norm(a.weights - b.weights) / np.linalg.norm(b.weights) < 1e-8
    assert a.n_samples == b.n_samples == n


def test_two_ray_workers_apply_two_models_at_once_on_one_cluster(pg_url, postgres_server, tmp_path, ray_cluster):
    t0, t1 = digits_tasks()[:2]
    local = connect(postgres_server.new_database(), tmp_path / "local")
    remote = connect(pg_url, tmp_path / "remote")
    for lc in (local, remote):
        for name, task in (("a", t0), ("b", t1)):
            lc.create_model(name, strategy="s3t", n_features=64, n_classes=10, config={**SLOW_S3T, "epochs": 60})
            learn_task(lc, name, task)
    local.drain()
    workers = [RayWorker(pg_url, tmp_path / "remote", ray_cluster.address, ray_cluster.env, name=f"serve-{i}")
               for i in range(2)]
    try:
        for name in ("a", "b"):
            wait_for(lambda name=name: settled(remote, name, 1), 300, f"model {name}'s learn")
    finally:
        outs = [w.stop() for w in workers]
    owners = set()
    for name in ("a", "b"):
        [request] = remote.requests(name)
        assert (request.status, request.attempt) == ("applied", 1)
        assert state_digests(remote, name) == state_digests(local, name)
        owners |= {e.detail["owner"] for e in remote.events(name) if e.kind == "claimed"}
    assert len(owners) == 2, outs  # one model each, their jobs on the cluster at the same time


def test_a_ray_worker_process_killed_mid_task_is_retried_and_the_request_applies_once(pg_url, postgres_server,
                                                                                      tmp_path, ray_cluster):
    t0 = digits_tasks()[0]
    local = connect(postgres_server.new_database(), tmp_path / "local")
    remote = connect(pg_url, tmp_path / "remote")
    for lc in (local, remote):
        lc.create_model("s3t", strategy="s3t", n_features=64, n_classes=10, config=SLOW_S3T)
        learn_task(lc, "s3t", t0)
    local.drain()

    worker = RayWorker(pg_url, tmp_path / "remote", ray_cluster.address, ray_cluster.env)
    try:
        victim = wait_for(lambda: ray_cluster.running("_run"), 120, "a training job to run on Ray", poll=0.1)[0]
        os.kill(victim, signal.SIGKILL)
        [request] = wait_for(lambda: settled(remote, "s3t", 1), 300, "the learn to finish")
    finally:
        out = worker.stop()
    assert (request.status, request.attempt) == ("applied", 1), out[-3000:]
    assert [v.version for v in remote.versions("s3t")] == [1]
    assert [e.kind for e in remote.events("s3t") if e.request_id == request.id].count("applied") == 1
    # the killed job ran again from its own seed: the same bits as the local run
    assert state_digests(remote, "s3t") == state_digests(local, "s3t")


def test_a_cluster_lost_mid_step_hands_the_request_back_to_the_queue(pg_url, tmp_path, ray_cluster):
    t0 = digits_tasks()[0]
    lc = connect(pg_url, tmp_path)
    lc.create_model("s3t", strategy="s3t", n_features=64, n_classes=10, config=SLOW_S3T)
    request = learn_task(lc, "s3t", t0)
    doomed = RayCluster(nodes=1).start()
    try:
        worker = RayWorker(pg_url, tmp_path, doomed.address, doomed.env)
        try:
            wait_for(lambda: doomed.running("_run"), 120, "a training job to run on Ray", poll=0.1)
            doomed.kill()
            back = wait_for(lambda: (r := lc.status(request.id)).status == "queued" and r, 90,
                            "the request to go back to the queue")
            # the worker lives on, and claims nothing while the cluster is gone
            wait_for(lambda: "claiming nothing" in worker.output(), 60, "the worker to find the cluster gone")
            assert worker.process.poll() is None and lc.status(request.id).attempt == 1
        finally:
            out = worker.stop()
    finally:
        doomed.stop()
    assert back.attempt == 1 and back.result_version is None
    assert lc.versions("s3t") == []
    assert "the executor was lost" in out and "claiming nothing" in out


def test_a_worker_whose_cluster_does_not_answer_claims_nothing(pg_url, tmp_path):
    t0 = digits_tasks()[0]
    lc = connect(pg_url, tmp_path)
    lc.create_model("s3t", strategy="s3t", n_features=64, n_classes=10, config=S3T)
    request = learn_task(lc, "s3t", t0, n=60)
    worker = RayWorker(pg_url, tmp_path, f"127.0.0.1:{free_port()}")
    try:
        wait_for(lambda: "claiming nothing" in worker.output(), 60, "the worker to find no cluster")
    finally:
        out = worker.stop()
    assert "no Ray cluster answers at 127.0.0.1" in out
    now = lc.status(request.id)
    assert (now.status, now.attempt) == ("queued", 0)
    assert lc.versions("s3t") == []


def test_bench_spreads_its_strategy_runs_over_ray_with_the_local_results(tmp_path, ray_cluster):
    def bench(out: Path, *executor: str) -> dict:
        subprocess.run([sys.executable, "-m", "lifecycle.cli", "bench", "--sequence", "L0 L1 U0", "--strategies",
                        "analytic,s3t", "--baselines", "", "--seeds", "2", "--quick", "--out", str(out), *executor],
                       cwd=REPO, env=ray_cluster.env, check=True, capture_output=True, text=True)
        runs = json.loads((out / "bench.json").read_text())["runs"]
        return {(r["method"], r["seed"]): r["acc"] for r in runs if r["method"] != "retrain"}

    local = bench(tmp_path / "local")
    spread = bench(tmp_path / "ray", "--executor", "ray", "--ray-address", ray_cluster.address)
    assert sorted(spread) == [("analytic", 0), ("analytic", 1), ("s3t", 0), ("s3t", 1)]
    assert spread == local  # each run is seeded: where it ran changes nothing
