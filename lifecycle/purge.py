"""Erasing what the ledger no longer allows the system to keep.

A purge runs after a step commits, never inside it: the ledger computes a
plan (forgotten samples' rows, states trained on them or past retention,
forgotten tasks' probe sets by policy), the keys named by the plan are
destroyed, the ledger records it, and the files nothing references any more
are deleted. Each part is idempotent, so a purge a crash interrupted is
finished by the next one; the model's purge lease keeps two from running at
once. Rows never move between files, so no other sample's data is touched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from lifecycle.vault import Vault
from lifecycle.store.ledger import Ledger

log = logging.getLogger("lifecycle.purge")

# a purge destroys keys and updates a few rows: seconds at most; a crashed one is taken over after this
PURGE_LEASE_SECONDS = 60.0


@dataclass(frozen=True)
class Purged:
    rows: int
    files_touched: int
    files_deleted: int
    states: int
    probes: int


def purge_model(ledger: Ledger, vault: Vault, model_id: int, owner: str) -> Purged | None:
    """Purge one model; None when another purge of it holds the lease."""
    if not ledger.take_purge(model_id, owner, PURGE_LEASE_SECONDS):
        return None
    try:
        plan = ledger.purge_plan(model_id)
        if plan.empty:
            return Purged(0, 0, 0, 0, 0)
        by_file = plan.rows_by_file()
        for digest, rows in by_file.items():
            vault.shred_rows(digest, rows)
        for _, digest in [*plan.states, *plan.probes]:
            vault.keys.destroy(digest)
        deleted = ledger.finish_purge(plan)
        for digest in deleted:
            vault.destroy(digest)
        done = Purged(len(plan.rows), len(by_file), len(deleted), len(plan.states), len(plan.probes))
        log.info("purged %d row(s) in %d file(s), %d state(s), %d probe set(s); %d file(s) deleted", done.rows,
                 done.files_touched, done.states, done.probes, done.files_deleted, extra={"model_id": model_id})
        return done
    finally:
        ledger.release_purge(model_id, owner)


def discard(ledger: Ledger, vault: Vault, digests: Iterable[str]) -> list[str]:
    """Erase those of ``digests`` nothing references (a learn that ended unapplied, a lost step's state)."""
    gone = ledger.unreferenced(digests)
    for digest in gone:
        vault.destroy(digest)
    return gone


def sweep(ledger: Ledger, vault: Vault, grace_seconds: float) -> list[str]:
    """Erase artifacts and keys nothing references, older than ``grace_seconds``,
    and staged files nothing has written to for as long; returns the artifacts' digests.

    They are what a crash left between writing files and committing their
    rows, or between committing and deleting, or while a file was staged.
    The grace period spares a submit that is writing its files or has
    written them but not yet committed.
    """
    now = time.time()
    staged = vault.artifacts.remove_stale_staging(grace_seconds, now) + vault.keys.remove_stale_temporaries(
        grace_seconds, now)
    if staged:
        log.info("swept %d staged file(s) a crash left unfinished", staged)
    on_disk = set(vault.artifacts.digests()) | set(vault.keys.digests())
    orphans = sorted(on_disk - ledger.referenced_digests())
    gone = [d for d in orphans
            if max(vault.artifacts.age_seconds(d, now), vault.keys.age_seconds(d, now)) >= grace_seconds]
    for digest in gone:
        vault.destroy(digest)
    if gone:
        log.info("swept %d artifact(s) nothing references", len(gone))
    return gone
