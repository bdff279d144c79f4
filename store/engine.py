"""Opening a ledger database: engines tuned per backend, schema checks."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker

from store import migrate


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, _record):
            # let SQLAlchemy's BEGIN below decide transactions, not the driver
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            # deleted rows are overwritten, not left in free pages (not every build defaults to it)
            cur.execute("PRAGMA secure_delete=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            # one writer at a time: take the write lock up front so two workers
            # never both read "queued" and then race to claim the same row
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def open_engine(url: str, *, create: bool = True) -> Engine:
    """Open ``url``; create the schema on an empty database, refuse an old one."""
    engine = make_engine(url)
    if create and migrate.is_empty(engine):
        migrate.upgrade(engine)
    migrate.check_at_head(engine, make_url(url).render_as_string(hide_password=True))
    return engine


def session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)
