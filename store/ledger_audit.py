"""Replaying a model's audit chain against its tables.

The chain (``store.audit``) proves the events were not altered, removed or
slipped in. This replays them: what every request's status must be, which
samples each learn brought and which of them a forget tombstoned, which
versions, evaluations, findings, certificates and task states each applied
step wrote, what a purge erased, what each person's erasure recorded for the
model. Each table is then compared with the
replay, and the first row that disagrees is named with its table. Rows
written before the chain carried row digests (ledgers from before 0007) are
checked for what their events say and otherwise counted as not covered.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from lifecycle.store import row_digests


@dataclass(frozen=True)
class RowProblem:
    model: str
    table: str
    row: str
    problem: str

    def __str__(self) -> str:
        return f"model {self.model!r}, table {self.table}, {self.row}: {self.problem}"


@dataclass
class _Request:
    kind: str
    status: str = "queued"
    digest: str | None = None
    text: dict[str, str | None] | None = None
    due_at: str | None = None
    payload: str | None = None
    samples: dict[str, Any] | None = None
    version: int | None = None
    redacted: set[str] = field(default_factory=set)
    applied: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Task:
    state: str = "pending"
    probe: str | None = None


@dataclass
class Tables:
    """One model's rows, as plain dicts, for the replay to compare against."""

    requests: list[dict[str, Any]]
    samples: list[dict[str, Any]]
    tombstones: list[dict[str, Any]]
    versions: list[dict[str, Any]]
    evaluations: list[dict[str, Any]]
    findings: list[dict[str, Any]]
    certificates: list[dict[str, Any]]
    tasks: list[dict[str, Any]]
    erasure_parts: list[dict[str, Any]]


class _Replay:
    def __init__(self) -> None:
        self.requests: dict[str, _Request] = {}
        self.versions: dict[int, dict[str, Any]] = {}
        self.tasks: dict[str, _Task] = {}
        self.renamed: dict[str, str] = {}  # artifacts re-written in another format: old -> new
        self.erasures: dict[str, dict[str, Any]] = {}  # erasure id -> what its part on this model must say

    def artifact(self, digest: str | None) -> str | None:
        while digest in self.renamed:
            digest = self.renamed[digest]
        return digest

    def apply(self, kind: str, request_id: str | None, d: dict[str, Any]) -> None:
        req = self.requests.get(request_id) if request_id else None
        if kind in ("erasure", "erasure_none"):
            # an erasure event records the forget it queued or joined (and how many samples it held), an
            # erasure_none event that the model held none (and how many it had already forgotten)
            self.erasures[d["erasure"]] = {"outcome": d["outcome"], "request_id": request_id,
                                           "count": ("held", d["held"]) if kind == "erasure"
                                           else ("tombstoned", d["tombstoned"])}
        elif kind == "submitted" and request_id is not None:
            self.requests[request_id] = _Request(
                d.get("request_kind", "learn"), digest=d.get("request"), text=d.get("text"), due_at=d.get("due_at"),
                payload=d.get("payload"), samples=d.get("samples"))
            if "request" in d and d.get("request_kind") == "learn":
                task = self.tasks.setdefault(d["task"], _Task())
                task.probe = d.get("probe") or task.probe
        elif req is None:
            self.apply_model_event(kind, d)
        elif kind == "claimed":
            req.status = "running"
        elif kind in ("released", "requeued", "quarantined"):
            req.status = "queued"
        elif kind in ("failed", "rejected", "cancelled"):
            req.status = kind
            self.tasks.pop(d.get("task_dropped"), None)
        elif kind == "applied":
            req.status, req.version, req.applied = "applied", d["version"], d
            self.versions[d["version"]] = {"request_id": request_id, "artifact": d["artifact"], "purged": False}
            for name, state in d.get("tasks", {}).items():
                self.tasks.setdefault(name, _Task()).state = state
            for name in d.get("repaired", {}).get("drop_probes", ()):
                if name in self.tasks:
                    self.tasks[name].probe = None
        elif kind == "deadline_extended":
            req.due_at = d["due_at"]
        elif kind == "redacted":
            req.redacted |= set(d["fields"])

    def apply_model_event(self, kind: str, d: dict[str, Any]) -> None:
        if kind in ("purged", "states_purged"):
            for v in d.get("versions", ()):
                if v in self.versions:
                    self.versions[v]["purged"] = True
            for name in d.get("probes", ()):
                if name in self.tasks:
                    self.tasks[name].probe = None
        elif kind == "artifact_resealed":
            self.renamed[d["old"]] = d["new"]


