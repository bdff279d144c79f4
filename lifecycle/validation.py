"""Checks on submitted data that need no model: shapes, dtypes, ranges, names."""

from __future__ import annotations

import datetime as dt
import os
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from lifecycle.errors import DuplicateSampleIds, InvalidRequest, RequestTooLarge

MAX_NAME = 200
# the free text of a request or an erasure that can be erased after the fact
REDACTABLE = ("reason", "requested_by")
# Limits of one request: rows, and bytes of its features as float32 (rows x n_features x 4).
MAX_BATCH = 1_000_000
MAX_REQUEST_BYTES = 4 * 1024**3
# A learn is read, checked, digested and sealed this many bytes of float32 features at a time.
CHUNK_BYTES = 16 * 1024**2


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


def redactable(fields: object) -> list[str]:
    if isinstance(fields, str) or not isinstance(fields, (list, tuple, set, frozenset)) or not fields \
            or not set(fields) <= set(REDACTABLE):
        raise InvalidRequest(f"fields must be some of {', '.join(REDACTABLE)}, not {fields!r}")
    return sorted(set(fields))


def optional_text(value: object, what: str, limit: int = 10_000) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{what} must be a string, not {type(value).__name__}")
    if len(value) > limit:
        raise InvalidRequest(f"{what} is {len(value)} characters long; the limit is {limit}")
    return value


def features(X: object, n_features: int, what: str = "X") -> np.ndarray:
    arr = numeric_batch(X, what, "2-D numeric array (samples x features)")
    if arr.ndim != 2:
        raise InvalidRequest(f"{what} must be 2-D (samples x features); got shape {arr.shape}")
    if arr.shape[1] != n_features:
        raise InvalidRequest(f"{what} has {arr.shape[1]} features per sample; the model takes {n_features}")
    return finite_float32(arr, what)


