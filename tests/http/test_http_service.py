"""The HTTP service, served for real: uvicorn on a free loopback port, started
and stopped by each test, against SQLite and PostgreSQL, spoken to with httpx."""

from __future__ import annotations

import base64
import json
import logging
import uuid

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from lifecycle import errors as lifecycle_errors
from lifecycle import signing
from lifecycle.errors import LifecycleError
from lifecycle.http.problems import status_of
from tests.data import alternating_subjects, digits_tasks, learn_task, make_model
from tests.http.support import bearer, is_problem
from tests.http.support import served as serving


@pytest.fixture
def served(lc):
    with serving(lc) as client:
        yield lc, client


def tokens(lc) -> dict[str, str]:
    out = {name: lc.create_token(name, scopes=scopes)[1] for name, scopes in (
        ("submit", ["erasure:submit"]), ("reader", ["read"]), ("admin", ["admin"]), ("revoked", ["admin"]))}
    lc.revoke_token(lc.authenticate(out["revoked"]).id)
    return out


def verify_signed(response: httpx.Response, public_pem: bytes) -> None:
    key = serialization.load_pem_public_key(public_pem)
    key.verify(base64.b64decode(response.headers["X-OpenGDPR-Signature"]), response.content)


def opendsr_body(subject: str, request_id: str | None = None, **extra) -> dict:
    return {"subject_request_id": request_id or str(uuid.uuid4()), "subject_request_type": "erasure",
            "submitted_time": "2026-12-03T10:00:00Z", "api_version": "0.1",
            "subject_identities": [{"identity_type": "controller_customer_id", "identity_value": subject,
                                    "identity_format": "raw"}], **extra}


def test_opendsr_erasure_round_trip_with_auth_rules(served, caplog):
    caplog.set_level(logging.DEBUG)
    lc, http = served
    make_model(lc, "a")
    make_model(lc, "b")
    t0, _, _ = digits_tasks()
    learn_task(lc, "a", t0, subjects=alternating_subjects(len(t0.y), ("alice", "bob")))
    lc.drain()
    secrets = tokens(lc)
    pem = http.get("/v1/public-key").content
    assert pem == lc.signer.public_pem()

    discovery = http.get("/discovery")
    assert discovery.status_code == 200
    verify_signed(discovery, pem)
    assert discovery.json()["supported_subject_request_types"] == ["erasure"]
    assert discovery.json()["processor_certificate"].endswith("/v1/public-key")

    body = opendsr_body("alice", status_callback_urls=["http://127.0.0.1:9/cb"])
    # no token, a malformed header, an unknown or revoked token: 401; a token without the scope: 403
    no = is_problem(http.post("/opengdpr_requests", json=body), 401, "Unauthenticated")
    assert no["instance"] == "/opengdpr_requests"
    assert http.post("/opengdpr_requests", json=body).headers["www-authenticate"].startswith("Bearer")
    is_problem(http.post("/opengdpr_requests", json=body, headers={"Authorization": "Basic x"}), 401,
               "Unauthenticated")
    is_problem(http.post("/opengdpr_requests", json=body, headers=bearer("lct_nope_nope")), 401, "Unauthenticated")
    is_problem(http.post("/opengdpr_requests", json=body, headers=bearer(secrets["revoked"])), 401,
               "Unauthenticated")
    is_problem(http.post("/opengdpr_requests", json=body, headers=bearer(secrets["reader"])), 403, "Forbidden")
    assert lc.erasures() == []

    created = http.post("/opengdpr_requests", json=body, headers=bearer(secrets["submit"]))
    assert created.status_code == 201, created.text
    verify_signed(created, pem)
    out = created.json()
    assert out["subject_request_id"] == body["subject_request_id"] and out["request_status"] == "pending"
    assert out["received_time"] < out["expected_completion_time"]
    assert json.loads(base64.b64decode(out["encoded_request"]))["subject_request_id"] == body["subject_request_id"]
    # the submitting token is recorded on the erasure and in the model's audit chain
    e = lc.erasure(out["erasure_id"])
    submitter = lc.authenticate(secrets["submit"]).id
    assert e.token_id == submitter
    assert [ev.detail["token"] for ev in lc.events("a") if ev.kind == "erasure"] == [submitter]
    # a repeat is the same request; the same id for another subject is a conflict
    again = http.post("/opengdpr_requests", json=body, headers=bearer(secrets["submit"]))
    assert again.status_code == 201 and again.json()["erasure_id"] == e.id
    is_problem(http.post("/opengdpr_requests", json=opendsr_body("bob", body["subject_request_id"]),
                         headers=bearer(secrets["submit"])), 409, "IdempotencyConflict")

    status = http.get(f"/opengdpr_requests/{body['subject_request_id']}", headers=bearer(secrets["reader"]))
    assert status.status_code == 200 and status.json()["request_status"] == "pending"
    verify_signed(status, pem)
    lc.drain()
    done = http.get(f"/opengdpr_requests/{body['subject_request_id']}", headers=bearer(secrets["submit"])).json()
    assert done["request_status"] == "completed" and done["completed_time"]
    is_problem(http.delete(f"/opengdpr_requests/{body['subject_request_id']}", headers=bearer(secrets["submit"])),
               409, "RequestNotCancellable")

    # a pending one is cancelled with 202, its forget with it
    bob = opendsr_body("bob")
    assert http.post("/opengdpr_requests", json=bob, headers=bearer(secrets["submit"])).status_code == 201
    cancelled = http.delete(f"/opengdpr_requests/{bob['subject_request_id']}", headers=bearer(secrets["submit"]))
    assert cancelled.status_code == 202 and cancelled.json()["request_status"] == "cancelled"
    assert http.get(f"/opengdpr_requests/{bob['subject_request_id']}",
                    headers=bearer(secrets["reader"])).json()["request_status"] == "cancelled"
    is_problem(http.get(f"/opengdpr_requests/{uuid.uuid4()}", headers=bearer(secrets["reader"])), 404,
               "UnknownRequest")

    # the per-model view stays as it was, and the certificate verifies offline
    forget_id = next(p.request_id for p in lc.erasure(e.id).parts if p.request_id)
    req = http.get(f"/v1/requests/{forget_id}", headers=bearer(secrets["reader"])).json()
    assert req["status"] == "applied" and req["kind"] == "forget"
    cert = http.get(f"/v1/certificates/{forget_id}", headers=bearer(secrets["reader"])).json()
    assert signing.verify(cert, pem)["request"]["id"] == forget_id
    is_problem(http.get(f"/v1/certificates/{forget_id}", headers=bearer(secrets["submit"])), 403, "Forbidden")
    _, problems = lc.ledger.audit_problems()
    assert problems == []
    for secret in secrets.values():
        assert secret not in caplog.text


