"""Encrypting the artifacts of a ledger written before keyed identifiers.

Such a ledger (schema before 0006) kept training rows, probe sets and model
states in clear, training rows with their sample ids. ``lifecycle db
upgrade`` re-writes each one the ledger still references in the encrypted
formats of ``lifecycle.vault``, points the ledger at the new file (an audited
event per model), and deletes the clear one. Idempotent: an artifact that
already has keys is left alone.
"""

from __future__ import annotations

from lifecycle import arrays
from lifecycle.vault import Vault
from lifecycle.store.identity import IdKey
from lifecycle.store.ledger import Ledger


def reseal_legacy(ledger: Ledger, vault: Vault, ids: IdKey) -> int:
    """Re-write every clear artifact the ledger references; returns how many."""
    done = 0
    for digest, role in sorted(ledger.artifact_roles().items()):
        if vault.keys.exists(digest) or not vault.artifacts.exists(digest):
            continue
        data = vault.artifacts.get(digest)
        if data[:4] != arrays.MAGIC:
            continue
        if role == "state":
            new = vault.put_blob(data)
        else:
            bundle = arrays.unpack(data)
            # a training row is bound to its sample's keyed id, as every newer one is
            aad = [ids.sample(str(i)) for i in bundle["sample_ids"]] if role == "data" else None
            new = vault.put_rows(bundle["X"], bundle["y"], aad)
        ledger.replace_artifact(digest, new)
        vault.artifacts.delete(digest)
        done += 1
    return done
