"""RFC 8785 JSON Canonicalization Scheme: the bytes a certificate is signed over.

Any faithful re-serialisation of a JSON document (another key order, other
white space, ``0.0`` written ``0``, ``1e-7`` written ``1E-07``) has the same
canonical form, so a signature over it survives ``jq`` or JavaScript. Numbers
are written as ECMAScript writes doubles; keys are sorted by their UTF-16
code units; strings escape only what JSON requires.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_SAFE_INT = 2**53


class NotCanonicalisable(ValueError):
    """The value has no RFC 8785 form (NaN, infinity, a huge integer, a non-JSON type)."""


def canonical(value: Any) -> bytes:
    return _write(value).encode("utf-8")


def _write(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INT:
            raise NotCanonicalisable(f"integer {value} is beyond what a JSON number (a double) holds exactly")
        return str(value)
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_write(v) for v in value) + "]"
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise NotCanonicalisable("object keys must be strings")
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + _write(value[k]) for k in keys) + "}"
    raise NotCanonicalisable(f"{type(value).__name__} is not a JSON value")


def _number(x: float) -> str:
    """ECMAScript Number::toString for a double (the shortest digits that round-trip)."""
    if math.isnan(x) or math.isinf(x):
        raise NotCanonicalisable("NaN and infinity are not JSON numbers")
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    mantissa, _, exp = repr(abs(x)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac.rstrip("0")) if frac.strip("0") else whole
    # value = 0.<digits> * 10**n
    n = len(whole) + (int(exp) if exp else 0)
    stripped = digits.lstrip("0")
    n -= len(digits) - len(stripped)
    digits = stripped.rstrip("0") or "0"
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    e = n - 1
    head = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{sign}{head}e{'+' if e > 0 else '-'}{abs(e)}"


def loads_strict(text: str | bytes) -> Any:
    """Parse JSON, refusing duplicate keys and NaN/Infinity: a document two
    parsers could read differently must not verify."""

    def pairs(items):
        out = {}
        for key, value in items:
            if key in out:
                raise ValueError(f"duplicate key {key!r}")
            out[key] = value
        return out

    def constant(name):
        raise ValueError(f"{name} is not a JSON number")

    return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
