"""What the HTTP tests share (no test module imports another): the real server on a loopback port,
problem-body checks, and a clock for the rate limiter that moves only when told."""

from __future__ import annotations

import contextlib

import httpx

from lifecycle.http.app import HttpServer


@contextlib.contextmanager
def served(lc, **options):
    """uvicorn on a free loopback port over ``lc`` and an httpx client for it; the server is stopped after."""
    server = HttpServer(lc, "127.0.0.1:0", callback_hosts=["127.0.0.1"], **options)
    server.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=60) as client:
            yield client
    finally:
        server.stop()
    assert not server.thread.is_alive()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def is_problem(response: httpx.Response, status: int, error: str) -> dict:
    """The response is an RFC 9457 problem with this status and error name, and names no internals."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["error"] == error and body["type"].endswith(error)
    assert body["detail"] and "Traceback" not in response.text
    return body


class FrozenClock:
    """Monotonic seconds that stand still until ``advance``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
