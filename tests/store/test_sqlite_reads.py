"""On SQLite, reading the ledger never waits for a writer's lock."""

from __future__ import annotations

import sqlite3
import threading

import lifecycle
from tests.data import make_model


def test_reads_go_on_while_another_connection_holds_the_write_lock(tmp_path):
    db = tmp_path / "ledger.db"
    lc = lifecycle.connect(f"sqlite:///{db}", artifacts=tmp_path / "a", keys=tmp_path / "k")
    make_model(lc, "m1")
    model = lc.ledger.model("m1")

    # a long commit elsewhere (another worker's big learn) holds the write lock
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE models SET relapse_threshold = relapse_threshold WHERE id = ?", (model.id,))
    try:
        seen: dict[str, object] = {}

        def read() -> None:
            seen["models"] = [m.name for m in lc.ledger.models()]
            seen["requests"] = lc.ledger.requests(model.id)
            seen["head"] = lc.ledger.audit_head(model.id)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        # a read that took the write lock would wait here for the writer (its busy timeout is a minute)
        reader.join(timeout=30)
        assert not reader.is_alive(), "a ledger read waited for another connection's write lock"
        assert seen["models"] == ["m1"] and seen["requests"] == [] and seen["head"][0] == 1
    finally:
        writer.execute("ROLLBACK")
        writer.close()

