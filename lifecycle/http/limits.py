"""What one API token may ask for: a token bucket per token, and the size of a body.

Every token gets a bucket of ``burst`` requests that refills at ``rate``
requests per second; a request finding its bucket empty is answered 429 with
``Retry-After`` (whole seconds, rounded up). The buckets live in the
serving process: behind several processes each one limits on its own.
Request bodies may take at most ``HttpLimits.max_body`` bytes; more is
413, refused from ``Content-Length`` before anything is read, or
as soon as the count of bytes read passes it.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.exceptions import HTTPException

from lifecycle.errors import InvalidConfig, RequestTooLarge
from lifecycle.http.problems import problem, title_of

RATE_ENV = "LIFECYCLE_HTTP_RATE"
MAX_BODY_ENV = "LIFECYCLE_HTTP_MAX_BODY_MIB"
DEFAULT_RATE = 50.0
DEFAULT_BURST = 100
DEFAULT_MAX_BODY_MIB = 256


@dataclass(frozen=True)
class RateLimit:
    """``rate`` requests per second per token, with bursts of up to ``burst`` at once."""

    rate: float = DEFAULT_RATE
    burst: int = DEFAULT_BURST

    def __post_init__(self) -> None:
        if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)) or not math.isfinite(self.rate) \
                or self.rate <= 0:
            raise InvalidConfig(f"the rate limit's rate is requests per second, a positive number, not {self.rate!r}")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise InvalidConfig(f"the rate limit's burst is a whole number of requests, at least 1, not "
                                f"{self.burst!r}")

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """``RATE`` or ``RATE/BURST``, e.g. ``50/100`` (the burst defaults to twice the rate, at least 1)."""
        rate_text, sep, burst_text = text.strip().partition("/")
        try:
            rate = float(rate_text)
            burst = int(burst_text) if sep else max(1, math.ceil(2 * rate))
        except (ValueError, OverflowError):
            raise InvalidConfig(f"a rate limit is RATE or RATE/BURST (requests per second per token, e.g. 50/100), "
                                f"not {text!r}") from None
        return cls(rate, burst)

    @classmethod
    def from_env(cls) -> RateLimit:
        text = os.environ.get(RATE_ENV)
        return cls.parse(text) if text else cls()


def max_body_from_env() -> int:
    """The body limit in bytes: ``LIFECYCLE_HTTP_MAX_BODY_MIB`` mebibytes, else 256 MiB."""
    text = os.environ.get(MAX_BODY_ENV)
    if not text:
        return max_body_bytes(DEFAULT_MAX_BODY_MIB)
    try:
        mib = float(text)
    except ValueError:
        raise InvalidConfig(f"{MAX_BODY_ENV} is a number of MiB, not {text!r}") from None
    return max_body_bytes(mib)


def max_body_bytes(mib: object) -> int:
    """``mib`` mebibytes in bytes, refusing what is not a positive number."""
    if isinstance(mib, bool) or not isinstance(mib, (int, float)) or not math.isfinite(mib) or mib <= 0:
        raise InvalidConfig(f"the body limit is a positive number of MiB, not {mib!r}")
    return max(1, int(mib * 1024 * 1024))


@dataclass(frozen=True)
class HttpLimits:
    """What the HTTP service allows: each token's ``rate``, and ``max_body`` bytes per request body.
    ``clock`` (seconds, monotonic) refills the buckets; tests pass one that stands still."""

    rate: RateLimit = field(default_factory=RateLimit)
    max_body: int = DEFAULT_MAX_BODY_MIB * 1024 * 1024
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        if not isinstance(self.rate, RateLimit):
            raise InvalidConfig(f"rate must be a RateLimit, not {type(self.rate).__name__}")
        if isinstance(self.max_body, bool) or not isinstance(self.max_body, int) or self.max_body < 1:
            raise InvalidConfig(f"max_body is a positive number of bytes, not {self.max_body!r}")

    @classmethod
    def from_env(cls, rate: str | None = None, max_body_mib: float | None = None) -> HttpLimits:
        """The limits given (``rate`` as ``RATE[/BURST]``, the body in MiB), else from the environment
        (``LIFECYCLE_HTTP_RATE``, ``LIFECYCLE_HTTP_MAX_BODY_MIB``), else the defaults."""
        return cls(RateLimit.parse(rate) if rate is not None else RateLimit.from_env(),
                   max_body_bytes(max_body_mib) if max_body_mib is not None else max_body_from_env())


class TokenBuckets:
    """One bucket per key (a token's id); safe to share between threads."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (requests left, when counted)

    def take(self, key: str) -> float:
        """Spend one request of ``key``'s bucket: 0.0 when allowed, else the seconds until one is back."""
        with self._lock:
            now = self.clock()
            left, then = self._buckets.get(key, (float(self.limit.burst), now))
            left = min(float(self.limit.burst), left + max(0.0, now - then) * self.limit.rate)
            if left >= 1.0:
                self._buckets[key] = (left - 1.0, now)
                return 0.0
            self._buckets[key] = (left, now)
            return (1.0 - left) / self.limit.rate


def retry_after(seconds: float) -> str:
    """The ``Retry-After`` header: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))


class BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes is 413, refused by its ``Content-Length`` before it
    is read, or (sent in chunks, without one) as soon as the bytes read pass the limit."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    def detail(self) -> str:
        return (f"the request body is over this service's limit of {self.limit:,} bytes "
                f"({self.limit / 2**20:g} MiB)")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            response = problem(413, "RequestTooLarge", self.detail(), scope["path"],
                               title=title_of(RequestTooLarge))
            await response(scope, receive, send)
            return
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # FastAPI lets an HTTPException raised while the body is read through to the handlers
                    raise HTTPException(413, self.detail())
            return message

        await self.app(scope, counted, send)
