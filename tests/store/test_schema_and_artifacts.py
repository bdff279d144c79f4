from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import lifecycle
from lifecycle.migrations import migrate
from lifecycle.store.artifacts import FolderArtifactStore
from lifecycle.store.engine import make_engine
from lifecycle.store.errors import ArtifactCorrupt, ArtifactMissing, SchemaOutOfDate
from lifecycle.store.schema import Base


def test_migrations_create_exactly_the_declared_schema(db_url):
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    assert migrate.current_revision(engine) == migrate.head_revision()


def test_no_ledger_is_created_by_a_reader_and_the_error_names_the_upgrade_command(db_url, tmp_path):
    with pytest.raises(lifecycle.NoLedger, match=r"there is no ledger at .*create one with: lifecycle db upgrade --db "):
        lifecycle.connect(db_url, artifacts=tmp_path, create=False)
    assert not (tmp_path / "ledger.db").exists()
    migrate.upgrade(make_engine(db_url))
    lifecycle.connect(db_url, artifacts=tmp_path, create=False)


def test_a_ledger_behind_head_is_refused(db_url, tmp_path):
    lifecycle.connect(db_url, artifacts=tmp_path)  # creates the schema at head
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0000_older'")
    with pytest.raises(SchemaOutOfDate, match="revision 0000_older"):
        lifecycle.connect(db_url, artifacts=tmp_path)


def test_artifacts_are_content_addressed_and_verified(tmp_path):
    store = FolderArtifactStore(tmp_path)
    digest = store.put(b"model state")
    assert store.put(b"model state") == digest and store.get(digest) == b"model state"
    path = tmp_path / digest[:2] / digest[2:]
    path.write_bytes(b"model stat3")
    with pytest.raises(ArtifactCorrupt, match=digest):
        store.get(digest)
    store.delete(digest)
    with pytest.raises(ArtifactMissing):
        store.get(digest)
    with pytest.raises(ValueError, match="not a sha256"):
        store.get("../../etc/passwd")


def test_sqlite_keeps_artifacts_beside_the_database_file(tmp_path):
    lc = lifecycle.connect(f"sqlite:///{tmp_path / 'ledger.db'}")
    assert lc.vault.artifacts.root == tmp_path / "ledger.db.artifacts"
    assert lc.vault.keys.root == tmp_path / "ledger.db.keys"
