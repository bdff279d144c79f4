"""Signed checkpoints of every model's audit-chain head.

The chain's hashes have no key, so whoever can write the database could
rebuild a whole chain after removing what it wants. A checkpoint, signed with
the certificate key and kept where the database cannot reach (a folder the
operator backs up elsewhere), pins each chain's head at a moment: a chain
rewritten before the latest checkpoint no longer holds the pinned event.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifecycle.signing import InvalidCertificate, Signer, loads, verify
from lifecycle.store.ledger import Ledger

KIND = "lifecycle.audit-checkpoint/1"


@dataclass(frozen=True)
class CheckpointProblem:
    file: str
    problem: str

    def __str__(self) -> str:
        return f"checkpoint {self.file}: {self.problem}"


def write_checkpoint(ledger: Ledger, signer: Signer, folder: str | os.PathLike) -> Path:
    """Sign the current head of every model's chain into a new file in ``folder``."""
    now = dt.datetime.now(dt.timezone.utc)
    heads = []
    for m in ledger.models():
        seq, head = ledger.audit_head(m.id)
        heads.append({"model": m.name, "seq": seq, "hash": head})
    body = {"kind": KIND, "at": now.isoformat(), "heads": heads}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"checkpoint-{now.strftime('%Y%m%dT%H%M%S.%fZ')}.json"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    with os.fdopen(fd, "w") as fh:
        json.dump(signer.sign(body), fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def latest(folder: str | os.PathLike | None) -> dict[str, Any] | None:
    """Name, digest and time of the newest checkpoint in ``folder``, for a certificate to carry."""
    if folder is None:
        return None
    files = sorted(Path(folder).glob("checkpoint-*.json"))
    if not files:
        return None
    data = files[-1].read_bytes()
    return {"file": files[-1].name, "sha256": hashlib.sha256(data).hexdigest(),
            "at": json.loads(data)["certificate"]["at"]}


def check(ledger: Ledger, folder: str | os.PathLike, public_key_pem: bytes) -> tuple[int, list[CheckpointProblem]]:
    """Every checkpoint in ``folder`` must verify and every head it pins must
    still be on its chain: (checkpoints checked, problems)."""
    files = sorted(Path(folder).glob("checkpoint-*.json"))
    problems = []
    for path in files:
        try:
            body = verify(loads(path.read_bytes()), public_key_pem)
        except (InvalidCertificate, OSError) as exc:
            problems.append(CheckpointProblem(path.name, str(exc)))
            continue
        if body.get("kind") != KIND:
            problems.append(CheckpointProblem(path.name, f"not an audit checkpoint ({body.get('kind')!r})"))
            continue
        for head in body["heads"]:
            if head["seq"] == 0:
                continue
            link = ledger.chain_link(head["model"], head["seq"])
            if link is None or link.hash != head["hash"]:
                problems.append(CheckpointProblem(path.name, f"model {head['model']!r}: event {head['seq']} is no "
                                                             "longer the one signed: the chain was rewritten before "
                                                             f"this checkpoint ({body['at']})"))
    return len(files), problems
