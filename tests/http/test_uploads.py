"""Learn, forget, predict and reports over the served API (uvicorn on loopback, both backends): uploads
as raw and multipart ``.npz``, every scope, the body limit, and malformed bodies (hypothesis), each a
typed problem with the ledger left byte for byte as it was."""

from __future__ import annotations

import io
import json
import socket
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifecycle import signing
from lifecycle.http.limits import HttpLimits, RateLimit
from tests.data import digits_tasks, make_model
from tests.helpers import snapshot
from tests.http.support import bearer, is_problem, served

GENEROUS = RateLimit(rate=1e6, burst=10**6)  # these tests are about bodies, not rates


def npz(compressed: bool = False, **arrays) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def task_npz(t, prefix: str, subjects=None, probe: bool = True, **kw) -> bytes:
    arrays = {"x": t.X, "y": t.y, "ids": np.array([f"{prefix}/{i}" for i in range(len(t.y))])}
    if subjects is not None:
        arrays["subjects"] = np.array(subjects)
    if probe:
        arrays |= {"probe_x": t.X_probe, "probe_y": t.y_probe}
    return npz(**arrays, **kw)


def scoped_tokens(lc) -> dict[str, str]:
    out = {scope: lc.create_token(scope, scopes=[scope])[1]
           for scope in ("learn:submit", "erasure:submit", "read", "predict", "admin")}
    out["revoked"] = lc.create_token("revoked", scopes=["admin"])[1]
    lc.revoke_token(lc.authenticate(out["revoked"]).id)
    return out


