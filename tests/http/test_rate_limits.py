"""Per-token rate limits: a token bucket per token, shared by the server's threads, over a clock that
stands still (no test here waits on the wall clock)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

import lifecycle
from lifecycle.errors import InvalidConfig
from lifecycle.http.limits import HttpLimits, RateLimit, TokenBuckets, retry_after
from tests.helpers import REPO, wait_for
from tests.http.support import FrozenClock, bearer, is_problem, served


@pytest.mark.parametrize("rate, burst", [(0, 10), (-1, 10), (float("nan"), 10), (float("inf"), 10), ("5", 10),
                                         (True, 10), (5, 0), (5, -3), (5, 2.5), (5, True)])
def test_a_bad_rate_limit_is_refused_on_construction(rate, burst):
    with pytest.raises(InvalidConfig):
        RateLimit(rate, burst)


def test_rate_limits_parse_from_text_and_the_environment(monkeypatch):
    assert RateLimit.parse("50/100") == RateLimit(50.0, 100)
    assert RateLimit.parse("0.5") == RateLimit(0.5, 1)
    assert RateLimit.parse("10") == RateLimit(10.0, 20)
    for bad in ("", "fast", "5/x", "5/0", "-1/4", "1e999/2"):
        with pytest.raises(InvalidConfig):
            RateLimit.parse(bad)
    monkeypatch.setenv("LIFECYCLE_HTTP_RATE", "7/9")
    monkeypatch.setenv("LIFECYCLE_HTTP_MAX_BODY_MIB", "2")
    assert HttpLimits.from_env() == HttpLimits(RateLimit(7.0, 9), 2 * 1024 * 1024)
    assert HttpLimits.from_env("3/4", 1).rate == RateLimit(3.0, 4)
    monkeypatch.setenv("LIFECYCLE_HTTP_MAX_BODY_MIB", "lots")
    with pytest.raises(InvalidConfig):
        HttpLimits.from_env()
    with pytest.raises(InvalidConfig):
        HttpLimits(RateLimit(), 0)


def test_retry_after_is_whole_seconds_rounded_up():
    assert [retry_after(s) for s in (0.001, 0.5, 1.0, 1.01, 29.2)] == ["1", "1", "1", "2", "30"]


def test_exactly_burst_requests_pass_from_many_threads_at_a_frozen_clock():
    clock = FrozenClock()
    buckets = TokenBuckets(RateLimit(rate=4.0, burst=25), clock)
    start = threading.Barrier(16)

    def hammer(_):
        start.wait()
        return [buckets.take("t1") for _ in range(10)]

    with ThreadPoolExecutor(16) as pool:
        waits = [w for ws in pool.map(hammer, range(16)) for w in ws]
    assert sum(w == 0.0 for w in waits) == 25
    # an empty bucket: the next request is a quarter second away at 4 per second
    assert all(w == pytest.approx(0.25) for w in waits if w)
    assert buckets.take("t2") == 0.0  # another token has its own bucket
    clock.advance(1.0)
    assert [buckets.take("t1") == 0.0 for _ in range(5)] == [True] * 4 + [False]
    clock.advance(3600)
    assert sum(buckets.take("t1") == 0.0 for _ in range(40)) == 25  # never more than the burst


def test_over_its_limit_a_token_gets_429_with_retry_after_from_the_served_api(lc):
    clock = FrozenClock()
    limits = HttpLimits(RateLimit(rate=0.5, burst=3), clock=clock)
    busy_secret = lc.create_token("busy", scopes=["read"])[1]
    calm_secret = lc.create_token("calm", scopes=["read"])[1]
    with served(lc, limits=limits) as http:
        start = threading.Barrier(8)

        def get(_):
            start.wait()
            return http.get("/v1/models", headers=bearer(busy_secret))

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(get, range(8)))
        assert sorted(r.status_code for r in responses) == [200] * 3 + [429] * 5
        refused = next(r for r in responses if r.status_code == 429)
        body = is_problem(refused, 429, "RateLimited")
        assert refused.headers["retry-after"] == "2"  # one request back at 0.5 per second
        assert "0.5 requests per second" in body["detail"] and busy_secret not in body["detail"]
        # the limit is per token
        assert http.get("/v1/models", headers=bearer(calm_secret)).status_code == 200
        clock.advance(2.0)
        assert http.get("/v1/models", headers=bearer(busy_secret)).status_code == 200
        is_problem(http.get("/v1/models", headers=bearer(busy_secret)), 429, "RateLimited")
        # no token, no bucket: unauthenticated requests are 401 whatever the limits
        is_problem(http.get("/v1/models"), 401, "Unauthenticated")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, *options: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from lifecycle.cli import main; main()", "api", "--db", url,
                             *options], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_lifecycle_api_takes_its_limits_from_the_command_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    lc = lifecycle.connect(url)
    secret = lc.create_token("ops", scopes=["admin"])[1]
    bad = _api(url, "--http", f"127.0.0.1:{_free_port()}", "--rate", "fast")
    out, _ = bad.communicate(timeout=120)
    assert bad.returncode == 2 and "error (InvalidConfig)" in out and "RATE/BURST" in out

    port = _free_port()
    proc = _api(url, "--http", f"127.0.0.1:{port}", "--rate", "0.001/2", "--max-body", "0.01")
    try:
        base = f"http://127.0.0.1:{port}"

        def up():
            try:
                return httpx.get(base + "/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return proc.poll() is not None and AssertionError(proc.stdout.read())

        assert wait_for(up, 60, "lifecycle api to listen") is True
        h = bearer(secret)
        assert [httpx.get(base + "/v1/models", headers=h).status_code for _ in range(2)] == [200, 200]
        refused = httpx.get(base + "/v1/models", headers=h)
        is_problem(refused, 429, "RateLimited")
        assert int(refused.headers["retry-after"]) > 900  # one request back in 1/0.001 s
        # 0.01 MiB is 10,485 bytes: the body is refused before the token is even looked at
        is_problem(httpx.post(base + "/v1/models/m/predict", headers=h, content=b"\0" * 20_000), 413,
                   "RequestTooLarge")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert secret not in out