def numeric_batch(X: object, what: str, wanted: str) -> np.ndarray:
    """``X`` as a real-valued array of one to ``MAX_BATCH`` samples (``wanted`` says what is)."""
    if isinstance(X, (str, bytes)) or X is None:
        raise InvalidRequest(f"{what} must be a {wanted}, not {type(X).__name__}")
    try:
        arr = np.asarray(X)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"{what} could not be read as an array: {exc}") from None
    if arr.dtype.kind not in "fiu":
        raise InvalidRequest(f"{what} must hold real numbers; got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise InvalidRequest(f"{what} must be a {wanted}; got shape () (a single number)")
    if arr.shape[0] == 0:
        raise InvalidRequest(f"{what} is empty: a request needs at least one sample")
    if arr.shape[0] > MAX_BATCH:
        raise RequestTooLarge(f"{what} has {arr.shape[0]} samples; one request takes at most {MAX_BATCH}")
    return arr


def finite_float32(arr: np.ndarray, what: str) -> np.ndarray:
    """``arr`` as float32, refusing NaN, infinities and values float32 cannot hold."""
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
        raise RequestTooLarge(f"{what} has {len(out)} entries; one request takes at most {MAX_BATCH}")
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


# ---- big learns: limits, chunks, .npy files, batches ---------------------------


def request_size(rows: int, n_features: int, what: str = "X") -> None:
    """Refuse a request over the limits: ``MAX_BATCH`` rows, ``MAX_REQUEST_BYTES`` of float32 features."""
    if rows > MAX_BATCH:
        raise RequestTooLarge(f"{what} has {rows} samples; one request takes at most {MAX_BATCH} (split it into "
                              "several learns)")
    if rows * n_features * 4 > MAX_REQUEST_BYTES:
        raise RequestTooLarge(f"{what} holds {rows} x {n_features} float32 features ({rows * n_features * 4:,} "
                              f"bytes); one request takes at most {MAX_REQUEST_BYTES:,} bytes (at most "
                              f"{MAX_REQUEST_BYTES // (4 * n_features):,} rows of this width)")


def chunk_rows(n_features: int) -> int:
    """Rows per chunk of a streamed learn: ``CHUNK_BYTES`` of float32 features, at least 1."""
    return max(1, CHUNK_BYTES // (4 * max(1, n_features)))


def is_path(value: object) -> bool:
    return isinstance(value, (str, os.PathLike))


def is_batches(value: object) -> bool:
    """An iterator (or other one-pass iterable) of batches, as opposed to an array-like of rows."""
    if isinstance(value, (str, bytes, os.PathLike, np.ndarray, Sequence, Mapping)) or value is None:
        return False
    return isinstance(value, Iterator) or (isinstance(value, Iterable) and not hasattr(value, "__len__"))


class NpyRows:
    """A ``.npy`` file read a slice of rows at a time, with plain reads: the
    file is never loaded whole nor mapped (a mapped file's pages count in the
    reader's resident memory once touched). Fortran-ordered files are read
    through a memory map."""

    def __init__(self, path: str | os.PathLike, what: str) -> None:
        self.path = Path(path)
        try:
            # mapped only to read the header: rows are read with plain reads below
            mapped = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise InvalidRequest(f"{what} names a file that does not exist: {str(self.path)!r}") from None
        except (ValueError, OSError, EOFError) as exc:
            raise InvalidRequest(f"{what}: cannot read {str(self.path)!r} as a .npy file ({exc})") from None
        if not isinstance(mapped, np.memmap):
            raise InvalidRequest(f"{what}: {str(self.path)!r} is not a .npy file")
        self.shape, self.dtype, self.offset = tuple(mapped.shape), mapped.dtype, int(mapped.offset)
        fortran = mapped.ndim > 1 and not mapped.flags.c_contiguous
        self._mapped = mapped if fortran else None
        del mapped
        self._file = open(self.path, "rb")

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 0

    def read(self, start: int, stop: int) -> np.ndarray:
        if self._mapped is not None:
            return np.array(self._mapped[start:stop])
        if not self.shape:
            self._file.seek(self.offset)
            return np.fromfile(self._file, self.dtype, 1).reshape(())
        per_row = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        out = np.empty((stop - start, *self.shape[1:]), self.dtype)
        self._file.seek(self.offset + start * per_row)
        got = self._file.readinto(memoryview(out.reshape(-1).view(np.uint8)))
        if got != out.nbytes:
            raise InvalidRequest(f"{str(self.path)!r} ends before its header says it does (at row "
                                 f"{start + got // max(1, per_row)})")
        return out

    def whole(self) -> np.ndarray:
        return self.read(0, len(self)) if self.shape else self.read(0, 0)

    def close(self) -> None:
        self._file.close()
        self._mapped = None


def npy_array(path: str | os.PathLike, what: str) -> np.ndarray:
    """A small ``.npy`` file (labels) read whole."""
    rows = NpyRows(path, what)
    try:
        return rows.whole()
    finally:
        rows.close()


BATCH_FIELDS = ("X", "y", "sample_ids", "subjects")


def batch(item: object, index: int) -> tuple[object, object, object, object]:
    """One batch of a streamed learn as ``(X, y, sample_ids, subjects)`` (the last two may be None):
    a tuple ``(X, y)``, ``(X, y, sample_ids)``, ``(X, y, sample_ids, subjects)``, or a dict with those keys."""
    if isinstance(item, Mapping):
        unknown = sorted(map(str, set(item) - set(BATCH_FIELDS)))
        if unknown or "X" not in item or "y" not in item:
            raise InvalidRequest(f"batch {index} must have the keys X and y (and optionally sample_ids, subjects); "
                                 f"got {sorted(map(str, item))}")
        fields = tuple(item.get(k) for k in BATCH_FIELDS)
    elif isinstance(item, tuple) and 2 <= len(item) <= 4:
        fields = (*item, *(None,) * (4 - len(item)))
    else:
        raise InvalidRequest(f"batch {index} must be a tuple (X, y), (X, y, sample_ids) or (X, y, sample_ids, "
                             f"subjects), or a dict with those keys; got {type(item).__name__}")
    X, y = fields[0], fields[1]
    if X is None or y is None:
        raise InvalidRequest(f"batch {index} needs both X and y")
    for value, field in ((y, "y"), (fields[2], "sample_ids"), (fields[3], "subjects")):
        if value is not None and hasattr(X, "__len__") and hasattr(value, "__len__") \
                and not isinstance(value, (str, bytes)) and len(value) != len(X):
            raise InvalidRequest(f"batch {index}: {field} has {len(value)} entries for {len(X)} rows of X")
    return fields
