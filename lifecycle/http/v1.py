"""The project's own endpoints under ``/v1`` (JSON; errors as RFC 9457 problems).

Reads need the ``read`` scope; a learn ``learn:submit``, a forget
``erasure:submit``, a prediction ``predict``. What a request submits is
checked by the Python API before anything is written, so a bad one is a
typed problem and leaves the ledger as it was. Learns and forgets record
the submitting token's id in their ``submitted`` audit event.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import json
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from lifecycle import erasure as erasures
from lifecycle.errors import InvalidRequest, NotReady, StorageFault
from lifecycle.http import uploads
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


# ---- submitting and predicting --------------------------------------------------------------


class ForgetBody(BaseModel):
    """Exactly one of ``task``, ``samples``, ``subject``."""

    model_config = ConfigDict(extra="forbid")
    task: str | None = None
    samples: list[str] | None = None
    subject: str | None = None
    reason: str | None = None
    requested_by: str | None = None
    idempotency_key: str | None = None
    due_at: dt.datetime | None = None


def _submitted(req) -> Response:
    """202 with the queued request, where to follow it in ``Location``."""
    body = json.dumps(plain(req)).encode()
    return Response(body, status_code=202, media_type="application/json",
                    headers={"Location": f"/v1/requests/{req.id}"})


_BINARY = {"type": "string", "format": "binary"}
_LEARN_BODY = {"required": True, "content": {
    "application/octet-stream": {"schema": _BINARY},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": _BINARY, **{f: {"type": "string"} for f in uploads.FORM_FIELDS}}}}}}
_PREDICT_BODY = {"required": True, "content": {
    "application/octet-stream": {"schema": _BINARY},
    "application/json": {"schema": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}}}}


@router.post("/models/{name}/learn", status_code=202, response_class=Response,
             responses={202: {"content": {"application/json": {}}}}, openapi_extra={"requestBody": _LEARN_BODY})
async def learn(name: str, request: Request, task: str | None = None, idempotency_key: str | None = None,
                reason: str | None = None, requested_by: str | None = None,
                token=Depends(require("learn:submit"))) -> Response:
    """Queue a learn from an ``.npz`` with arrays ``x``, ``y``, ``ids`` (strings) and optionally
    ``subjects`` (strings, "" for none), ``probe_x`` and ``probe_y``: the raw body, or the ``file``
    part of a multipart form whose other fields may carry ``task``, ``idempotency_key``, ``reason``
    and ``requested_by`` (else the query does). Bodies over the service's limit are 413."""
    lc = request.app.state.lc
    await run_in_threadpool(lc.model, name)  # an unknown model is 404 before the body is read
    upload = uploads.learn_upload(await request.body(), request.headers.get("content-type"),
                                  request.app.state.max_body)
    query = {"task": task, "idempotency_key": idempotency_key, "reason": reason, "requested_by": requested_by}
    given = {}
    for field, value in query.items():
        sent = upload.fields.get(field)
        if value is not None and sent is not None and value != sent:
            raise InvalidRequest(f"{field} is given twice, in the query and the form, with different values")
        given[field] = sent if sent is not None else value
    if given["task"] is None:
        raise InvalidRequest("a learn needs its task: ?task=NAME, or a 'task' field of the form")
    a = upload.arrays
    if ("probe_x" in a) != ("probe_y" in a):
        raise InvalidRequest("a probe set needs both probe_x and probe_y in the .npz")
    probe = (a["probe_x"], a["probe_y"]) if "probe_x" in a else None
    subjects = None if "subjects" not in a else [s or None for s in a["subjects"].tolist()]
    req = await run_in_threadpool(partial(
        lc.learn, name, task=given["task"], X=a["x"], y=a["y"], sample_ids=a["ids"].tolist(), subjects=subjects,
        probe=probe, idempotency_key=given["idempotency_key"], reason=given["reason"],
        requested_by=given["requested_by"], token_id=token.id))
    return _submitted(req)


@router.post("/models/{name}/forget", status_code=202, response_class=Response,
             responses={202: {"content": {"application/json": {}}}})
def forget(name: str, body: ForgetBody, request: Request, token=Depends(require("erasure:submit"))) -> Response:
    """Queue a forget of a task, a list of sample ids, or a subject (see ``Lifecycle.forget``)."""
    req = request.app.state.lc.forget(name, task=body.task, samples=body.samples, subject=body.subject,
                                      reason=body.reason, requested_by=body.requested_by,
                                      idempotency_key=body.idempotency_key, due_at=body.due_at, token_id=token.id)
    return _submitted(req)


@router.post("/models/{name}/predict", openapi_extra={"requestBody": _PREDICT_BODY})
async def predict(name: str, request: Request, task: str | None = None,
                  token=Depends(require("predict"))) -> dict[str, Any]:
    """Predicted labels of the rows of an ``.npy`` body, or of a JSON list of rows
    (or ``{"x": rows, "task": name}``)."""
    lc = request.app.state.lc
    await run_in_threadpool(lc.model, name)
    X, named = uploads.predict_input(await request.body(), request.headers.get("content-type"),
                                     request.app.state.max_body)
    if task is not None and named is not None and task != named:
        raise InvalidRequest("task is given twice, in the query and the body, with different values")
    labels = await run_in_threadpool(partial(lc.predict, name, X, task=task or named))
    return {"model": name, "labels": labels.tolist()}


# ---- reports ----------------------------------------------------------------------------------


@router.get("/models/{name}/reports/latest", response_class=Response,
            responses={200: {"content": {"application/json": {}, "text/html": {}}}})
def latest_report(name: str, request: Request, format: str = "json", token=Depends(READ)) -> Response:
    """The latest relapse report the service wrote for the model (``lifecycle serve --reports``): its
    JSON (``?format=json``, the default) or its page (``?format=html``), byte for byte as written; the
    ``X-Report-SHA256`` header is the digest the ledger recorded for it."""
    if format not in ("json", "html"):
        raise InvalidRequest(f"format is json or html, not {format!r}")
    lc = request.app.state.lc
    reports = lc.ledger.reports(lc.model(name).id)
    if not reports:
        raise NotReady(f"no relapse report of model {name!r} has been written yet (lifecycle serve --reports DIR "
                       f"writes them on a schedule)")
    report = reports[-1]
    path = Path(report.html_path)
    path, recorded = (path, report.html_sha256) if format == "html" else (path.with_suffix(".json"),
                                                                         report.json_sha256)
    try:
        content = path.read_bytes()
    except OSError:
        raise StorageFault(f"the latest relapse report of model {name!r} (written {report.written_at.isoformat()}) "
                           "is gone from the reports folder; the service writes the next one on its schedule") \
            from None
    if hashlib.sha256(content).hexdigest() != recorded:
        raise StorageFault(f"the latest relapse report of model {name!r} was altered after it was written (its "
                           "sha256 differs from the one the ledger recorded)")
    media = "text/html; charset=utf-8" if format == "html" else "application/json"
    return Response(content, media_type=media, headers={
        "X-Report-SHA256": recorded, "X-Report-Version": str(report.model_version),
        "X-Report-Written-At": report.written_at.astimezone(dt.timezone.utc).isoformat(),
        # the page is self-contained: nothing it loads comes from elsewhere
        "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'"})
