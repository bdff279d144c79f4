"""Typed errors of the public API. Each names the problem in its message."""

from lifecycle.store.errors import (
    ArtifactCorrupt,
    ArtifactMissing,
    BadArtifactsLocation,
    BadLedgerUrl,
    LeaseLost,
    LedgerError,
    LedgerUnreachable,
    NoLedger,
    SchemaOutOfDate,
    StorageUnavailable,
)


class LifecycleError(Exception):
    """Base class of errors raised by the lifecycle API."""


class InvalidRequest(LifecycleError, ValueError):
    """An argument is malformed: wrong shape, dtype, range, NaN/inf, bad name."""


class InvalidConfig(LifecycleError, ValueError):
    """A model's strategy or its config is unknown or out of range."""


class ModelExists(LifecycleError):
    """A model of that name is already in the ledger."""


class UnknownModel(LifecycleError, LookupError):
    pass


class UnknownTask(LifecycleError, LookupError):
    pass


class UnknownSamples(LifecycleError, LookupError):
    """Sample ids that were never submitted for learning."""


class UnknownSubject(LifecycleError, LookupError):
    """No learned or queued sample belongs to this subject."""


class UnknownRequest(LifecycleError, LookupError):
    pass


class DuplicateSampleIds(LifecycleError, ValueError):
    """Sample ids repeated within a request or already in the model."""


class TombstonedSample(LifecycleError):
    """A learn request contains samples that were forgotten; they may not come back."""


class AlreadyForgotten(LifecycleError):
    """The forget target was already forgotten (or its forget is already queued)."""


class UnsupportedForgetUnit(LifecycleError):
    """The model's strategy cannot forget at the requested granularity."""


class IdempotencyConflict(LifecycleError):
    """An idempotency key was reused with a different payload."""


class NotReady(LifecycleError):
    """The model has no applied version yet."""


class RequestNotCancellable(LifecycleError):
    """Only queued requests can be cancelled."""


class StorageFault(LifecycleError):
    """A stored state, data file or probe set is missing or altered; the message names it and the fix."""


class NotRepairable(LifecycleError):
    """The model cannot be rebuilt from what is stored; the message says what to restore or roll back to."""


class InvalidEncoder(LifecycleError, ValueError):
    """An encoder that cannot be used: an unreadable file, an unimportable factory, weights that do not
    fit it, an input shape it does not take, or an output that is not one feature vector per input."""


class EncoderMismatch(StorageFault, ArtifactCorrupt):
    """A model's stored encoder no longer matches what the ledger recorded for it (its sha256, or what the
    factory now builds): it is refused, never used in its place."""


class RequestTooLarge(InvalidRequest):
    """A request over the per-request limits (rows, or bytes of float32 features); see ``lifecycle.validation``."""


class BenchUnavailable(LifecycleError):
    """The comparative bench is research tooling: it ships with the source checkout, not the package."""


__all__ = [
    "BenchUnavailable",
    "AlreadyForgotten",
    "ArtifactCorrupt",
    "ArtifactMissing",
    "BadArtifactsLocation",
    "BadLedgerUrl",
    "LedgerUnreachable",
    "NoLedger",
    "DuplicateSampleIds",
    "EncoderMismatch",
    "IdempotencyConflict",
    "InvalidConfig",
    "InvalidRequest",
    "InvalidEncoder",
    "LeaseLost",
    "LedgerError",
    "LifecycleError",
    "ModelExists",
    "NotReady",
    "NotRepairable",
    "StorageFault",
    "StorageUnavailable",
    "RequestNotCancellable",
    "RequestTooLarge",
    "SchemaOutOfDate",
    "TombstonedSample",
    "UnknownModel",
    "UnknownRequest",
    "UnknownSamples",
    "UnknownSubject",
    "UnknownTask",
    "UnsupportedForgetUnit",
]
