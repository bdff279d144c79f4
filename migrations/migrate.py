"""Opening a ledger at the schema this code needs: version checks and upgrades,
with the Alembic scripts shipped in the package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from lifecycle.store.engine import reachable_engine
from lifecycle.store.errors import NoLedger, SchemaOutOfDate

SCRIPT_LOCATION = str(Path(__file__).parent)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    return ScriptDirectory(SCRIPT_LOCATION).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        if sqlite:
            # Batch migrations rebuild tables that others reference; SQLite only
            # allows that with foreign keys off, set outside any transaction.
            conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
        finally:
            if sqlite:
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=ON")


def is_empty(engine: Engine) -> bool:
    return not inspect(engine).get_table_names()


def check_at_head(engine: Engine, url_for_message: str) -> None:
    current = current_revision(engine)
    head = head_revision()
    if current != head:
        raise SchemaOutOfDate(
            f"the ledger schema is at revision {current or 'none'} but this version of lifecycle "
            f"needs {head}; run: lifecycle db upgrade --db {url_for_message}"
        )


def open_engine(url: str, *, create: bool = True) -> Engine:
    """Open ``url``; create the schema on an empty database (when ``create``),
    refuse an old one. Without ``create`` nothing is ever created: a command
    that only reads must not leave an empty ledger behind a typo."""
    engine = reachable_engine(url, create=create)
    shown = engine.url.render_as_string(hide_password=True)
    if is_empty(engine):
        if not create:
            raise NoLedger(f"there is no ledger at {shown} (the database has no tables); create one with: "
                           f"lifecycle db upgrade --db {shown}")
        upgrade(engine)
    check_at_head(engine, shown)
    return engine
