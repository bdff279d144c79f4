"""Arrays sent over HTTP: ``.npz`` learn uploads (raw or multipart) and ``.npy`` or JSON predict inputs.

Everything is parsed in memory (raw training rows never touch a temporary
file) and safely: numpy reads with ``allow_pickle=False``, every array's
header (dtype, shape) is checked before its data is read, and the arrays
together may not unpack to more bytes than the body limit, so a small
compressed body cannot blow up. Anything malformed is ``InvalidRequest``,
anything too big ``RequestTooLarge``: a typed problem, and nothing written.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from lifecycle.errors import InvalidRequest, RequestTooLarge

LEARN_ARRAYS = ("x", "y", "ids", "subjects", "probe_x", "probe_y")
REQUIRED = ("x", "y", "ids")
TEXT_ARRAYS = ("ids", "subjects")
FORM_FIELDS = ("task", "idempotency_key", "reason", "requested_by")
MAX_FIELD_BYTES = 10_000
MAX_PARTS = 16
# a JSON body becomes Python objects many times its size: past this, send .npy
MAX_JSON_BYTES = 16 * 1024**2
NUMERIC_KINDS = "biuf"


@dataclass(frozen=True)
class LearnUpload:
    """A learn's arrays (by their names in the ``.npz``) and the text fields sent beside them."""

    arrays: dict[str, np.ndarray]
    fields: dict[str, str]


def learn_upload(body: bytes, content_type: str | None, limit: int) -> LearnUpload:
    """A raw ``.npz`` body, or a multipart form with the ``.npz`` in its ``file`` part and text fields."""
    media, options = parse_options_header(content_type or "application/octet-stream")
    fields: dict[str, str] = {}
    if media == b"multipart/form-data":
        parts = multipart(body, options.get(b"boundary"))
        if "file" not in parts:
            raise InvalidRequest("the multipart form has no 'file' part holding the .npz")
        body = parts.pop("file")
        unknown = sorted(set(parts) - set(FORM_FIELDS))
        if unknown:
            raise InvalidRequest(f"the multipart form has unknown fields {unknown}; it takes 'file' and "
                                 f"{', '.join(FORM_FIELDS)}")
        for name, raw in parts.items():
            fields[name] = _text(raw, name)
    return LearnUpload(npz(body, limit), fields)


