"""Deletion certificates: receipts built from the verification pass after a forget."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lifecycle.store.records import Claim, Evaluation, Model, Role

from lifecycle.strategies.base import Tags


def build(
    claim: Claim,
    *,
    tags: Tags,
    version_before: int,
    removed_ids: list[str],
    evaluations: list[Evaluation],
    findings: list[dict],
    forgotten_tasks: list[str],
    applied_at: str,
    data_touched: str,
    audit_anchor: tuple[int, str | None],
    membership: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    gate: dict[str, Any] | None = None,
    notes: list[str] | None = None,
    forgotten_probes: str = "keep",
    checkpoint: dict[str, Any] | None = None,
    encoder: dict[str, Any] | None = None,
    text_digest: Callable[[str | None], str | None],
) -> dict[str, Any]:
    """``text_digest`` keys the request's free text (``IdKey.text``): a certificate is signed and kept,
    so it carries the digests the audit chain carries, never the text a redaction may later erase."""
    req = claim.request
    retained = [e for e in evaluations if e.role == Role.RETAINED]
    forgotten = [e for e in evaluations if e.role == Role.FORGOTTEN]
    # a finding on a forgotten task is a relapse (its accuracy came back, or the gate misses it); one on a
    # retained task is the forget gate firing on what the model keeps (see relapse.gate_false_activations)
    gone = {e.task for e in forgotten}
    relapsed = [f for f in findings if f["task"] in gone]
    over_suppressed = [f for f in findings if f["task"] not in gone]
    body = {
        "kind": "lifecycle.deletion-certificate/1",
        "request": {
            "id": req.id,
            "digest": claim.payload_sha,
            "target": req.target,
            "text": {"requested_by": text_digest(req.requested_by), "reason": text_digest(req.reason)},
            "received_at": req.received_at.isoformat(),
            "due_at": req.due_at.isoformat() if req.due_at else None,
        },
        "model": claim.model.name,
        "version_before": version_before,
        "version_after": version_before + 1,
        "strategy": claim.model.strategy,
        "exactness": tags.exactness,
        "data_touched_at_forget": data_touched,
        "removed": {
            "count": len(removed_ids),
            # keyed digests (HMAC-SHA256 under the operator's identifier key), as the ledger holds them;
            # lc.sample_digest(id) gives the one that stands for a given id
            "sample_digests": sorted(removed_ids),
        },
        "erasure": {
            "identifiers": "keyed digests only (HMAC-SHA256, NFC-normalised; the key is kept outside the ledger)",
            "training_rows": "each removed row's encryption key is destroyed after this step commits; its "
                             "data file is deleted once no retained row is in it",
            "model_states": "states trained on the removed rows (every version before this one) are erased",
            "probe_sets": {"policy": forgotten_probes, "meaning": {
                "keep": "a forgotten task's probe set is kept to watch it for relapse",
                "purge": "a forgotten task's probe set is erased with the task"}[forgotten_probes]},
        },
        "verification": {
            "forgotten_tasks": [
                {"task": e.task, "accuracy": e.accuracy, "chance": e.chance, "at_or_below_chance": e.accuracy <= e.chance}
                for e in forgotten
            ],
            "tasks_forgotten_by_this_request": forgotten_tasks,
            "retained_tasks": [{"task": e.task, "accuracy": e.accuracy} for e in retained],
            "relapse_findings": relapsed,
            "relapse_status": "relapse" if relapsed else "clear",
            # attack AUC of the forgotten samples against unseen ones of their
            # classes, measured before the purge: 0.5 is no signal
            "membership_inference": membership,
            "provenance": provenance,
            # gated (suppression) strategies: share of each task's probes the
            # forget gate fires on (recall on forgotten, false activation on retained)
            "gate": gate,
        },
        "notes": list(notes or []),
        "applied_at": applied_at,
        # the audit chain as it stood when this step began: rewriting earlier
        # history would no longer match a certificate signed before it
        "audit_anchor": {"seq": audit_anchor[0], "hash": audit_anchor[1]},
        # the newest signed checkpoint of the chains when the step ran (lifecycle.checkpoints), if any
        "checkpoint": checkpoint,
    }
    if gate is not None:
        # retained tasks whose probes open the gate more often than the model allows (max_false_activation)
        body["verification"]["gate_false_activation_findings"] = over_suppressed
    if encoder is not None:
        body["encoder"] = encoder
    return body


SHA256_OF = {"torchscript": "the TorchScript file", "export": "the torch.export program",
             "factory": "the weights file the factory loads"}


def encoder_declaration(model: Model) -> dict[str, Any] | None:
    """What a certificate says of a model's encoder: which file it is (its sha256, which the ledger
    checks whenever it loads it), what the user declared it was trained on, and that no erasure
    reaches it."""
    enc = model.encoder
    if enc is None:
        return None
    return {
        "sha256": enc.digest,
        "sha256_of": SHA256_OF.get(enc.kind, enc.kind),
        "kind": enc.kind,
        "factory": enc.factory,
        "input_shape": list(enc.input_shape),
        "input_dtype": enc.input_dtype,
        "out_features": enc.out_features,
        "trained_on": enc.trained_on,
        "trained_on_is": "the declaration of whoever created the model, not something lifecycle verified",
        "deletion_scope": "outside: the encoder is frozen and never trains on what this model learns or forgets, "
                          "so no erasure changes it; what the strategy learned on its features is what this "
                          "certificate's exactness class and verification are about",
    }