def test_learn_forget_predict_and_certificate_over_http_record_the_token(lc, tmp_path):
    make_model(lc, "digits")
    t0, t1, _ = digits_tasks()
    secrets = scoped_tokens(lc)
    learner = lc.authenticate(secrets["learn:submit"]).id
    with served(lc, limits=HttpLimits(GENEROUS)) as http:
        h = bearer(secrets["learn:submit"])
        raw = http.post(f"/v1/models/digits/learn?task={t0.name}&reason=first", headers=h,
                        content=task_npz(t0, "a", subjects=["alice", ""] * (len(t0.y) // 2)))
        assert raw.status_code == 202, raw.text
        first = raw.json()
        assert raw.headers["location"] == f"/v1/requests/{first['id']}"
        assert first["kind"] == "learn" and first["status"] == "queued" and first["reason"] == "first"
        form = {"task": t1.name, "idempotency_key": "batch-2", "requested_by": "etl"}
        body = task_npz(t1, "b", compressed=True)
        multi = http.post("/v1/models/digits/learn", headers=h, data=form, files={"file": ("b.npz", body)})
        assert multi.status_code == 202, multi.text
        assert multi.json()["requested_by"] == "etl"
        # the same key and payload is the same request; the key with other data is a conflict
        again = http.post("/v1/models/digits/learn", headers=h, data=form, files={"file": ("b.npz", body)})
        assert again.json()["id"] == multi.json()["id"]
        is_problem(http.post("/v1/models/digits/learn", headers=h, data=form,
                             files={"file": ("c.npz", task_npz(t1, "c"))}), 409, "IdempotencyConflict")
        is_problem(http.post("/v1/models/digits/learn?task=other", headers=h, data=form,
                             files={"file": ("b.npz", body)}), 422, "InvalidRequest")
        lc.drain()

        reader = bearer(secrets["read"])
        assert http.get(f"/v1/requests/{first['id']}", headers=reader).json()["status"] == "applied"
        predicted = http.post("/v1/models/digits/predict", headers=bearer(secrets["predict"]),
                              json=t0.X_probe.tolist())
        assert predicted.status_code == 200, predicted.text
        assert predicted.json()["labels"] == lc.predict("digits", t0.X_probe).tolist()
        buf = io.BytesIO()
        np.save(buf, t1.X_probe)
        as_npy = http.post("/v1/models/digits/predict", headers=bearer(secrets["predict"]), content=buf.getvalue())
        assert as_npy.json()["labels"] == lc.predict("digits", t1.X_probe).tolist()
        wrapped = http.post("/v1/models/digits/predict", headers=bearer(secrets["predict"]),
                            json={"x": t1.X_probe[:3].tolist()})
        assert wrapped.json()["labels"] == as_npy.json()["labels"][:3]

        eraser = bearer(secrets["erasure:submit"])
        forgot = http.post("/v1/models/digits/forget", headers=eraser, json={"subject": "alice", "reason": "art. 17"})
        assert forgot.status_code == 202, forgot.text
        is_problem(http.post("/v1/models/digits/forget", headers=eraser, json={"subject": "alice"}), 409,
                   "AlreadyForgotten")
        is_problem(http.post("/v1/models/digits/forget", headers=eraser, json={"task": t0.name, "subject": "x"}),
                   422, "InvalidRequest")
        is_problem(http.post("/v1/models/digits/forget", headers=eraser, json={"samples": ["never/1"]}), 422,
                   "UnknownSamples")
        is_problem(http.post("/v1/models/digits/forget", headers=eraser, json={"subject": "alice", "oops": 1}),
                   422, "InvalidRequest")
        is_problem(http.post("/v1/models/nope/forget", headers=eraser, json={"subject": "alice"}), 404,
                   "UnknownModel")
        lc.drain()
        cert = http.get(f"/v1/certificates/{forgot.json()['id']}", headers=reader).json()
        assert signing.verify(cert, lc.signer.public_pem())["request"]["id"] == forgot.json()["id"]

    submitted = {e.request_id: e.detail.get("token") for e in lc.events("digits") if e.kind == "submitted"}
    eraser_id = lc.authenticate(secrets["erasure:submit"]).id
    assert submitted == {first["id"]: learner, multi.json()["id"]: learner, forgot.json()["id"]: eraser_id}
    _, problems = lc.ledger.audit_problems()
    assert problems == []


def test_every_scope_and_token_case_on_the_new_endpoints(lc):
    make_model(lc, "digits")
    t0, _, _ = digits_tasks()
    secrets = scoped_tokens(lc)
    body = task_npz(t0, "a")
    calls = {
        "learn:submit": lambda http, h: http.post(f"/v1/models/digits/learn?task={t0.name}", headers=h, content=body),
        "erasure:submit": lambda http, h: http.post("/v1/models/digits/forget", headers=h, json={"task": t0.name}),
        "predict": lambda http, h: http.post("/v1/models/digits/predict", headers=h, json=[[0.0] * 64]),
        "read": lambda http, h: http.get("/v1/models/digits/reports/latest", headers=h),
    }
    before = snapshot(lc)
    with served(lc, limits=HttpLimits(GENEROUS)) as http:
        for scope, call in calls.items():
            is_problem(call(http, {}), 401, "Unauthenticated")
            is_problem(call(http, {"Authorization": "Token x"}), 401, "Unauthenticated")
            is_problem(call(http, bearer("lct_000000000000_nope")), 401, "Unauthenticated")
            is_problem(call(http, bearer(secrets["revoked"])), 401, "Unauthenticated")
            for other in calls:
                if other != scope:
                    is_problem(call(http, bearer(secrets[other])), 403, "Forbidden")
        assert snapshot(lc) == before  # nothing refused was written
        # with the scope (or admin) each one reaches the Python API
        assert calls["learn:submit"](http, bearer(secrets["learn:submit"])).status_code == 202
        is_problem(calls["predict"](http, bearer(secrets["admin"])), 409, "NotReady")
        lc.drain()
        assert calls["predict"](http, bearer(secrets["predict"])).status_code == 200
        is_problem(calls["read"](http, bearer(secrets["read"])), 409, "NotReady")  # no report written yet
        assert calls["erasure:submit"](http, bearer(secrets["admin"])).status_code == 202


def test_the_same_learn_sent_at_once_from_several_clients_is_one_request(lc):
    make_model(lc, "digits")
    t0, t1, _ = digits_tasks()
    secret = lc.create_token("etl", scopes=["learn:submit"])[1]
    same, other = task_npz(t0, "a"), task_npz(t1, "b")
    with served(lc, limits=HttpLimits(GENEROUS)) as http:
        start = threading.Barrier(6)

        def send(i):
            start.wait()
            if i < 4:  # the same payload under the same key
                return http.post(f"/v1/models/digits/learn?task={t0.name}&idempotency_key=k", content=same,
                                 headers=bearer(secret))
            return http.post(f"/v1/models/digits/learn?task={t1.name}&idempotency_key=k{i}", content=other,
                             headers=bearer(secret))

        with ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(send, range(6)))
    assert [r.status_code for r in responses[:4]] == [202] * 4, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses[:4]}) == 1
    # other data under two keys at once: one takes the sample ids, the other is refused for them
    statuses = sorted(r.status_code for r in responses[4:])
    assert statuses == [202, 422], [r.text for r in responses[4:]]
    assert next(r for r in responses[4:] if r.status_code == 422).json()["error"] == "DuplicateSampleIds"
    assert len(lc.requests("digits")) == 2
    lc.drain()
    assert {r.status for r in lc.requests("digits")} == {"applied"}


