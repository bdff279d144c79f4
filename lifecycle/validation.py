"""Checks on submitted data that need no model: shapes, dtypes, ranges, names."""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections import Counter
from collections.abc import Sequence

import numpy as np

from lifecycle.errors import DuplicateSampleIds, InvalidRequest

MAX_NAME = 200
MAX_BATCH = 1_000_000


def name(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{what} must be a string, not {type(value).__name__}")
    if not value or not value.strip():
        raise InvalidRequest(f"{what} must not be empty")
    if len(value) > MAX_NAME:
        raise InvalidRequest(f"{what} is {len(value)} characters long; the limit is {MAX_NAME}")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise InvalidRequest(f"{what} contains control or surrogate characters: {value!r}")
    return value


def optional_text(value: object, what: str, limit: int = 10_000) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{what} must be a string, not {type(value).__name__}")
    if len(value) > limit:
        raise InvalidRequest(f"{what} is {len(value)} characters long; the limit is {limit}")
    return value


def features(X: object, n_features: int, what: str = "X") -> np.ndarray:
    if isinstance(X, (str, bytes)) or X is None:
        raise InvalidRequest(f"{what} must be a 2-D numeric array, not {type(X).__name__}")
    try:
        arr = np.asarray(X)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"{what} could not be read as an array: {exc}") from None
    if arr.dtype.kind not in "fiu":
        raise InvalidRequest(f"{what} must hold real numbers; got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise InvalidRequest(f"{what} must be 2-D (samples x features); got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise InvalidRequest(f"{what} is empty: a request needs at least one sample")
    if arr.shape[0] > MAX_BATCH:
        raise InvalidRequest(f"{what} has {arr.shape[0]} samples; one request takes at most {MAX_BATCH}")
    if arr.shape[1] != n_features:
        raise InvalidRequest(f"{what} has {arr.shape[1]} features per sample; the model takes {n_features}")
    with np.errstate(over="ignore"):
        out = arr.astype(np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise InvalidRequest(f"{what} contains NaN or infinite values (first in row {row}) or values too large "
                             f"for float32")
    return out


def labels(y: object, n: int, n_classes: int, what: str = "y") -> np.ndarray:
    if isinstance(y, (str, bytes)) or y is None:
        raise InvalidRequest(f"{what} must be a 1-D integer array, not {type(y).__name__}")
    try:
        arr = np.asarray(y)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"{what} could not be read as an array: {exc}") from None
    if arr.dtype.kind not in "iu":
        raise InvalidRequest(f"{what} must hold integer class labels; got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise InvalidRequest(f"{what} must be 1-D; got shape {arr.shape}")
    if arr.shape[0] != n:
        raise InvalidRequest(f"{what} has {arr.shape[0]} labels for {n} samples")
    if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        raise InvalidRequest(f"{what} has labels outside 0..{n_classes - 1}: {sorted(set(arr[(arr < 0) | (arr >= n_classes)].tolist()))[:5]}")
    return arr.astype(np.int64)


def id_list(values: object, what: str, n: int | None = None) -> list[str]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise InvalidRequest(f"{what} must be a list of strings, not {type(values).__name__}")
    out = [name(v, f"{what}[{i}]") for i, v in enumerate(values)]
    if n is not None and len(out) != n:
        raise InvalidRequest(f"{what} has {len(out)} entries for {n} samples")
    if not out:
        raise InvalidRequest(f"{what} is empty")
    if len(out) > MAX_BATCH:
        raise InvalidRequest(f"{what} has {len(out)} entries; one request takes at most {MAX_BATCH}")
    dups = [v for v, c in Counter(out).items() if c > 1]
    if dups:
        raise DuplicateSampleIds(f"{what} repeats {len(dups)} id(s), e.g. {dups[:3]}")
    return out


def subjects(values: object, n: int) -> list[str | None]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise InvalidRequest(f"subjects must be a list (one entry per sample, None allowed), not {type(values).__name__}")
    if len(values) != n:
        raise InvalidRequest(f"subjects has {len(values)} entries for {n} samples")
    return [None if v is None else name(v, f"subjects[{i}]") for i, v in enumerate(values)]


def days(value: float, what: str, limit: float = 3650) -> dt.timedelta:
    if not isinstance(value, (int, float)) or not 0 < value <= limit:
        raise InvalidRequest(f"{what} must be a number of days in (0, {limit}], not {value!r}")
    return dt.timedelta(days=value)


def due(value: object, received: dt.datetime) -> dt.datetime:
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise InvalidRequest("due_at must be a timezone-aware datetime")
    if value <= received:
        raise InvalidRequest(f"due_at {value.isoformat()} is not in the future")
    return value
