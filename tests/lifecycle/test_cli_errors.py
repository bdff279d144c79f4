"""The first hour at the command line: every wrong usage is one line naming the
error's type, exit status 2, and nothing created on disk."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "80", "LIFECYCLE_SIGNING_KEY": str(cwd / "keys" / "signing-key.pem")}
    env.pop("LIFECYCLE_DB", None)
    return subprocess.run([sys.executable, "-c", "from lifecycle.cli import main; main()", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=120)


def busy_port() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


CASES = {
    "a plain path to no ledger": (["status", "--db", "ledger.db"], "NoLedger"),
    "a typo in a sqlite URL": (["status", "--db", "sqlite:///typo.db"], "NoLedger"),
    "an absolute path with three slashes": (["status", "--db", "sqlite://{cwd}/x.db"], "LedgerUnreachable"),
    "a missing folder": (["history", "--model", "m", "--db", "sqlite:///nowhere/x.db"], "LedgerUnreachable"),
    "an unreachable PostgreSQL": (["status", "--db", "postgresql+psycopg://u@127.0.0.1:{port}/x"],
                                  "LedgerUnreachable"),
    "an unknown database kind": (["status", "--db", "foo://"], "BadLedgerUrl"),
    "a report on a missing ledger": (["report", "--model", "m", "--out", "out", "--db", "sqlite:///typo.db"],
                                     "NoLedger"),
    "verify a missing certificate": (["certificate", "verify", "missing.json", "--public-key", "k.pem"],
                                     "FileNotFoundError"),
    "verify a file that is not UTF-8": (["certificate", "verify", "binary.json", "--public-key", "k.pem"],
                                        "InvalidCertificate"),
    "a public key from a junk key file": (["certificate", "public-key", "--key", "junk.pem"], "SigningKeyError"),
    "a public key where no key was ever made": (["certificate", "public-key"], "SigningKeyError"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_wrong_usage_is_one_line_exit_2_and_creates_nothing(case, tmp_path):
    args, error = CASES[case]
    (tmp_path / "junk.pem").write_text("not a key\n")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe{\x00")
    closed, port = busy_port()
    closed.close()  # a port nothing listens on any more
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    done = run([a.format(cwd=tmp_path, port=port) for a in args], tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error ({error}): "), done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_busy_metrics_port_is_one_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert run(["db", "upgrade", "--db", url], tmp_path).returncode == 0
    sock, port = busy_port()
    try:
        done = run(["serve", "--db", url, "--metrics-port", str(port)], tmp_path)
    finally:
        sock.close()
    assert done.returncode == 2 and "error (OSError): " in done.stderr and "Traceback" not in done.stderr, \
        done.stderr


def test_version(tmp_path):
    done = run(["--version"], tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("lifecycle ")


def test_ids_are_whole_at_80_columns_and_a_unique_prefix_is_taken(tmp_path):
    import lifecycle
    from tests.data import digits_tasks, learn_task, make_model

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    lc = lifecycle.connect(url)
    make_model(lc)
    req = learn_task(lc, "digits", digits_tasks()[0])
    listing = run(["status", "--db", url], tmp_path)
    assert listing.returncode == 0 and listing.stdout.split()[0] == req.id, listing.stdout
    one = run(["status", req.id[:8], "--db", url, "--json"], tmp_path)
    assert one.returncode == 0 and req.id in one.stdout, one.stderr
    short = run(["status", req.id[:2], "--db", url], tmp_path)
    assert short.returncode == 2 and "error (UnknownRequest)" in short.stderr
    quiet = run(["relapse", "--db", url], tmp_path)
    assert quiet.returncode == 0 and "no relapse finding" in quiet.stdout
