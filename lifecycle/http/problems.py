"""Every error as an RFC 9457 problem body (``application/problem+json``).

A typed error of the Python API keeps its class name (``type`` ends with it,
and the ``error`` member names it) and its message (``detail``); the status
code is the one of the nearest class in its MRO that ``STATUS`` lists. An
error no one foresaw is a bare 500 problem that names no internals: the
traceback goes to the log only, under the id the body quotes.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lifecycle import errors
from lifecycle.store import errors as store_errors

log = logging.getLogger("lifecycle.http")
MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "urn:lifecycle:problem:"

# by class name, so that the store's errors and the signing module's need no import order
STATUS: dict[str, int] = {
    # the request itself is wrong
    "InvalidRequest": 422, "InvalidConfig": 422, "InvalidEncoder": 422, "DuplicateSampleIds": 422,
    "UnsupportedForgetUnit": 422, "UnknownTask": 422, "UnknownSamples": 422, "UnknownSubject": 422,
    "InvalidCertificate": 422, "RequestTooLarge": 413,
    # what the URL names does not exist
    "UnknownModel": 404, "UnknownRequest": 404,
    # the ledger's state forbids it
    "ModelExists": 409, "AlreadyForgotten": 409, "TombstonedSample": 409, "IdempotencyConflict": 409,
    "RequestNotCancellable": 409, "NotReady": 409, "NotRepairable": 409, "LeaseLost": 409,
    # the service cannot serve it now; retrying later (or an operator) may help
    "StorageFault": 503, "EncoderMismatch": 503, "ArtifactMissing": 503, "ArtifactCorrupt": 503,
    "LedgerUnreachable": 503, "NoLedger": 503, "SchemaOutOfDate": 503, "BadLedgerUrl": 503,
    "SigningKeyError": 503, "LedgerError": 503,
    "BenchUnavailable": 501,
    "LifecycleError": 400,
}


def status_of(exc: BaseException) -> int:
    for cls in type(exc).__mro__:
        if cls.__name__ in STATUS:
            return STATUS[cls.__name__]
    return 500


def title_of(cls: type) -> str:
    doc = (cls.__doc__ or "").strip().splitlines()
    return doc[0] if doc and cls.__doc__ is not getattr(Exception, "__doc__") else cls.__name__


def problem(status: int, error: str, detail: str, instance: str | None = None, title: str | None = None,
            headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = {"type": TYPE_BASE + error, "title": title or error, "status": status, "detail": detail,
            "error": error, **extra}
    if instance is not None:
        body["instance"] = instance
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


class HttpProblem(Exception):
    """An error of the HTTP layer itself (authentication, scope, rate limit)."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


def install(app: FastAPI) -> None:
    @app.exception_handler(HttpProblem)
    async def _http_problem(request: Request, exc: HttpProblem):
        return problem(exc.status, exc.error, exc.detail, request.url.path, headers=exc.headers)

    @app.exception_handler(errors.LifecycleError)
    async def _lifecycle(request: Request, exc: errors.LifecycleError):
        return _typed(request, exc)

    @app.exception_handler(store_errors.LedgerError)
    async def _ledger(request: Request, exc: store_errors.LedgerError):
        return _typed(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        where = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return problem(422, "InvalidRequest", f"the request does not fit the endpoint's schema: {where}",
                       request.url.path, title=title_of(errors.InvalidRequest))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        names = {404: "NotFound", 405: "MethodNotAllowed", 413: "RequestTooLarge"}
        return problem(exc.status_code, names.get(exc.status_code, "HttpError"), str(exc.detail), request.url.path,
                       headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unforeseen(request: Request, exc: Exception):
        incident = uuid.uuid4().hex[:12]
        log.error("unhandled error on %s %s (incident %s)", request.method, request.url.path, incident,
                  exc_info=exc)
        return problem(500, "InternalError", f"the service failed unexpectedly; incident {incident} is in its log",
                       request.url.path, incident=incident)


def _typed(request: Request, exc: BaseException) -> JSONResponse:
    status = status_of(exc)
    message = " ".join(str(exc).split())
    if status >= 500:
        log.warning("%s on %s %s: %s", type(exc).__name__, request.method, request.url.path, message)
    headers = {"Retry-After": "30"} if status == 503 else None
    return problem(status, type(exc).__name__, message, request.url.path, title=title_of(type(exc)),
                   headers=headers)