def npz(body: bytes, limit: int) -> dict[str, np.ndarray]:
    """The learn arrays of an ``.npz`` (``np.savez`` or ``np.savez_compressed``)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(body))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError) as exc:
        raise InvalidRequest(f"the body is not an .npz (a zip of .npy files): {exc}") from None
    with archive:
        members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
        unknown = sorted(set(members) - set(LEARN_ARRAYS))
        if unknown:
            raise InvalidRequest(f"the .npz holds arrays this endpoint does not take: {unknown[:5]}; it takes "
                                 f"{', '.join(LEARN_ARRAYS)}")
        missing = [name for name in REQUIRED if name not in members]
        if missing:
            raise InvalidRequest(f"the .npz lacks the array(s) {', '.join(missing)}")
        budget = limit
        arrays = {}
        for name, info in members.items():
            if info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise InvalidRequest(f"array {name!r} is encrypted or compressed in a way np.savez never writes")
            arrays[name] = _member(archive, info, name, budget)
            budget -= arrays[name].nbytes
    for name in TEXT_ARRAYS:
        if name in arrays and arrays[name].dtype.kind != "U":
            raise InvalidRequest(f"array {name!r} must hold strings (numpy dtype '<U...'), not {arrays[name].dtype}")
    return arrays


def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, budget: int) -> np.ndarray:
    try:
        with archive.open(info) as f:
            dtype, shape = _header(f, name)
            _fits(dtype, shape, name, budget)
        with archive.open(info) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except InvalidRequest:  # ours, already naming the problem (a ValueError too)
        raise
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, zlib.error, TypeError) as exc:
        raise InvalidRequest(f"array {name!r} of the .npz cannot be read: {exc}") from None


def npy(body: bytes, limit: int, what: str = "the body") -> np.ndarray:
    """The array of a ``.npy`` body."""
    try:
        f = io.BytesIO(body)
        dtype, shape = _header(f, what)
        _fits(dtype, shape, what, limit)
        f.seek(0)
        return np.lib.format.read_array(f, allow_pickle=False)
    except InvalidRequest:
        raise
    except (ValueError, EOFError, OSError, TypeError) as exc:
        raise InvalidRequest(f"{what} is not a readable .npy array: {exc}") from None


def _header(f, what: str) -> tuple[np.dtype, tuple[int, ...]]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise InvalidRequest(f"{what} is in .npy format version {version}; np.save writes 1.0 or 2.0")
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None \
            or dtype.kind not in NUMERIC_KINDS + "U":
        raise InvalidRequest(f"{what} has dtype {dtype}; only plain numbers and strings are taken")
    return dtype, shape


def _fits(dtype: np.dtype, shape: tuple[int, ...], what: str, budget: int) -> None:
    size = math.prod(shape) * dtype.itemsize
    if size > budget:
        raise RequestTooLarge(f"{what} unpacks to {size:,} bytes ({dtype}, shape {shape}), over what is left of "
                              f"this service's body limit ({max(budget, 0):,} bytes)")


def multipart(body: bytes, boundary: bytes | None) -> dict[str, bytes]:
    """The parts of a ``multipart/form-data`` body, by name."""
    if not boundary:
        raise InvalidRequest("a multipart/form-data body needs a boundary in its Content-Type")
    parts: dict[str, bytes] = {}
    header = [bytearray(), bytearray()]
    current: dict[str, object] = {}

    def header_end() -> None:
        if bytes(header[0]).strip().lower() == b"content-disposition":
            _, options = parse_options_header(bytes(header[1]))
            current["name"] = options.get(b"name", b"").decode("latin-1")
        header[0].clear()
        header[1].clear()

    def part_begin() -> None:
        current.clear()
        current["data"] = bytearray()

    def part_end() -> None:
        name = current.get("name")
        if not name:
            raise InvalidRequest("a part of the multipart form has no name (Content-Disposition: form-data; name=...)")
        if name in parts:
            raise InvalidRequest(f"the multipart form repeats the field {name!r}")
        if len(parts) >= MAX_PARTS:
            raise InvalidRequest(f"the multipart form has more than {MAX_PARTS} parts")
        parts[name] = bytes(current["data"])

    callbacks = {
        "on_part_begin": part_begin,
        "on_part_data": lambda data, start, end: current["data"].extend(data[start:end]),
        "on_part_end": part_end,
        "on_header_field": lambda data, start, end: header[0].extend(data[start:end]),
        "on_header_value": lambda data, start, end: header[1].extend(data[start:end]),
        "on_header_end": header_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:
        raise InvalidRequest(f"the multipart form cannot be parsed: {exc}") from None
    return parts


def _text(raw: bytes, name: str) -> str:
    if len(raw) > MAX_FIELD_BYTES:
        raise InvalidRequest(f"form field {name!r} is {len(raw):,} bytes long; the limit is {MAX_FIELD_BYTES:,}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(f"form field {name!r} is not UTF-8 text") from None


def predict_input(body: bytes, content_type: str | None, limit: int) -> tuple[object, str | None]:
    """The inputs to predict, and the task if the JSON body names one.

    JSON: a list of rows, or ``{"x": rows, "task": name}``; anything else is read as a ``.npy`` array.
    """
    media, _ = parse_options_header(content_type or "application/octet-stream")
    if media != b"application/json":
        return npy(body, limit), None
    if len(body) > MAX_JSON_BYTES:
        raise RequestTooLarge(f"a JSON body takes at most {MAX_JSON_BYTES:,} bytes; send larger inputs as .npy "
                              "(Content-Type: application/octet-stream)")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"x", "task"})
        if unknown or "x" not in value:
            raise InvalidRequest(f'a JSON body is a list of rows or {{"x": rows, "task": name}}; got keys '
                                 f"{sorted(value)}")
        task = value.get("task")
        if task is not None and not isinstance(task, str):
            raise InvalidRequest("task must be a string")
        return _rows(value["x"]), task
    return _rows(value), None


def _rows(value: object) -> np.ndarray:
    if not isinstance(value, list) or not all(isinstance(row, list) for row in value):
        raise InvalidRequest("x must be a list of rows, each a list of numbers")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for row in value for v in row):
        raise InvalidRequest("x must hold numbers only")
    try:
        return np.asarray(value, dtype=np.float64)
    except (ValueError, OverflowError) as exc:
        raise InvalidRequest(f"x is not a rectangular array of numbers: {exc}") from None