def first_row_problem(model: str, events: list[tuple[str, str | None, dict[str, Any]]],
                      tables: Tables, text_digest) -> tuple[RowProblem | None, int]:
    """Replay ``events`` (kind, request id, detail) and compare every table:
    the first disagreement, and how many rows predate row digests.
    ``text_digest`` keys free text as the writer did (``IdKey.text``)."""
    replay = _Replay()
    for kind, request_id, detail in events:
        replay.apply(kind, request_id, detail)
    # tombstones before samples: which samples must be forgotten is read from them
    checks = (partial(_requests, text_digest=text_digest), _tombstones, _samples, _versions, _per_version("evaluations"),
              _per_version("findings"), _certificates, _tasks, _erasure_parts)
    uncovered = sum(1 for r in replay.requests.values() if r.digest is None)
    for check in checks:
        found = check(model, replay, tables)
        if found is not None:
            return found, uncovered
    return None, uncovered


def _requests(model: str, replay: _Replay, t: Tables, text_digest) -> RowProblem | None:
    seen = set()
    for row in sorted(t.requests, key=lambda r: r["seq"]):
        rid = row["id"]
        seen.add(rid)
        where = f"request {rid}"
        req = replay.requests.get(rid)
        if req is None:
            return RowProblem(model, "requests", where, "no event ever submitted it: the row was inserted "
                                                         "outside the ledger")
        if row["status"] != req.status:
            return RowProblem(model, "requests", where, f"status is {row['status']} but its events say {req.status}")
        if req.status == "applied" and row["result_version"] != req.version:
            return RowProblem(model, "requests", where, f"result version is {row['result_version']} but it was "
                                                        f"applied as version {req.version}")
        if req.digest is None:
            continue
        if row_digests.request(_Row(row)) != req.digest:
            return RowProblem(model, "requests", where, "its content (kind, target, payload, key or received time) "
                                                        "differs from what was submitted")
        for name in ("requested_by", "reason"):
            if name in req.redacted:
                if row[name] is not None:
                    return RowProblem(model, "requests", where, f"{name} was redacted but holds text again")
            elif text_digest(row[name]) != (req.text or {}).get(name):
                return RowProblem(model, "requests", where, f"{name} differs from what was submitted")
        due = row["due_at"].isoformat() if row["due_at"] is not None else None
        if req.due_at is not None and due != req.due_at:
            return RowProblem(model, "requests", where, f"due date {due} is not the one its events set "
                                                        f"({req.due_at})")
        if req.payload is not None and row["payload_digest"] != replay.artifact(req.payload):
            return RowProblem(model, "requests", where, "its data file is not the one it was submitted with")
    for rid in replay.requests:
        if rid not in seen:
            return RowProblem(model, "requests", f"request {rid}", "its events are in the chain but the row is gone")
    return None


def _samples(model: str, replay: _Replay, t: Tables) -> RowProblem | None:
    by_seq = {r["seq"]: r["id"] for r in t.requests}
    tombstoned = {tb["sample_id"] for tb in t.tombstones}
    by_learn: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for row in t.samples:
        by_learn[by_seq.get(row["learn_request_seq"])].append(row)
    if None in by_learn:
        row = by_learn[None][0]
        return RowProblem(model, "samples", f"sample {row['sample_id'][:16]}", "it names no learn request of the "
                                                                              "model")
    for rid, req in replay.requests.items():
        if req.kind != "learn" or req.samples is None:
            continue
        rows = by_learn.get(rid, [])
        if req.status in ("failed", "rejected", "cancelled"):
            if rows:
                return RowProblem(model, "samples", f"learn {rid}", f"it ended {req.status}, yet {len(rows)} of its "
                                                                    "samples are still in the ledger")
            continue
        if row_digests.samples(rows) != req.samples:
            return RowProblem(model, "samples", f"learn {rid}", f"its {len(rows)} sample row(s) are not the "
                                                                f"{req.samples['count']} it brought: rows were "
                                                                "deleted, added or changed")
        for row in rows:
            where = f"sample {row['sample_id'][:16]} of learn {rid}"
            expected = ("forgotten" if row["sample_id"] in tombstoned else "active") \
                if req.status == "applied" else "pending"
            if row["status"] != expected:
                return RowProblem(model, "samples", where, f"status is {row['status']} but the ledger says "
                                                           f"{expected}")
            if row["data_digest"] is None and expected != "forgotten":
                return RowProblem(model, "samples", where, "its data pointer is gone though it was never forgotten")
            if row["data_digest"] is not None and row["data_digest"] != replay.artifact(req.payload):
                return RowProblem(model, "samples", where, "it points at another data file than its learn's")
    return None


