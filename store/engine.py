"""Reaching a ledger database: URLs from what users type, engines tuned per backend."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import sessionmaker

from lifecycle.store.errors import BadLedgerUrl, LedgerUnreachable, NoLedger

# execution options of a connection that only reads (``Ledger._read``)
READ_ONLY = {"lifecycle_read_only": True}

EXAMPLES = "e.g. ledger.db, sqlite:///ledger.db, sqlite:////abs/path/ledger.db or postgresql+psycopg://user@host/db"


def ledger_url(text: str) -> str:
    """A ledger URL from what a user typed: a plain file path means SQLite."""
    if "://" not in text:
        return f"sqlite:///{Path(text).expanduser().resolve()}"
    try:
        make_url(text)
    except ArgumentError:
        raise BadLedgerUrl(f"{text!r} is not a ledger URL ({EXAMPLES})") from None
    return text


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
            # never both read "queued" and then race to claim the same row; a
            # read-only transaction reads a WAL snapshot and takes no lock
            read_only = conn.get_execution_options().get("lifecycle_read_only", False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def reachable_engine(url: str, *, create: bool = True) -> Engine:
    """An engine on ``url`` whose database answers; typed errors for a URL that
    names nothing, a folder or server that is not there, and (without
    ``create``) a SQLite file that does not exist."""
    url = ledger_url(url)
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        engine = make_engine(url)
    except (NoSuchModuleError, ArgumentError) as exc:
        raise BadLedgerUrl(f"{shown!r} names no database this can open ({exc}; {EXAMPLES})") from None
    database = make_url(url).database if engine.dialect.name == "sqlite" else None
    if database and database != ":memory:":
        path = Path(database)
        if not path.parent.exists():
            hint = " (an absolute path takes four slashes: sqlite:////abs/path.db)" if not path.is_absolute() else ""
            raise LedgerUnreachable(f"cannot open the ledger at {shown}: folder {path.parent} does not exist{hint}")
        if not create and not path.exists():
            raise NoLedger(f"there is no ledger at {shown} (no such file); create one with: lifecycle db upgrade "
                           f"--db {shown}")
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        raise LedgerUnreachable(f"cannot reach the ledger at {shown}: {' '.join(str(exc.orig).split())}") from None
    return engine


def session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)
