"""Signed certificates: built from the verification pass, verifiable offline, tamper-evident."""

from __future__ import annotations

import base64
import json
import math
import shutil
import subprocess

import numpy as np
import pytest
from typer.testing import CliRunner

import lifecycle
from lifecycle.cli import app
from lifecycle.jcs import canonical
from lifecycle.signing import InvalidCertificate, Signer, loads, verify
from tests.data import digits_tasks, learn_task, make_model

runner = CliRunner()


@pytest.fixture
def applied_forget(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    lc = lifecycle.connect(url)
    make_model(lc)
    t0, t1, _ = digits_tasks()
    learn_task(lc, "digits", t0, subjects=["alice", "bob"] * (len(t0.y) // 2) + ["bob"] * (len(t0.y) % 2))
    learn_task(lc, "digits", t1)
    lc.drain()
    req = lc.forget("digits", subject="alice", reason="GDPR art. 17", requested_by="dpo")
    lc.drain()
    return url, lc, req


def test_certificate_carries_the_verification_and_verifies(applied_forget, signing_key):
    _, lc, req = applied_forget
    signed = lc.certificate(req.id)
    body = verify(signed, Signer(signing_key).public_pem())
    assert body["request"]["id"] == req.id and len(body["request"]["digest"]) == 64
    assert body["strategy"] == "analytic" and body["exactness"] == "exact"
    assert (body["version_before"], body["version_after"]) == (2, 3)
    assert body["removed"]["count"] > 0 and "alice" not in json.dumps(signed)
    # the free text as the chain keys it, never in clear: a redaction later leaves nothing behind in the receipt
    assert body["request"]["text"] == {"requested_by": lc.ids.text("dpo"), "reason": lc.ids.text("GDPR art. 17")}
    assert "GDPR art. 17" not in json.dumps(signed) and '"dpo"' not in json.dumps(signed)
    assert body["verification"]["relapse_status"] == "clear"
    assert {t["task"] for t in body["verification"]["retained_tasks"]} == {"0-1", "2-3"}
    assert body["audit_anchor"]["seq"] > 0


def test_certificate_records_membership_inference_before_the_purge(applied_forget, signing_key):
    _, lc, req = applied_forget
    body = verify(lc.certificate(req.id), Signer(signing_key).public_pem())
    attack = body["verification"]["membership_inference"]
    # the attack ran on alice's samples, whose data is gone now
    assert attack["members"] == body["removed"]["count"] and attack["nonmembers"] > 0
    assert attack["attack"] == "margin"
    # exact removal: alice's samples look like unseen ones to the attack
    assert abs(attack["auc"] - 0.5) < 0.15, attack
    assert lc.ledger.purge_plan(lc.model("digits").id).empty
    # analytic keeps no per-sample provenance and has nothing to declare
    assert body["verification"]["provenance"] is None and body["notes"] == []


def test_cli_show_and_offline_verify_and_tampering(applied_forget, tmp_path):
    url, lc, req = applied_forget
    cert_file, key_file = tmp_path / "cert.json", tmp_path / "pub.pem"
    assert runner.invoke(app, ["certificate", "show", req.id, "--db", url, "--out", str(cert_file)]).exit_code == 0
    assert runner.invoke(app, ["certificate", "public-key", "--out", str(key_file)]).exit_code == 0
    ok = runner.invoke(app, ["certificate", "verify", str(cert_file), "--public-key", str(key_file)])
    assert ok.exit_code == 0 and "valid" in ok.output

    signed = json.loads(cert_file.read_text())
    signed["certificate"]["removed"]["count"] -= 1
    cert_file.write_text(json.dumps(signed))
    bad = runner.invoke(app, ["certificate", "verify", str(cert_file), "--public-key", str(key_file)])
    assert bad.exit_code == 1 and "altered after signing" in bad.output


def test_another_key_does_not_verify(applied_forget, tmp_path):
    _, lc, req = applied_forget
    other = Signer(tmp_path / "other.pem").public_pem()
    with pytest.raises(InvalidCertificate, match="signed by key"):
        verify(lc.certificate(req.id), other)


def test_a_new_key_is_generated_on_first_use_with_a_message(tmp_path, caplog):
    path = tmp_path / "keys" / "k.pem"
    signer = Signer(path)
    with caplog.at_level("WARNING"):
        signed = signer.sign({"hello": "world"})
    assert path.exists() and (path.stat().st_mode & 0o777) == 0o600
    assert "generated a new certificate signing key" in caplog.text
    assert verify(signed, Signer(path).public_pem()) == {"hello": "world"}


def test_learn_requests_have_no_certificate(applied_forget):
    _, lc, _ = applied_forget
    learn = lc.requests("digits")[0]
    with pytest.raises(lifecycle.NotReady, match="applied forget requests only"):
        lc.certificate(learn.id)


def test_any_faithful_reserialisation_verifies_and_a_duplicated_key_does_not(applied_forget, tmp_path):
    _, lc, req = applied_forget
    signed = lc.certificate(req.id)
    pem = lc.signer.public_pem()
    # what JavaScript or jq write: other key order and spacing, 0.0 as 0, 1e-7 as 1E-07
    text = json.dumps(signed, indent=1)
    assert "0.0" in text or ".0," in text or ".0\n" in text
    rewritten = text.replace(": 0.0", ": 0").replace(": 1.0,", ": 1,").replace(": 1.0\n", ": 1\n")
    assert rewritten != text
    assert verify(loads(rewritten), pem) == signed["certificate"]
    # a second "count" that a first-key parser would show: refused
    dup = json.dumps(signed).replace('"count": ', '"count": 999, "count": ', 1)
    with pytest.raises(InvalidCertificate, match="duplicate key 'count'"):
        loads(dup)
    # the carried signed bytes must be the body's canonical form
    forged = json.loads(json.dumps(signed))
    forged["signature"]["signed_body"] = base64.b64encode(b'{"count":999}').decode()
    with pytest.raises(InvalidCertificate, match="signed_body"):
        verify(forged, pem)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_the_readme_recipe_verifies_with_openssl_alone(applied_forget, tmp_path):
    _, lc, req = applied_forget
    (tmp_path / "cert.json").write_text(json.dumps(lc.certificate(req.id)))
    (tmp_path / "key.pem").write_bytes(lc.signer.public_pem())
    # the recipe, minus jq: take the signature and the signed bytes out of the file
    signed = json.loads((tmp_path / "cert.json").read_text())
    (tmp_path / "sig.bin").write_bytes(base64.b64decode(signed["signature"]["value"]))
    (tmp_path / "body.json").write_bytes(base64.b64decode(signed["signature"]["signed_body"]))
    run = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "key.pem", "-rawin",
                          "-in", "body.json", "-sigfile", "sig.bin"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0 and "Signature Verified Successfully" in run.stdout, run.stdout + run.stderr
    assert json.loads((tmp_path / "body.json").read_text()) == signed["certificate"]
    (tmp_path / "body.json").write_bytes(b" " + (tmp_path / "body.json").read_bytes())
    run = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "key.pem", "-rawin",
                          "-in", "body.json", "-sigfile", "sig.bin"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode != 0


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to compare with JavaScript's JSON")
def test_canonical_numbers_match_javascript(tmp_path):
    rng = np.random.default_rng(0)
    values = [float(v) for v in np.concatenate([
        rng.standard_normal(300) * 10.0 ** rng.integers(-30, 30, 300), rng.random(100),
        np.frombuffer(rng.bytes(8 * 400), np.float64)])] + [0.0, -0.0, 1e21, 1e-7, 5e-324, 123456789.0]
    values = [v for v in values if math.isfinite(v)]
    script = "const v = JSON.parse(require('fs').readFileSync(0, 'utf8')); console.log(JSON.stringify(v));"
    js = subprocess.run(["node", "-e", script], input=json.dumps(values), capture_output=True, text=True, check=True)
    assert canonical(values).decode() == js.stdout.strip()


def test_the_anchor_is_the_claim_when_the_step_began_and_on_the_chain(applied_forget, tmp_path):
    url, lc, req = applied_forget
    cert_file, key_file = tmp_path / "cert.json", tmp_path / "pub.pem"
    cert_file.write_text(json.dumps(lc.certificate(req.id)))
    key_file.write_bytes(lc.signer.public_pem())
    anchor = json.loads(cert_file.read_text())["certificate"]["audit_anchor"]
    claimed = [e for e in lc.events("digits") if e.request_id == req.id and e.kind == "claimed"]
    assert len(claimed) == 1 and lc.ledger.chain_link("digits", anchor["seq"]).request_id == req.id
    ok = runner.invoke(app, ["certificate", "verify", str(cert_file), "--public-key", str(key_file), "--db", url])
    assert ok.exit_code == 0, ok.output
    # rewrite the chain from the anchor on, as someone erasing the forget's trace would
    from sqlalchemy import text

    with lc.ledger.engine.begin() as conn:
        conn.execute(text("UPDATE events SET hash = CASE WHEN substr(hash, 1, 1) = '0' THEN '1' ELSE '0' END "
                          "|| substr(hash, 2) WHERE seq = :s"), {"s": anchor["seq"]})
    bad = runner.invoke(app, ["certificate", "verify", str(cert_file), "--public-key", str(key_file), "--db", url])
    assert bad.exit_code == 1 and "not on model 'digits'" in bad.output