def _tombstones(model: str, replay: _Replay, t: Tables) -> RowProblem | None:
    by_request: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in t.tombstones:
        by_request[row["request_id"]].append(row)
    for rid, rows in by_request.items():
        req = replay.requests.get(rid)
        if req is None or req.status != "applied" or req.kind not in ("forget", "repair"):
            return RowProblem(model, "tombstones", f"tombstones of request {rid}", "no applied forget or repair "
                                                                                  "made them")
    for rid, req in replay.requests.items():
        recorded = req.applied.get("tombstones")
        if recorded is not None and row_digests.tombstones(by_request.get(rid, [])) != recorded:
            return RowProblem(model, "tombstones", f"tombstones of request {rid}",
                              f"{len(by_request.get(rid, []))} row(s) where the forget wrote {recorded['count']}: "
                              "tombstones were deleted, added or changed")
    return None


def _versions(model: str, replay: _Replay, t: Tables) -> RowProblem | None:
    rows = {r["version"]: r for r in t.versions}
    for v in sorted(set(rows) | set(replay.versions)):
        where = f"version {v}"
        row, want = rows.get(v), replay.versions.get(v)
        if row is None:
            return RowProblem(model, "model_versions", where, "applied in the chain, but the row is gone")
        if want is None:
            return RowProblem(model, "model_versions", where, "no applied step made it")
        if row["request_id"] != want["request_id"] or row["artifact_digest"] != replay.artifact(want["artifact"]):
            return RowProblem(model, "model_versions", where, "its request or state digest differs from the step's")
        if row["state_purged"] != want["purged"]:
            return RowProblem(model, "model_versions", where, f"state_purged is {row['state_purged']} but the "
                                                              f"purges in the chain say {want['purged']}")
    return None


def _per_version(table: str):
    digest = getattr(row_digests, table)
    name = "relapse_findings" if table == "findings" else table

    def check(model: str, replay: _Replay, t: Tables) -> RowProblem | None:
        by_version: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for row in getattr(t, table):
            by_version[row["version"]].append(row)
        for v in sorted(by_version):
            if v not in replay.versions:
                return RowProblem(model, name, f"version {v}", "no applied step wrote these rows")
        for req in replay.requests.values():
            recorded = req.applied.get(table)
            if recorded is not None and digest(by_version.get(req.version, [])) != recorded:
                return RowProblem(model, name, f"version {req.version}", "the rows differ from what the step "
                                                                         "wrote")
        return None

    return check


def _certificates(model: str, replay: _Replay, t: Tables) -> RowProblem | None:
    rows = {r["request_id"]: r for r in t.certificates}
    for rid, row in rows.items():
        req = replay.requests.get(rid)
        if req is None or "certificate" not in req.applied and req.digest is not None:
            return RowProblem(model, "certificates", f"certificate of {rid}", "no applied step issued it")
        if req is not None and "certificate" in req.applied \
                and row_digests.certificate(row["body"]) != req.applied["certificate"]:
            return RowProblem(model, "certificates", f"certificate of {rid}", "its body differs from the one issued")
    for rid, req in replay.requests.items():
        if "certificate" in req.applied and rid not in rows:
            return RowProblem(model, "certificates", f"certificate of {rid}", "issued in the chain, but the row is "
                                                                              "gone")
    return None


def _tasks(model: str, replay: _Replay, t: Tables) -> RowProblem | None:
    rows = {r["name"]: r for r in t.tasks}
    for name, want in sorted(replay.tasks.items()):
        row = rows.get(name)
        if row is None:
            return RowProblem(model, "tasks", f"task {name!r}", "its learn is in the chain, but the row is gone")
        if row["state"] != want.state:
            return RowProblem(model, "tasks", f"task {name!r}", f"state is {row['state']} but its steps say "
                                                                f"{want.state}")
        if row["probe_digest"] != replay.artifact(want.probe):
            return RowProblem(model, "tasks", f"task {name!r}", "its probe set is not the one its learns and purges "
                                                                "left")
    return None


