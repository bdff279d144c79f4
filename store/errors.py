"""Errors raised by the ledger itself."""

from sqlalchemy.exc import InterfaceError, OperationalError

# the database did not answer: a connection lost, a server restarting or failing over, a deadlock broken
DATABASE_UNREACHABLE = (OperationalError, InterfaceError)


class LedgerError(Exception):
    """Base class of ledger errors."""


class BadLedgerUrl(LedgerError):
    """The ledger URL cannot be understood; the message shows one that works."""


class StorageUnavailable(LedgerError):
    """The artifact store did not answer (a network or service error): nothing is known to be wrong with
    what it holds, and the same call may succeed later."""


class BadArtifactsLocation(LedgerError, ValueError):
    """An artifacts location names no store this code can use; the message says what would."""


class LedgerUnreachable(LedgerError):
    """The ledger's database cannot be opened or reached."""


class NoLedger(LedgerError):
    """There is no ledger at the URL (and the command does not create one)."""


class SchemaOutOfDate(LedgerError):
    """The database schema is behind this code; the message names the upgrade command."""


class LeaseLost(LedgerError):
    """A worker tried to finish a request it no longer owns (its lease expired and was taken)."""


class ArtifactMissing(LedgerError):
    """An artifact named by the ledger is not in the artifact store."""


class ArtifactCorrupt(LedgerError):
    """An artifact's content no longer matches its sha256 digest."""
