"""The FastAPI application and the uvicorn server that runs it.

``create_app(lc)`` builds the app over a ``Lifecycle``; ``HttpServer`` runs
it in a background thread (``lifecycle serve --http``, tests);
``serve_forever`` runs it in the foreground (``lifecycle api``). TLS: give
uvicorn a certificate and key (``--ssl-certfile``/``--ssl-keyfile``), or put
a reverse proxy that terminates TLS in front of a loopback address.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

import uvicorn
from fastapi import FastAPI

from lifecycle.callbacks import callback_hosts_from_env
from lifecycle.errors import InvalidConfig
from lifecycle.http import dashboard, opendsr, problems, v1
from lifecycle.http.limits import BodyLimit, HttpLimits, TokenBuckets

log = logging.getLogger("lifecycle.http")


def create_app(lc, *, callback_hosts: Iterable[str] | None = None, limits: HttpLimits | None = None) -> FastAPI:
    """The app; ``limits`` (each token's rate, the body size) default to ``HttpLimits.from_env()``."""
    app = FastAPI(title="lifecycle", version="1",
                  description="Erasure requests (OpenDSR) and the lifecycle ledger's own API. Authenticate with "
                              "`Authorization: Bearer <token>` (lifecycle token create). Errors are RFC 9457 "
                              "problem bodies.")
    app.state.lc = lc
    app.state.callback_hosts = {h.lower() for h in callback_hosts} if callback_hosts is not None \
        else callback_hosts_from_env()
    limits = limits if limits is not None else HttpLimits.from_env()
    app.state.rate_limits = TokenBuckets(limits.rate, limits.clock)
    app.state.max_body = limits.max_body
    app.state.login_links = dashboard.LoginLinks()
    app.add_middleware(BodyLimit, limit=limits.max_body)
    problems.install(app)
    app.include_router(opendsr.router)
    app.include_router(v1.router)
    app.include_router(dashboard.router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets: [::1]:8080)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise InvalidConfig(f"--http takes HOST:PORT, e.g. 127.0.0.1:8080, not {text!r}")
    return host, int(port)


def _config(lc, address: str, ssl_certfile: str | None, ssl_keyfile: str | None,
            callback_hosts: Iterable[str] | None, limits: HttpLimits | None = None) -> uvicorn.Config:
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise InvalidConfig("TLS needs both --ssl-certfile and --ssl-keyfile")
    host, port = parse_address(address)
    # uvicorn's access log (method, path, status) goes through the process's logging; headers, and so tokens,
    # are never logged
    return uvicorn.Config(create_app(lc, callback_hosts=callback_hosts, limits=limits), host=host, port=port,
                          log_config=None, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
                          timeout_graceful_shutdown=10, lifespan="off")


class HttpServer:
    """uvicorn in a background thread; ``start`` returns once it listens (or raises OSError)."""

    def __init__(self, lc, address: str, *, ssl_certfile: str | None = None, ssl_keyfile: str | None = None,
                 callback_hosts: Iterable[str] | None = None, limits: HttpLimits | None = None) -> None:
        self.server = uvicorn.Server(_config(lc, address, ssl_certfile, ssl_keyfile, callback_hosts, limits))
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        for server in self.server.servers:
            for sock in server.sockets:
                return sock.getsockname()[1]
        return self.server.config.port

    def start(self, timeout: float = 15.0) -> None:
        self.thread = threading.Thread(target=self.server.run, name="lifecycle-http", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise OSError(f"the HTTP server could not listen on {self.server.config.host}:"
                              f"{self.server.config.port} (in use, or not an address of this machine)")
            if time.monotonic() > deadline:
                raise OSError("the HTTP server did not start listening in time")
            time.sleep(0.02)
        log.info("HTTP API on %s:%s (docs at /docs)", self.server.config.host, self.port)

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=15)


def serve_forever(lc, address: str, *, ssl_certfile: str | None = None, ssl_keyfile: str | None = None,
                  limits: HttpLimits | None = None) -> int:
    """Serve in the foreground until SIGTERM/SIGINT (uvicorn's own handlers); returns 0."""
    server = uvicorn.Server(_config(lc, address, ssl_certfile, ssl_keyfile, None, limits))
    server.run()
    if not server.started:
        raise OSError(f"the HTTP server could not listen on {address}")
    return 0