def test_the_latest_report_is_served_as_written(lc, tmp_path):
    from lifecycle.service import Service

    make_model(lc, "digits")
    t0, _, _ = digits_tasks()
    secrets = scoped_tokens(lc)
    with served(lc, limits=HttpLimits(GENEROUS)) as http:
        h = bearer(secrets["admin"])
        assert http.post(f"/v1/models/digits/learn?task={t0.name}", headers=h, content=task_npz(t0, "a")).status_code \
            == 202
        lc.drain()
        service = Service(lc, reports_dir=tmp_path / "reports")
        service.write_reports()
        service.write_reports()  # the latest of two
        latest = lc.ledger.reports(lc.model("digits").id)[-1]
        as_json = http.get("/v1/models/digits/reports/latest", headers=bearer(secrets["read"]))
        assert as_json.status_code == 200, as_json.text
        assert as_json.headers["x-report-sha256"] == latest.json_sha256
        assert json.loads(as_json.content)["model"]["name"] == "digits"
        page = http.get("/v1/models/digits/reports/latest?format=html", headers=bearer(secrets["read"]))
        assert page.headers["content-type"].startswith("text/html")
        assert page.content == open(latest.html_path, "rb").read()
        is_problem(http.get("/v1/models/digits/reports/latest?format=pdf", headers=h), 422, "InvalidRequest")
        with open(latest.html_path, "ab") as f:
            f.write(b"<!-- changed -->")
        is_problem(http.get("/v1/models/digits/reports/latest?format=html", headers=h), 503, "StorageFault")


