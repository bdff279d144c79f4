"""Erasures' status callbacks: written to an outbox with each status change,
sent signed to a real receiver on a loopback port, retried on a back-off,
given up at the limit or when the host leaves the allow-list, and sent again
by a restarted service after a SIGKILL mid-delivery."""

from __future__ import annotations

import base64
import datetime as dt
import json
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

import lifecycle
from lifecycle.callbacks import Deliverer, DeliveryPolicy
from lifecycle.errors import InvalidConfig, InvalidRequest
from lifecycle.service import Service
from lifecycle.store.outbox import Outbox
from lifecycle.store.records import DeliveryState
from tests.data import alternating_subjects, digits_tasks, learn_task, make_model
from tests.helpers import start_worker, wait_for
from tests.http.support import served as serving

LOOPBACK = {"127.0.0.1"}


class Receiver:
    """A status-callback receiver on a free loopback port, in a thread.

    It records every POST (body and lower-cased headers) and answers with
    ``statuses`` in turn, then 202 (a 3xx points elsewhere on itself). With
    ``hold_first`` it keeps the first request open until ``release`` is set,
    then answers 500 to whoever still listens. ``accepted`` holds the bodies
    it answered 202.
    """

    def __init__(self, statuses: tuple[int, ...] = (), *, hold_first: bool = False, delay: float = 0.0) -> None:
        self.statuses = statuses
        self.hold_first = hold_first
        self.delay = delay
        self.received: list[tuple[bytes, dict[str, str]]] = []
        self.accepted: list[bytes] = []
        self.paths: list[str] = []
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.lock = threading.Lock()

    def url(self, path: str = "/cb") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers["Content-Length"]))
        with self.lock:
            n = len(self.received)
            self.received.append((body, {k.lower(): v for k, v in handler.headers.items()}))
            self.paths.append(handler.path)
        if self.hold_first and n == 0:
            self.arrived.set()
            self.release.wait(60)
            status = 500
        else:
            status = self.statuses[n] if n < len(self.statuses) else 202
        time.sleep(self.delay)
        if status == 202:
            with self.lock:
                self.accepted.append(body)
        handler.send_response(status)
        if 300 <= status < 400:
            handler.send_header("Location", "/elsewhere")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def __enter__(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                receiver._answer(self)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="callback-receiver", daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def served(lc):
    with serving(lc) as client:
        yield lc, client


def verify(body: bytes, headers: dict[str, str], public_pem: bytes) -> None:
    """Raises InvalidSignature unless the body is signed by the key in ``public_pem``."""
    key = serialization.load_pem_public_key(public_pem)
    key.verify(base64.b64decode(headers["x-opengdpr-signature"]), body)


def statuses(rows) -> list[str]:
    return [json.loads(r.body)["request_status"] for r in rows]


def opendsr_body(subject: str, **extra) -> dict:
    return {"subject_request_id": str(uuid.uuid4()), "subject_request_type": "erasure",
            "subject_identities": [{"identity_type": "controller_customer_id", "identity_value": subject,
                                    "identity_format": "raw"}], **extra}


def alice_and_bob(lc) -> None:
    make_model(lc, "a")
    t0, _, _ = digits_tasks()
    learn_task(lc, "a", t0, subjects=alternating_subjects(len(t0.y), ("alice", "bob")))
    lc.drain()


def test_opendsr_status_changes_are_called_back_once_each_in_order_and_signed(served):
    lc, http = served
    alice_and_bob(lc)
    _, secret = lc.create_token("crm", scopes=["erasure:submit", "read"])
    auth = {"Authorization": f"Bearer {secret}"}
    pem = http.get("/v1/public-key").content
    discovery = http.get("/discovery").json()
    assert "X-OpenGDPR-Signature" in discovery["callback_signature"]
    assert discovery["callback_signature"].endswith(discovery["processor_certificate"])
    deliverer = Deliverer(lc, LOOPBACK, DeliveryPolicy(timeout=5))

    with Receiver() as receiver:
        body = opendsr_body("alice", status_callback_urls=[receiver.url()])
        created = http.post("/opengdpr_requests", json=body, headers=auth)
        assert created.status_code == 201, created.text
        erasure_id = created.json()["erasure_id"]
        status_url = f"/opengdpr_requests/{body['subject_request_id']}"
        assert [d.state for d in deliverer.run()] == [DeliveryState.DELIVERED]  # the first status: pending

        claim = lc.ledger.queue.claim("w", 60.0)  # a worker starts the forget
        assert http.get(status_url, headers=auth).json()["request_status"] == "in_progress"
        lc.ledger.queue.release(claim, "test")
        lc.drain()
        assert http.get(status_url, headers=auth).json()["request_status"] == "completed"
        assert http.get(status_url, headers=auth).json()["request_status"] == "completed"  # no change, no callback
        sent = deliverer.run()
        assert deliverer.run() == []

    rows = Outbox(lc.ledger).list(erasure_id)
    assert statuses(rows) == ["pending", "in_progress", "completed"]
    assert [d.id for d in sent] == [r.id for r in rows[1:]]
    # the receiver got exactly the stored bytes, once each, in the order of the changes
    assert [b for b, _ in receiver.received] == [r.body for r in rows] == receiver.accepted
    for sent_body, headers in receiver.received:
        assert headers["content-type"] == "application/json"
        verify(sent_body, headers, pem)
        with pytest.raises(InvalidSignature):
            verify(sent_body + b" ", headers, pem)  # the same JSON, other bytes
    done = json.loads(rows[-1].body)
    assert done["subject_request_id"] == body["subject_request_id"] and done["erasure_id"] == erasure_id
    assert done["lifecycle_status"] == "completed" and done["completed_time"] and done["api_version"] == "0.1"
    assert done["status_callback_url"] == receiver.url()
    for row in rows:
        [attempt] = Outbox(lc.ledger).attempts(row.id)
        assert attempt.ok and attempt.http_status == 202 and attempt.error is None
        assert row.state == DeliveryState.DELIVERED and row.attempts == 1 and row.finished_at == attempt.at


def test_a_receiver_failing_three_times_then_accepting_gets_each_change_exactly_once(clocked_lc, clock):
    lc = clocked_lc
    alice_and_bob(lc)
    policy = DeliveryPolicy(first_retry=5.0, max_retry=3600.0, max_attempts=10, timeout=5.0)
    deliverer = Deliverer(lc, LOOPBACK, policy)
    with Receiver((500, 500, 500)) as receiver:
        e = lc.erase(subject="alice", status_callback_urls=[receiver.url()])
        start = clock.now
        assert [d.state for d in deliverer.run()] == [DeliveryState.PENDING]  # 500
        assert deliverer.run() == []  # not due again before its back-off
        lc.drain()
        assert lc.erasure(e.id).status == "completed"  # a second change, queued behind the first
        for wait in (5, 10, 20):
            clock.advance(wait)
            deliverer.run()
        assert deliverer.run() == []
    outbox = Outbox(lc.ledger)
    first, second = outbox.list(e.id)
    assert statuses([first, second]) == ["pending", "completed"]
    assert first.state == second.state == DeliveryState.DELIVERED
    assert receiver.accepted == [first.body, second.body]
    assert [b for b, _ in receiver.received] == [first.body] * 4 + [second.body]
    tries = outbox.attempts(first.id)
    assert [(a.http_status, a.ok) for a in tries] == [(500, False)] * 3 + [(202, True)]
    assert [a.error for a in tries] == ["HTTP 500"] * 3 + [None]
    # the back-off doubles from first_retry: tried at 0, 5, 15 and 35 s
    assert [(a.at - start).total_seconds() for a in tries] == [0.0, 5.0, 15.0, 35.0]
    assert first.attempts == 4
    assert [(a.http_status, a.ok) for a in outbox.attempts(second.id)] == [(202, True)]


def test_the_retry_limit_gives_a_callback_up_and_a_later_change_still_goes(clocked_lc, clock):
    lc = clocked_lc
    alice_and_bob(lc)
    deliverer = Deliverer(lc, LOOPBACK, DeliveryPolicy(first_retry=5.0, max_retry=8.0, max_attempts=3, timeout=5.0))
    with Receiver((302, 500, 500)) as receiver:
        e = lc.erase(subject="bob", status_callback_urls=[receiver.url()])
        deliverer.run()
        clock.advance(5)
        deliverer.run()
        clock.advance(8)  # capped at max_retry
        [given_up] = deliverer.run()
        assert given_up.state == DeliveryState.GAVE_UP and given_up.finished_at == clock.now
        clock.advance(3600)
        assert deliverer.run() == []
        lc.drain()
        assert lc.erasure(e.id).status == "completed"
        [delivered] = deliverer.run()
    assert delivered.state == DeliveryState.DELIVERED and statuses([given_up, delivered]) == ["pending", "completed"]
    tries = Outbox(lc.ledger).attempts(given_up.id)
    assert [(a.http_status, a.ok) for a in tries] == [(302, False), (500, False), (500, False)]
    assert "redirects are not followed" in tries[0].error
    assert receiver.paths == ["/cb"] * 4  # the redirect was never followed
    assert receiver.accepted == [delivered.body]
    # the database refuses a delivery state the code does not know
    with pytest.raises(IntegrityError, match="ck_callback_outbox_state|CHECK constraint failed"):
        with lc.ledger.engine.begin() as conn:
            conn.execute(text("UPDATE callback_outbox SET state = 'sent'"))


def test_a_cancel_is_called_back_and_a_repeat_or_a_refused_submit_writes_none(lc):
    alice_and_bob(lc)
    with Receiver() as receiver:
        callbacks = [receiver.url("/one"), receiver.url("/two")]
        e = lc.erase(subject="bob", idempotency_key="crm-7", status_callback_urls=callbacks)
        assert lc.erase(subject="bob", idempotency_key="crm-7", status_callback_urls=callbacks).id == e.id
        with pytest.raises(InvalidRequest):
            lc.erase(subject="alice", status_callback_urls=callbacks + ["ftp://127.0.0.1/x"])
        assert len(Outbox(lc.ledger).list()) == 2  # the first status, once per URL
        lc.cancel_erasure(e.id)
        sent = Deliverer(lc, LOOPBACK, DeliveryPolicy(timeout=5)).run()
    rows = Outbox(lc.ledger).list(e.id)
    assert [(r.url, json.loads(r.body)["request_status"]) for r in rows] == [
        (callbacks[0], "pending"), (callbacks[1], "pending"), (callbacks[0], "cancelled"), (callbacks[1], "cancelled")]
    assert sorted(d.id for d in sent) == [r.id for r in rows]
    assert all(json.loads(r.body)["subject_request_id"] == e.id for r in rows)  # no OpenDSR id: the erasure's
    assert sorted(receiver.accepted) == sorted(r.body for r in rows)


def test_refreshes_at_once_announce_a_change_once(db_url, tmp_path):
    lc = lifecycle.connect(db_url, artifacts=tmp_path / "artifacts", keys=tmp_path / "keys")
    alice_and_bob(lc)
    e = lc.erase(subject="alice", status_callback_urls=["http://127.0.0.1:9/cb"])
    lc.drain()
    together = threading.Barrier(4)

    def read_status() -> str:
        own = lifecycle.connect(db_url, artifacts=tmp_path / "artifacts", keys=tmp_path / "keys")
        together.wait(30)
        return own.erasure(e.id).status

    with ThreadPoolExecutor(4) as pool:
        seen = [f.result() for f in [pool.submit(read_status) for _ in range(4)]]
    assert seen == ["completed"] * 4
    assert statuses(Outbox(lc.ledger).list(e.id)) == ["pending", "completed"]


def test_callback_hosts_are_checked_at_submit_and_again_at_delivery(served):
    lc, http = served
    _, secret = lc.create_token("crm", scopes=["erasure:submit"])
    auth = {"Authorization": f"Bearer {secret}"}
    refused = http.post("/opengdpr_requests", json=opendsr_body("zed", status_callback_urls=[
        "https://collector.example/cb"]), headers=auth)
    assert refused.status_code == 422 and "allow-list" in refused.json()["detail"]
    assert lc.erasures() == [] and Outbox(lc.ledger).list() == []
    with Receiver() as receiver:
        created = http.post("/opengdpr_requests", json=opendsr_body("zed", status_callback_urls=[receiver.url()]),
                            headers=auth)
        assert created.status_code == 201, created.text
        # the operator has since taken 127.0.0.1 off the allow-list
        [gone] = Deliverer(lc, {"localhost"}, DeliveryPolicy(timeout=5)).run()
    assert gone.state == DeliveryState.GAVE_UP and receiver.received == []
    [attempt] = Outbox(lc.ledger).attempts(gone.id)
    assert not attempt.ok and attempt.http_status is None and "allow-list" in attempt.error


def test_two_deliverers_at_once_send_each_callback_once(db_url, tmp_path):
    lc = lifecycle.connect(db_url, artifacts=tmp_path / "artifacts", keys=tmp_path / "keys")
    with Receiver(delay=0.01) as receiver:
        for i in range(25):  # held nowhere: each completes at once, one callback per URL
            lc.erase(subject=f"s{i}", status_callback_urls=[receiver.url("/a"), receiver.url("/b")])
        rows = Outbox(lc.ledger).list()
        both = threading.Barrier(2)

        def deliver() -> list:
            own = lifecycle.connect(db_url, artifacts=tmp_path / "artifacts", keys=tmp_path / "keys")
            both.wait(30)
            return Deliverer(own, LOOPBACK, DeliveryPolicy(timeout=10)).run(limit=1000)

        with ThreadPoolExecutor(2) as pool:
            results = [f.result() for f in [pool.submit(deliver) for _ in range(2)]]
    sent = sorted(d.id for result in results for d in result)
    assert len(rows) == 50 and sent == [r.id for r in rows]  # every row by one deliverer, none by both
    assert sorted(receiver.accepted) == sorted(r.body for r in rows) and len(receiver.received) == 50
    assert all(r.state == DeliveryState.DELIVERED and r.attempts == 1 for r in Outbox(lc.ledger).list())


def test_a_callback_in_flight_when_the_service_is_killed_is_sent_after_restart(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    artifacts = tmp_path / "artifacts"
    lc = lifecycle.connect(url, artifacts=artifacts)
    monkeypatch.setenv("LIFECYCLE_CALLBACK_HOSTS", "127.0.0.1")  # the services inherit it
    options = ("--callback-interval", "0.2", "--callback-timeout", "2", "--callback-retry", "1")
    outbox = Outbox(lc.ledger)
    with Receiver(hold_first=True) as receiver:
        e = lc.erase(subject="zed", status_callback_urls=[receiver.url()])  # held nowhere: completed, one callback
        [row] = outbox.list(e.id)
        service = start_worker(url, artifacts, *options)
        try:
            wait_for(receiver.arrived.is_set, 90, "the callback to reach the receiver")
            service.send_signal(signal.SIGKILL)
            service.communicate(timeout=30)
        finally:
            if service.poll() is None:
                service.kill()
        receiver.release.set()  # its answer goes to a dead process
        [killed] = outbox.list(e.id)
        # claimed by the dead service and never recorded: it falls due when that claim ends
        assert killed.state == DeliveryState.PENDING and killed.attempts == 0
        assert killed.next_attempt_at > row.next_attempt_at + dt.timedelta(seconds=4)

        restarted = start_worker(url, artifacts, *options)
        try:
            done = wait_for(lambda: [d for d in outbox.list(e.id) if d.state != DeliveryState.PENDING], 90,
                            "the callback to be sent after the restart")
        finally:
            restarted.send_signal(signal.SIGTERM)
            out, _ = restarted.communicate(timeout=60)
        assert restarted.returncode == 0, out
    assert done[0].state == DeliveryState.DELIVERED
    # sent twice (at least once), accepted once, both times signed over the same bytes
    assert [b for b, _ in receiver.received] == [row.body, row.body] and receiver.accepted == [row.body]
    for sent_body, headers in receiver.received:
        verify(sent_body, headers, lc.signer.public_pem())
    assert [(a.http_status, a.ok) for a in outbox.attempts(row.id)] == [(202, True)]


def test_delivery_settings_are_checked(tmp_path):
    for bad in ({"first_retry": 0}, {"first_retry": float("nan")}, {"max_retry": 1.0}, {"max_attempts": 0},
                {"max_attempts": True}, {"timeout": -1}):
        with pytest.raises(InvalidConfig):
            DeliveryPolicy(**bad)
    lc = lifecycle.connect(f"sqlite:///{tmp_path / 'ledger.db'}", artifacts=tmp_path / "artifacts")
    with pytest.raises(InvalidConfig, match="callback_interval"):
        Service(lc, callback_interval=0)
    with pytest.raises(InvalidConfig, match="max_attempts"):
        Service(lc, callback_max_attempts=0)
    policy = DeliveryPolicy(first_retry=5.0, max_retry=60.0, max_attempts=6)
    assert [policy.retry_in(n) for n in range(1, 7)] == [5.0, 10.0, 20.0, 40.0, 60.0, None]
