"""The operator's side: tokens and erasures from the command line, and
`lifecycle serve --http` serving the API next to the scheduler."""

from __future__ import annotations

import signal
import socket
import uuid

import httpx
from typer.testing import CliRunner

import lifecycle
from lifecycle.cli import app
from tests.data import digits_tasks, learn_task, make_model
from tests.helpers import start_worker, wait_for

runner = CliRunner()


def test_token_create_list_revoke_and_erase(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    lc = lifecycle.connect(url)
    make_model(lc)
    t0, _, _ = digits_tasks()
    learn_task(lc, "digits", t0, subjects=["alice"] * len(t0.y))
    lc.drain()

    created = runner.invoke(app, ["token", "create", "crm", "--scope", "erasure:submit", "--scope", "read",
                                  "--db", url])
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip().splitlines()[-1]
    token = lc.authenticate(secret)
    assert token.scopes == ("erasure:submit", "read")
    listed = runner.invoke(app, ["token", "list", "--db", url])
    assert token.id in listed.output and "crm" in listed.output and secret not in listed.output
    bad = runner.invoke(app, ["token", "create", "x", "--scope", "root", "--db", url])
    assert bad.exit_code != 0
    assert runner.invoke(app, ["token", "revoke", token.id, "--db", url]).exit_code == 0
    assert not lc.authenticate(secret).active

    erased = runner.invoke(app, ["erase", "--subject", "alice", "--reason", "art. 17", "--db", url])
    assert erased.exit_code == 0, erased.output
    erasure_id = erased.stdout.strip().splitlines()[-1]
    assert lc.erasure(erasure_id).status == "pending"
    lc.drain()
    shown = runner.invoke(app, ["erase", "--status", erasure_id[:8], "--db", url])
    assert "completed" in shown.output and "yes" in shown.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_with_http_applies_an_erasure_submitted_over_http(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    lc = lifecycle.connect(url, artifacts=tmp_path / "artifacts")
    make_model(lc)
    t0, _, _ = digits_tasks()
    learn_task(lc, "digits", t0, subjects=["bob"] * len(t0.y))
    lc.drain()
    _, secret = lc.create_token("crm", scopes=["erasure:submit"])
    port = _free_port()
    proc = start_worker(url, tmp_path / "artifacts", "--http", f"127.0.0.1:{port}")
    try:
        base = f"http://127.0.0.1:{port}"

        def up():
            try:
                return httpx.get(base + "/discovery", timeout=2).status_code == 200
            except httpx.TransportError:
                return proc.poll() is not None and AssertionError(proc.stdout.read())

        assert wait_for(up, 60, "the HTTP API to listen") is True
        request_id = str(uuid.uuid4())
        body = {"subject_request_id": request_id, "subject_request_type": "erasure",
                "subject_identities": [{"identity_type": "controller_customer_id", "identity_value": "bob",
                                        "identity_format": "raw"}]}
        headers = {"Authorization": f"Bearer {secret}"}
        assert httpx.post(base + "/opengdpr_requests", json=body, headers=headers).status_code == 201
        wait_for(lambda: httpx.get(f"{base}/opengdpr_requests/{request_id}", headers=headers)
                 .json()["request_status"] == "completed", 60, "the erasure to complete")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert secret not in out
    refused = httpx.Client()
    try:
        refused.get(f"http://127.0.0.1:{port}/discovery", timeout=1)
        raise AssertionError("the HTTP API still answers after the service stopped")
    except httpx.TransportError:
        pass
