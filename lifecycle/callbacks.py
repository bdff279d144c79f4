"""Delivering erasures' status callbacks from the outbox (``lifecycle.store.outbox``).

Each callback is POSTed with the exact body bytes the outbox holds, signed
with the service's Ed25519 key: ``X-OpenGDPR-Signature`` is the base64
signature over those bytes, verifiable with the key at ``/v1/public-key``.
A 2xx answer delivers it. Anything else (another status, a redirect, which is
never followed, a refused connection, a timeout) is a failed attempt, retried
after an exponential back-off until the attempt limit. The target's host is
checked against the operator's allow-list again at delivery: a callback whose
host has left it is given up.
"""

from __future__ import annotations

import base64
import logging
import math
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from lifecycle.errors import InvalidConfig
from lifecycle.store.outbox import Delivery, DeliveryClaim, Outbox

log = logging.getLogger("lifecycle.callbacks")

CALLBACK_HOSTS_ENV = "LIFECYCLE_CALLBACK_HOSTS"
SIGNATURE_HEADER = "X-OpenGDPR-Signature"


def callback_hosts_from_env() -> set[str]:
    """The operator's allow-list of callback hosts: comma-separated in LIFECYCLE_CALLBACK_HOSTS."""
    return {h.strip().lower() for h in os.environ.get(CALLBACK_HOSTS_ENV, "").split(",") if h.strip()}


@dataclass(frozen=True)
class DeliveryPolicy:
    """How callbacks are retried: after the n-th failed attempt the next one
    waits ``first_retry * 2**(n-1)`` seconds, at most ``max_retry``; after
    ``max_attempts`` attempts the callback is given up. ``timeout`` bounds
    connecting, sending and each wait for the answer."""

    first_retry: float = 5.0
    max_retry: float = 3600.0
    max_attempts: int = 15
    timeout: float = 10.0

    def __post_init__(self) -> None:
        for name in ("first_retry", "max_retry", "timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise InvalidConfig(f"callback {name} must be a positive number of seconds, not {value!r}")
        if self.max_retry < self.first_retry:
            raise InvalidConfig(f"callback max_retry ({self.max_retry} s) must not be below first_retry "
                                f"({self.first_retry} s)")
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise InvalidConfig(f"callback max_attempts must be a positive integer, not {self.max_attempts!r}")

    def retry_in(self, failed: int) -> float | None:
        """Seconds until the next attempt after ``failed`` attempts; None: give up."""
        if failed >= self.max_attempts:
            return None
        # the exponent is capped only so that a huge attempt limit cannot overflow a float
        return min(self.max_retry, self.first_retry * 2.0 ** min(failed - 1, 64))

    @property
    def lease_seconds(self) -> float:
        """How long a claim holds a callback: connecting, sending and reading each
        take up to ``timeout``, so an attempt ends well within it."""
        return 4 * self.timeout


class Deliverer:
    """Sends the due callbacks of a ``Lifecycle``'s ledger, signed with its key,
    to the hosts in ``hosts`` (the allow-list)."""

    def __init__(self, lc, hosts: Iterable[str], policy: DeliveryPolicy = DeliveryPolicy()) -> None:
        self.lc = lc
        self.hosts = hosts
        self.policy = policy

    def run(self, limit: int = 100, stopping: threading.Event | None = None) -> list[Delivery]:
        """Send due callbacks one claim at a time until none is due, at most
        ``limit`` attempts, or until ``stopping`` is set; returns where each
        attempt left its callback (leaving out one whose claim expired and
        another deliverer took)."""
        outbox = Outbox(self.lc.ledger)
        allowed = {h.lower() for h in self.hosts}
        outcomes = []
        with httpx.Client(timeout=self.policy.timeout, follow_redirects=False) as client:
            for _ in range(limit):
                if stopping is not None and stopping.is_set():
                    break
                claims = outbox.claim(self.policy.lease_seconds)
                if not claims:
                    break
                outcome = self._attempt(outbox, client, allowed, claims[0])
                if outcome is not None:
                    outcomes.append(outcome)
        return outcomes

    def _attempt(self, outbox: Outbox, client: httpx.Client, allowed: set[str],
                 claim: DeliveryClaim) -> Delivery | None:
        d = claim.delivery
        # logs name the host only: a callback URL may carry the receiver's secret in its path or query
        host = (urlsplit(d.url).hostname or "").lower()
        if host not in allowed:
            log.warning("callback %d to host %s given up: the host is no longer allowed", d.id, host)
            return outbox.record(claim, ok=False, error=f"host {host!r} is no longer on the callback allow-list "
                                                        f"({CALLBACK_HOSTS_ENV})")
        signature = base64.b64encode(self.lc.signer.key().sign(d.body)).decode()
        status, error = None, None
        try:
            response = client.post(d.url, content=d.body, headers={"Content-Type": "application/json",
                                                                   SIGNATURE_HEADER: signature})
            status = response.status_code
            if not response.is_success:
                error = f"HTTP {status}" + (" (redirects are not followed)" if response.is_redirect else "")
        except Exception as exc:  # whatever stops a send is a failed attempt, counted towards the limit
            error = f"{type(exc).__name__}: {exc}"
        retry = None if error is None else self.policy.retry_in(d.attempts + 1)
        outcome = outbox.record(claim, ok=error is None, http_status=status, error=error, retry_in=retry)
        if error is not None:
            log.warning("callback %d to host %s failed (attempt %d): %s; %s", d.id, host, d.attempts + 1, error,
                        "given up" if retry is None else f"next try in {retry:g} s")
        return outcome
