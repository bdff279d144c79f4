"""The ledger's vocabulary is typed in code and enforced by the database."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

import lifecycle
from lifecycle.store.records import RequestKind, RequestStatus, Role, SampleStatus, TaskState
from tests.data import digits_tasks, learn_task, make_model


@pytest.fixture()
def learned(db_url, tmp_path):
    lc = lifecycle.connect(db_url, artifacts=tmp_path / "artifacts")
    make_model(lc, "m")
    learn_task(lc, "m", digits_tasks()[0], prefix="s", n=40)
    lc.drain()
    return lc


@pytest.mark.parametrize("table, column", [("requests", "status"), ("requests", "kind"), ("tasks", "state"),
                                           ("samples", "status"), ("evaluations", "role"),
                                           ("models", "forgotten_probes")])
def test_the_database_refuses_a_word_the_code_does_not_know(learned, table, column):
    with pytest.raises(IntegrityError, match=f"ck_{table}_{column}|CHECK constraint failed"):
        with learned.ledger.engine.begin() as conn:
            conn.execute(text(f"UPDATE {table} SET {column} = 'done'"))


def test_records_carry_enums(learned):
    request = learned.requests("m")[0]
    assert request.kind is RequestKind.LEARN and request.status is RequestStatus.APPLIED
    assert learned.tasks("m")[0].state is TaskState.LEARNED
    model = learned.model("m")
    assert {e.role for e in learned.ledger.evaluations(model.id)} == {Role.RETAINED}
    sample = next(iter(learned.ledger.samples(model.id, [learned.sample_digest("s/0")]).values()))
    assert sample.status is SampleStatus.ACTIVE
