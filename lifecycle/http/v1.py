"""The project's own endpoints under ``/v1`` (JSON; errors as RFC 9457 problems)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from lifecycle import erasure as erasures
from lifecycle.http.auth import require
from lifecycle.http.opendsr import _allowed_callbacks

router = APIRouter(prefix="/v1", tags=["v1"])
READ = require("read")


def plain(value: Any) -> Any:
    """A record as JSON: dataclasses to objects, times to ISO 8601 UTC, enums to their values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).isoformat()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    return value


def erasure_json(e) -> dict[str, Any]:
    out = plain(e)
    out["overdue"] = e.overdue(dt.datetime.now(dt.timezone.utc))
    out.pop("callbacks", None)  # where a caller is told things is theirs, not every reader's
    return out


class EraseBody(BaseModel):
    subject: str
    reason: str | None = None
    requested_by: str | None = None
    idempotency_key: str | None = None
    due_days: float = Field(default=erasures.DEFAULT_DUE_DAYS)
    status_callback_urls: list[str] = Field(default_factory=list)


@router.get("/public-key", response_class=Response,
            responses={200: {"content": {"application/x-pem-file": {}}}})
def public_key(request: Request) -> Response:
    """The Ed25519 public key that signs certificates, OpenDSR responses and callbacks (PEM)."""
    return Response(request.app.state.lc.signer.public_pem(), media_type="application/x-pem-file")


@router.get("/models")
def models(request: Request, token=Depends(READ)) -> list[dict[str, Any]]:
    return [plain(m) for m in request.app.state.lc.models()]


@router.get("/models/{name}")
def model(name: str, request: Request, token=Depends(READ)) -> dict[str, Any]:
    lc = request.app.state.lc
    out = plain(lc.model(name))
    out["tasks"] = [plain(t) for t in lc.tasks(name)]
    return out


@router.get("/models/{name}/requests")
def model_requests(name: str, request: Request, token=Depends(READ)) -> list[dict[str, Any]]:
    """A model's history: every request in ledger order, with the version it produced."""
    return [plain(r) for r in request.app.state.lc.requests(name)]


@router.get("/models/{name}/relapse")
def relapse(name: str, request: Request, token=Depends(READ)) -> list[dict[str, Any]]:
    return [plain(f) for f in request.app.state.lc.relapse(name)]


@router.get("/requests/{request_id}")
def request_status(request_id: str, request: Request, token=Depends(READ)) -> dict[str, Any]:
    return plain(request.app.state.lc.status(request_id))


@router.get("/certificates/{request_id}")
def certificate(request_id: str, request: Request, token=Depends(READ)) -> dict[str, Any]:
    """The signed certificate of an applied forget, as ``lifecycle certificate verify`` checks it offline."""
    return request.app.state.lc.certificate(request_id)


@router.post("/erasures", status_code=201)
def erase(body: EraseBody, request: Request, token=Depends(require("erasure:submit"))) -> dict[str, Any]:
    """Erase a person from every model (see ``Lifecycle.erase``)."""
    _allowed_callbacks(request, body.status_callback_urls)
    e, _ = erasures.erase(request.app.state.lc, subject=body.subject, reason=body.reason,
                          requested_by=body.requested_by, idempotency_key=body.idempotency_key,
                          due_days=body.due_days, status_callback_urls=body.status_callback_urls,
                          token_id=token.id)
    return erasure_json(e)


@router.get("/erasures")
def erasure_list(request: Request, status: str | None = None, token=Depends(READ)) -> list[dict[str, Any]]:
    """Erasures, oldest first; ``status`` filters (comma-separated)."""
    wanted = None if status is None else [s for s in status.split(",") if s]
    return [erasure_json(e) for e in erasures.erasures(request.app.state.lc, wanted)]


@router.get("/erasures/{erasure_id}")
def erasure(erasure_id: str, request: Request, token=Depends(require("read", "erasure:submit"))) -> dict[str, Any]:
    return erasure_json(erasures.erasure(request.app.state.lc, erasure_id))


@router.delete("/erasures/{erasure_id}")
def erasure_cancel(erasure_id: str, request: Request, token=Depends(require("erasure:submit"))) -> dict[str, Any]:
    return erasure_json(erasures.cancel(request.app.state.lc, erasure_id))
