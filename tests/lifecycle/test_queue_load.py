"""The reduced queue load run: 1,000 requests, 2 worker processes, one SIGKILL and one database restart,
on a PostgreSQL server of its own. Nothing lost, nothing applied twice, per-model order kept."""

from __future__ import annotations

import os

import pytest

from bench import queue_load
from lifecycle.testing.postgres import PostgresServer


@pytest.fixture
def own_server():
    server = PostgresServer()
    if not server.available:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL server binaries are missing; under CI=true this is a failure")
        pytest.skip("PostgreSQL server binaries are missing (Debian package 'postgresql')")
    server.start()
    yield server
    server.stop()


def test_a_killed_worker_and_a_database_restart_lose_nothing(own_server):
    # batches of 3: the kill lands on a worker holding several claims, some of whose steps already ran
    result = queue_load.run(own_server, phase="chaos", requests=1000, models=10, workers=2, kill_every=2.0,
                            max_kills=1, restart_db=True, lease=2.0, claim_batch=3, progress=lambda line: None)
    assert (result.kills, result.db_restarts) == (1, 1)
    assert result.unsubmitted == 0  # every submit got through, retried across the restart
    assert (result.lost, result.duplicated, result.out_of_order) == (0, 0, 0), result
    assert result.claims_per_s > 0 and result.p99_s >= result.p50_s
