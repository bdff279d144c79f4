from __future__ import annotations

import os

import pytest

from lifecycle.testing.postgres import PostgresServer
from tests.helpers import ManualClock


@pytest.fixture(scope="session", autouse=True)
def signing_key(tmp_path_factory):
    """Certificates in tests are signed with a throwaway key (worker subprocesses inherit it)."""
    path = tmp_path_factory.mktemp("keys") / "signing-key.pem"
    os.environ["LIFECYCLE_SIGNING_KEY"] = str(path)
    return path


@pytest.fixture(scope="session", autouse=True)
def id_key(tmp_path_factory):
    """Identifiers in tests are digested under a throwaway key (worker subprocesses inherit it)."""
    path = tmp_path_factory.mktemp("idkey") / "id-key"
    os.environ["LIFECYCLE_ID_KEY"] = str(path)
    return path


@pytest.fixture(scope="session")
def postgres_server():
    server = PostgresServer()
    if not server.available:
        message = "PostgreSQL server binaries not found (Debian package 'postgresql')"
        if os.environ.get("CI") == "true":
            pytest.fail(message + ": under CI=true the PostgreSQL tests must run")
        pytest.skip(message)
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A fresh, empty ledger database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("postgres_server").new_database()


@pytest.fixture
def pg_url(postgres_server):
    return postgres_server.new_database()


@pytest.fixture
def lc(db_url, tmp_path):
    import lifecycle

    return lifecycle.connect(db_url, artifacts=tmp_path / "artifacts", keys=tmp_path / "keys")


@pytest.fixture
def clock():
    """A ledger clock that moves only when the test advances it."""
    return ManualClock()


@pytest.fixture
def clocked_lc(db_url, tmp_path, clock):
    """Like ``lc``, with the queue's times (claims, leases, expiry, commits) read from ``clock``."""
    import lifecycle

    return lifecycle.connect(db_url, artifacts=tmp_path / "artifacts", keys=tmp_path / "keys", clock=clock)
