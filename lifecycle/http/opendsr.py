"""OpenDSR (formerly OpenGDPR, v0.1) endpoints for erasure requests.

Followed: ``GET /discovery``; ``POST /opengdpr_requests`` (201 with
``received_time``, ``expected_completion_time``, ``encoded_request``);
``GET /opengdpr_requests/{subject_request_id}`` with ``request_status``
pending / in_progress / completed / cancelled; ``DELETE`` (202 while pending).
Responses carry ``X-OpenGDPR-Signature``: the base64 Ed25519 signature over
the exact response body bytes. Where this differs from the specification (an
Ed25519 key rather than an x.509 certificate; only erasure; one identity per
request; ``failed`` reported as in_progress with ``lifecycle_status``), the
README's "HTTP service" section says so and why.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from lifecycle import erasure as erasures
from lifecycle.errors import InvalidRequest, RequestNotCancellable, UnknownRequest
from lifecycle.http.auth import require
from lifecycle.store.erasures import Erasure, Erasures
from lifecycle.store.outbox import API_VERSION, OPENDSR_KEY, opendsr_status

REQUEST_TYPES = ("erasure",)
IDENTITY_TYPES = ("controller_customer_id", "email")
KEY_PREFIX = OPENDSR_KEY  # an OpenDSR request's erasure has idempotency key KEY_PREFIX + its id

router = APIRouter(tags=["OpenDSR"])


class Identity(BaseModel):
    identity_type: str
    identity_value: str
    identity_format: str = "raw"


class OpenDsrRequest(BaseModel):
    subject_request_id: str
    subject_request_type: str
    submitted_time: str | None = None
    subject_identities: list[Identity] = Field(min_length=1)
    api_version: str | None = None
    property_id: str | None = None
    status_callback_urls: list[str] = Field(default_factory=list)
    extensions: dict[str, Any] | None = None


def _time(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def signed(request: Request, body: dict[str, Any], status: int = 200) -> Response:
    """The body as JSON, with X-OpenGDPR-Signature over exactly those bytes."""
    raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    signature = base64.b64encode(request.app.state.lc.signer.key().sign(raw)).decode()
    return Response(raw, status_code=status, media_type="application/json",
                    headers={"X-OpenGDPR-Signature": signature,
                             "X-OpenGDPR-Processor-Domain": request.url.hostname or ""})


@router.get("/discovery")
def discovery(request: Request) -> Response:
    """What this processor supports, and where its public key is."""
    base = str(request.base_url).rstrip("/")
    return signed(request, {
        "api_version": API_VERSION,
        "supported_identities": [{"identity_type": t, "identity_format": "raw"} for t in IDENTITY_TYPES],
        "supported_subject_request_types": list(REQUEST_TYPES),
        "processor_certificate": f"{base}/v1/public-key",
        "processor_signature_algorithm": "ed25519",
        "supported_status_callback_hosts": sorted(request.app.state.callback_hosts),
        "callback_signature": "X-OpenGDPR-Signature: base64 Ed25519 signature over the exact callback body; "
                              f"verify with the key at {base}/v1/public-key",
    })


@router.post("/opengdpr_requests", status_code=201)
def submit(body: OpenDsrRequest, request: Request, token=Depends(require("erasure:submit"))) -> Response:
    """Submit an erasure request: one forget per model holding the subject's samples."""
    if body.subject_request_type not in REQUEST_TYPES:
        raise InvalidRequest(f"subject_request_type {body.subject_request_type!r} is not supported; this "
                             f"processor takes {', '.join(REQUEST_TYPES)}")
    try:
        uuid.UUID(body.subject_request_id)
    except ValueError:
        raise InvalidRequest("subject_request_id must be a UUID") from None
    if len(body.subject_identities) != 1:
        raise InvalidRequest("give exactly one subject identity per request (submit one request per identity)")
    ident = body.subject_identities[0]
    if ident.identity_type not in IDENTITY_TYPES or ident.identity_format != "raw":
        raise InvalidRequest(f"identity {ident.identity_type}/{ident.identity_format} is not supported; "
                             f"supported: {', '.join(t + '/raw' for t in IDENTITY_TYPES)}")
    _allowed_callbacks(request, body.status_callback_urls)
    e, _ = erasures.erase(request.app.state.lc, subject=ident.identity_value, reason="OpenDSR erasure request",
                          requested_by=f"opendsr:{token.name}"[:200],
                          idempotency_key=KEY_PREFIX + body.subject_request_id.lower(),
                          due_days=erasures.DEFAULT_DUE_DAYS, status_callback_urls=body.status_callback_urls,
                          token_id=token.id)
    raw = json.dumps(body.model_dump(exclude_none=True), separators=(",", ":"), sort_keys=True).encode()
    return signed(request, {
        "subject_request_id": body.subject_request_id,
        "received_time": _time(e.received_at),
        "expected_completion_time": _time(e.due_at),
        "encoded_request": base64.b64encode(raw).decode(),
        "request_status": opendsr_status(e.status),
        "api_version": API_VERSION,
        "erasure_id": e.id,
    }, 201)


def _find(request: Request, subject_request_id: str) -> Erasure:
    found = Erasures(request.app.state.lc.ledger).refresh(key=KEY_PREFIX + subject_request_id.lower())
    if found is None:
        raise UnknownRequest(f"no OpenDSR request {subject_request_id!r}")
    return found[0]


@router.get("/opengdpr_requests/{subject_request_id}")
def status(subject_request_id: str, request: Request,
           token=Depends(require("read", "erasure:submit"))) -> Response:
    """The person-level status of an erasure request."""
    e = _find(request, subject_request_id)
    return signed(request, {
        "subject_request_id": subject_request_id,
        "request_status": opendsr_status(e.status),
        "lifecycle_status": e.status,
        "received_time": _time(e.received_at),
        "expected_completion_time": _time(e.due_at),
        "completed_time": _time(e.finished_at) if e.status == "completed" else None,
        "api_version": API_VERSION,
        "erasure_id": e.id,
        "results_url": str(request.base_url).rstrip("/") + f"/v1/erasures/{e.id}",
    })


@router.delete("/opengdpr_requests/{subject_request_id}", status_code=202)
def cancel(subject_request_id: str, request: Request, token=Depends(require("erasure:submit"))) -> Response:
    """Cancel a pending erasure request (409 once one of its forgets started)."""
    e = _find(request, subject_request_id)
    if e.status != "pending":
        raise RequestNotCancellable(f"OpenDSR request {subject_request_id} is {opendsr_status(e.status)}; only "
                                    "pending requests can be cancelled")
    cancelled = erasures.cancel(request.app.state.lc, e.id)
    return signed(request, {"subject_request_id": subject_request_id, "received_time": _time(dt.datetime.now(
        dt.timezone.utc)), "request_status": cancelled.status, "api_version": API_VERSION}, 202)


def _allowed_callbacks(request: Request, urls: list[str]) -> None:
    from urllib.parse import urlsplit

    hosts = request.app.state.callback_hosts
    for url in urls:
        host = urlsplit(url).hostname if isinstance(url, str) else None
        if host is None or host.lower() not in hosts:
            raise InvalidRequest(f"status callback host {host!r} is not on this service's allow-list "
                                 f"({', '.join(sorted(hosts)) or 'empty'}; set LIFECYCLE_CALLBACK_HOSTS)")