def _raw_request(port: int, head: str) -> bytes:
    """Send only a request's head (no body) and read what comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode())
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_bodies_over_the_limit_are_413_before_or_while_being_read(lc):
    make_model(lc, "digits")
    t0, _, _ = digits_tasks()
    admin = lc.create_token("admin", scopes=["admin"])[1]
    before = snapshot(lc)
    limits = HttpLimits(GENEROUS, max_body=256 * 1024)
    with served(lc, limits=limits) as http:
        h = bearer(admin)
        port = http.base_url.port
        # a declared length over the limit is refused with no byte of the body sent
        head = (f"POST /v1/models/digits/learn?task=a HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {admin}\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {2**40}\r\n\r\n")
        reply = _raw_request(port, head)
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"] == "RequestTooLarge"
        # a body sent in chunks, without a length, is counted as it is read
        chunked = http.post("/v1/models/digits/learn?task=a", headers=h,
                            content=(b"\0" * 65536 for _ in range(8)))
        is_problem(chunked, 413, "RequestTooLarge")
        is_problem(http.post("/v1/models/digits/forget", headers=h, json={"samples": ["x" * 100] * 3000}), 413,
                   "RequestTooLarge")
        # a small compressed body whose arrays would unpack past the limit
        bomb = npz(compressed=True, x=np.zeros((2000, 64), np.float32), y=np.zeros(2000, np.int64),
                   ids=np.array([str(i) for i in range(2000)]))
        assert len(bomb) < limits.max_body
        is_problem(http.post("/v1/models/digits/learn?task=a", headers=h, content=bomb), 413, "RequestTooLarge")
        # a header that declares an enormous array
        is_problem(http.post("/v1/models/digits/predict", headers=h, content=_npy_header((10**12, 64))), 413,
                   "RequestTooLarge")
        is_problem(http.post("/v1/models/digits/learn?task=a", headers=h,
                             content=_zip({"x.npy": _npy_header((10**9, 64)), "y.npy": b"", "ids.npy": b""})),
                   413, "RequestTooLarge")
        # within the limit it goes through
        small = task_npz(t0, "a", probe=True)
        assert len(small) < limits.max_body
        assert http.post(f"/v1/models/digits/learn?task={t0.name}", headers=h, content=small).status_code == 202
    tables, _ = snapshot(lc)
    assert len(tables["requests"]) == len(before[0]["requests"]) + 1


def _npy_header(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


# ---- malformed bodies: always a 4xx problem, never a write ----------------------------------------------

def _valid_arrays(n: int = 6) -> dict[str, np.ndarray]:
    t0, _, _ = digits_tasks()
    return {"x": t0.X[:n], "y": t0.y[:n], "ids": np.array([f"h/{i}" for i in range(n)]),
            "probe_x": t0.X_probe[:4], "probe_y": t0.y_probe[:4]}


def _broken(kind: str, draw) -> dict[str, np.ndarray]:
    arrays = _valid_arrays()
    if kind == "x-strings":
        arrays["x"] = np.array([["a"] * 64] * 6)
    elif kind == "x-complex":
        arrays["x"] = arrays["x"].astype(np.complex64)
    elif kind == "x-1d":
        arrays["x"] = arrays["x"][:, 0]
    elif kind == "x-nan":
        arrays["x"] = arrays["x"].astype(np.float32)
        arrays["x"][draw(st.integers(0, 5)), draw(st.integers(0, 63))] = np.nan
    elif kind == "y-float":
        arrays["y"] = arrays["y"].astype(np.float64) + 0.5
    elif kind == "y-range":
        arrays["y"] = arrays["y"] + draw(st.sampled_from([10, -20, 2**40]))
    elif kind == "y-short":
        arrays["y"] = arrays["y"][: draw(st.integers(0, 5))]
    elif kind == "ids-int":
        arrays["ids"] = np.arange(6)
    elif kind == "ids-dup":
        arrays["ids"] = np.array(["same"] * 6)
    elif kind == "no-ids":
        del arrays["ids"]
    elif kind == "probe-half":
        del arrays["probe_y"]
    elif kind == "extra":
        arrays["weights"] = np.ones(6)
    elif kind == "subjects-bytes":
        arrays["subjects"] = np.array([b"alice"] * 6)
    return arrays


BROKEN = ["x-strings", "x-complex", "x-1d", "x-nan", "y-float", "y-range", "y-short", "ids-int", "ids-dup", "no-ids",
          "probe-half", "extra", "subjects-bytes"]


@st.composite
def bad_learn_bodies(draw):
    how = draw(st.sampled_from(["random", "truncated", "broken", "pickled", "multipart-garbage"]))
    if how == "random":
        return draw(st.binary(max_size=2048)), None
    if how == "truncated":
        whole = npz(compressed=draw(st.booleans()), **_valid_arrays())
        return whole[: draw(st.integers(0, len(whole) - 1))], None
    if how == "pickled":
        buf = io.BytesIO()
        np.savez(buf, x=np.array([{"a": 1}] * 6, dtype=object), y=np.zeros(6, np.int64), ids=np.array(["a"] * 6))
        return buf.getvalue(), None
    if how == "multipart-garbage":
        return draw(st.binary(max_size=512)), "multipart/form-data; boundary=xyz"
    return npz(compressed=draw(st.booleans()), **_broken(draw(st.sampled_from(BROKEN)), draw)), None


npy_headers = st.builds(_npy_header, st.lists(st.integers(0, 5), max_size=3).map(tuple),
                        st.sampled_from(["<f4", "<i8", "|O", "<c8", "<U3", "|V8"]))


@pytest.fixture
def loaded(lc):
    make_model(lc, "digits")
    t0, _, _ = digits_tasks()
    lc.learn("digits", task=t0.name, X=t0.X, y=t0.y, sample_ids=[f"s/{i}" for i in range(len(t0.y))],
             probe=(t0.X_probe, t0.y_probe))
    lc.drain()
    return lc


def test_malformed_bodies_are_typed_problems_and_write_nothing(loaded):
    lc = loaded
    secret = lc.create_token("admin", scopes=["admin"])[1]
    with served(lc, limits=HttpLimits(GENEROUS)) as http:
        h = bearer(secret)

        @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(learn=bad_learn_bodies(), predict=st.one_of(st.binary(max_size=1024), npy_headers),
               forget=st.binary(max_size=256))
        def check(learn, predict, forget):
            before = snapshot(lc)
            body, content_type = learn
            for response in (
                http.post("/v1/models/digits/learn?task=fresh", content=body,
                          headers=h | ({"Content-Type": content_type} if content_type else {})),
                http.post("/v1/models/digits/predict", headers=h, content=predict),
                http.post("/v1/models/digits/predict", headers=h | {"Content-Type": "application/json"},
                          content=predict),
                http.post("/v1/models/digits/forget", headers=h | {"Content-Type": "application/json"},
                          content=forget),
            ):
                assert 400 <= response.status_code < 500, response.text
                assert response.headers["content-type"].startswith("application/problem+json")
                problem = response.json()
                assert problem["status"] == response.status_code and problem["detail"]
                assert "Traceback" not in response.text
            assert snapshot(lc) == before

        check()