def test_v1_endpoints_and_every_error_as_a_problem(served):
    lc, http = served
    make_model(lc, "digits")
    t0, _, _ = digits_tasks()
    learn_task(lc, "digits", t0, subjects=["carol"] * len(t0.y))
    lc.drain()
    secrets = tokens(lc)
    admin, reader = bearer(secrets["admin"]), bearer(secrets["reader"])
    assert [m["name"] for m in http.get("/v1/models", headers=reader).json()] == ["digits"]
    model = http.get("/v1/models/digits", headers=reader).json()
    assert model["strategy"] == "analytic" and [t["name"] for t in model["tasks"]] == [t0.name]
    assert len(http.get("/v1/models/digits/requests", headers=reader).json()) == 1
    assert http.get("/v1/models/digits/relapse", headers=reader).json() == []
    is_problem(http.get("/v1/models/nope", headers=reader), 404, "UnknownModel")
    is_problem(http.get("/v1/requests/zzzz", headers=reader), 404, "UnknownRequest")
    learn = lc.requests("digits")[0].id
    is_problem(http.get(f"/v1/certificates/{learn}", headers=reader), 409, "NotReady")

    created = http.post("/v1/erasures", json={"subject": "carol", "reason": "art. 17"}, headers=admin)
    assert created.status_code == 201 and created.json()["status"] == "pending"
    assert not created.json()["overdue"]
    erasure_id = created.json()["id"]
    is_problem(http.post("/v1/erasures", json={"subject": "carol", "due_days": 1000}, headers=admin), 422,
               "InvalidRequest")
    is_problem(http.post("/v1/erasures", json={"reason": "no subject"}, headers=admin), 422, "InvalidRequest")
    is_problem(http.post("/v1/erasures", json={"subject": "x", "status_callback_urls": ["https://evil.example/"]},
                         headers=admin), 422, "InvalidRequest")
    is_problem(http.post("/v1/erasures", content=b"{not json", headers={**admin, "content-type": "application/json"}),
               422, "InvalidRequest")
    lc.drain()
    listed = http.get("/v1/erasures", headers=reader).json()
    assert [x["id"] for x in listed] == [erasure_id] and listed[0]["status"] == "completed"
    assert http.get("/v1/erasures?status=pending", headers=reader).json() == []
    assert http.get(f"/v1/erasures/{erasure_id[:8]}", headers=reader).json()["parts"][0]["certified"]
    is_problem(http.delete(f"/v1/erasures/{erasure_id}", headers=admin), 409, "RequestNotCancellable")
    is_problem(http.get("/no/such/route"), 404, "NotFound")
    is_problem(http.put("/v1/models", headers=reader), 405, "MethodNotAllowed")
    docs = http.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    paths = http.get("/openapi.json").json()["paths"]
    assert {"/discovery", "/opengdpr_requests", "/opengdpr_requests/{subject_request_id}", "/v1/models",
            "/v1/erasures", "/v1/models/{name}/learn", "/v1/models/{name}/forget", "/v1/models/{name}/predict",
            "/v1/models/{name}/reports/latest"} <= set(paths)


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_typed_error_has_a_status_that_is_not_500():
    import lifecycle.api  # noqa: F401  (every module that defines errors is loaded)

    names = set(lifecycle_errors.__all__)
    for cls in set(_subclasses(LifecycleError)) | {getattr(lifecycle_errors, n) for n in names}:
        assert 400 <= status_of(cls("x")) < 500 or status_of(cls("x")) in (501, 503), cls
    assert status_of(lifecycle_errors.RequestTooLarge("x")) == 413
    assert status_of(lifecycle_errors.UnknownModel("x")) == 404
    assert status_of(lifecycle_errors.StorageFault("x")) == 503