def _erasure_parts(model: str, replay: _Replay, t: Tables) -> RowProblem | None:
    rows = {r["erasure_id"]: r for r in t.erasure_parts}
    for erasure_id, want in sorted(replay.erasures.items()):
        row = rows.get(erasure_id)
        if row is None:
            return RowProblem(model, "erasure_parts", f"erasure {erasure_id}", "its part is in the chain, but the "
                                                                               "row is gone")
        column, count = want["count"]
        if (row["outcome"], row["request_id"], row[column]) != (want["outcome"], want["request_id"], count):
            return RowProblem(model, "erasure_parts", f"erasure {erasure_id}", "its outcome, forget or count "
                                                                               "differs from the chain's record")
    for erasure_id in sorted(rows):
        if erasure_id not in replay.erasures:
            return RowProblem(model, "erasure_parts", f"erasure {erasure_id}", "no erasure event in the chain "
                                                                               "wrote it")
    return None


class _Row:
    """Attribute access over a row dict, for the digest functions written against ORM rows."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


@dataclass(frozen=True)
class ErasureRows:
    """Every person-level erasure and what it rests on, as plain dicts, for ``erasure_problems``."""

    erasures: list[dict[str, Any]]  # id, subject_hash, status, received_at, due_at
    parts: list[dict[str, Any]]  # erasure_id, model_id, outcome, request_id
    requests: dict[str, dict[str, Any]]  # id -> status, target, received_at, due_at (the parts' requests)
    certified: set[str]  # request ids with a certificate
    models: dict[int, tuple[str, str | None]]  # id -> name, subject salt (None: keyed identifiers)


def erasure_problems(rows: ErasureRows) -> dict[int, RowProblem]:
    """Check each erasure row against the rows its model chains prove (its parts, their
    forgets, the certificates): the first problem per model.

    An erasure row is in no chain of its own; what it claims is checked here. Completed
    needs every forget it rests on applied and certified, cancelled every forget it
    queued cancelled. A forget it queued was queued with its received and due times and,
    on a model with keyed identifiers, both name one subject's digest. A stored status
    behind what its forgets say is not a problem: it is brought up to date on the next
    refresh."""
    found: dict[int, RowProblem] = {}
    parts_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for part in rows.parts:
        parts_of[part["erasure_id"]].append(part)
    for erasure in sorted(rows.erasures, key=lambda e: (e["received_at"], e["id"])):
        for part in sorted(parts_of[erasure["id"]], key=lambda p: p["model_id"]):
            model_id = part["model_id"]
            if model_id in found or part["request_id"] is None:
                continue
            problem = _erasure_part_problem(erasure, part, rows.requests.get(part["request_id"]),
                                            part["request_id"] in rows.certified, rows.models[model_id][1])
            if problem is not None:
                found[model_id] = RowProblem(rows.models[model_id][0], "erasures", f"erasure {erasure['id']}",
                                             problem)
    return found


def _erasure_part_problem(erasure: dict[str, Any], part: dict[str, Any], request: dict[str, Any] | None,
                          certified: bool, salt: str | None) -> str | None:
    if request is None:
        return f"its part names request {part['request_id']}, which is not in the ledger"
    if erasure["status"] == "completed" and not (request["status"] == "applied" and certified):
        return (f"it says completed, but its forget {part['request_id']} is {request['status']}"
                f"{'' if certified else ', with no certificate'}")
    if erasure["status"] == "cancelled" and part["outcome"] == "forget" and request["status"] != "cancelled":
        return f"it says cancelled, but the forget it queued, {part['request_id']}, is {request['status']}"
    if salt is None and request["target"].get("subject_hash") != erasure["subject_hash"]:
        return f"its subject is not the one its forget {part['request_id']} forgets"
    if part["outcome"] == "forget":
        for name in ("received_at", "due_at"):
            if request[name] != erasure[name]:
                return (f"its {name.replace('_at', '')} time {erasure[name].isoformat()} is not its forget's "
                        f"({request[name].isoformat() if request[name] else None})")
    return None
