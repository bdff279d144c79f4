"""keyed identifiers, content tombstones, purge lease, state retention

Sample ids become keyed digests (HMAC-SHA256 under the identifier key kept
outside the database, see store.identity) in samples, tombstones, request
targets and events; each model's audit chain is then re-linked, with an
event saying so. Subject hashes of older ledgers were salted SHA-256 with
the salt in the database; they are wrapped in the keyed digest
(``IdKey.legacy_subject``) so a guess list no longer finds them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""
import datetime as dt
import json

import sqlalchemy as sa
from alembic import op

from lifecycle.store import audit
from lifecycle.store.identity import IdKey

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as b:
        b.alter_column("subject_salt", existing_type=sa.String(64), nullable=True)
        b.add_column(sa.Column("keep_states", sa.Integer(), nullable=False, server_default="3"))
        b.add_column(sa.Column("forgotten_probes", sa.String(8), nullable=False, server_default="keep"))
        b.add_column(sa.Column("purge_owner", sa.String(200), nullable=True))
        b.add_column(sa.Column("purge_until", sa.DateTime(), nullable=True))
    with op.batch_alter_table("samples") as b:
        b.add_column(sa.Column("content_digest", sa.String(64), nullable=True))
        b.create_index("ix_samples_unpurged", ["status", "data_digest"], unique=False)
        b.create_index("ix_samples_data", ["data_digest"], unique=False)
    with op.batch_alter_table("requests") as b:
        b.create_index("ix_requests_forget_versions", ["model_id", "kind", "status", "result_version"], unique=False)
    with op.batch_alter_table("model_versions") as b:
        b.create_index("ix_model_versions_kept", ["model_id", "state_purged", "version"], unique=False)
        b.create_index("ix_model_versions_artifact", ["artifact_digest"], unique=False)
    with op.batch_alter_table("tombstones") as b:
        b.add_column(sa.Column("content_digest", sa.String(64), nullable=True))
        b.create_index("ix_tombstones_content", ["model_id", "content_digest"], unique=False)
    _rekey(op.get_bind())


def _rekey(conn) -> None:
    models = conn.execute(sa.text("SELECT id, name, audit_seq, audit_head FROM models")).all()
    if not models:
        return  # a new ledger: nothing to re-key, and no key to create yet
    key = IdKey()
    for table in ("samples", "tombstones"):
        rows = conn.execute(sa.text(f"SELECT id, sample_id, subject_hash FROM {table}")).all()
        for rid, sid, subj in rows:
            conn.execute(sa.text(f"UPDATE {table} SET sample_id = :s, subject_hash = :h WHERE id = :i"),
                         {"s": key.sample(sid), "h": None if subj is None else key.legacy_subject(subj), "i": rid})
    for seq, target in conn.execute(sa.text("SELECT seq, target FROM requests")).all():
        new = _rekey_target(key, target)
        if new is not None:
            conn.execute(sa.text("UPDATE requests SET target = :t WHERE seq = :s")
                         .bindparams(sa.bindparam("t", type_=sa.JSON)), {"t": new, "s": seq})

    now = dt.datetime.now(dt.timezone.utc)
    for model_id, name, head_seq, head in models:
        rows = conn.execute(sa.text("SELECT id, seq, request_id, kind, detail, at, prev_hash, hash FROM events "
                                    "WHERE model_id = :m ORDER BY seq, id"), {"m": model_id}).all()
        events = [(r[0], r[1], r[2], r[3], _json(r[4]), _utc(r[5])) for r in rows]
        # never re-link over a chain that is already broken: that would launder the tampering
        problem = audit.first_problem(name, [audit.ChainEvent(e[0], model_id, e[1], e[2], e[3], e[4], e[5], r[6], r[7])
                                             for e, r in zip(events, rows)], head_seq, head)
        if problem is not None:
            raise RuntimeError(f"not re-keying identifiers over a broken audit chain: {problem}")
        prev, seq = None, 0
        events.append((None, len(events) + 1, None, "identifiers_rekeyed",
                       {"why": "sample ids and subject hashes replaced by keyed digests (migration 0006); the "
                               "chain was re-linked over the rewritten events",
                        "previous_head": {"seq": head_seq, "hash": head}}, now))
        for eid, _old_seq, request_id, kind, detail, at in events:
            seq += 1
            if "target" in detail:
                detail = {**detail, "target": _rekey_target(key, detail["target"]) or detail["target"]}
            digest = audit.event_hash(model_id, seq, request_id, kind, detail, at, prev)
            params = {"seq": seq, "d": detail, "p": prev, "h": digest}
            if eid is None:
                conn.execute(sa.text("INSERT INTO events (model_id, request_id, kind, detail, at, seq, prev_hash, hash) "
                                     "VALUES (:m, NULL, :k, :d, :at, :seq, :p, :h)").bindparams(_JSON_D),
                             {**params, "m": model_id, "k": kind, "at": at.replace(tzinfo=None)})
            else:
                conn.execute(sa.text("UPDATE events SET seq = :seq, detail = :d, prev_hash = :p, hash = :h "
                                     "WHERE id = :i").bindparams(_JSON_D), {**params, "i": eid})
            prev = digest
        conn.execute(sa.text("UPDATE models SET audit_seq = :s, audit_head = :h WHERE id = :m"),
                     {"s": seq, "h": prev, "m": model_id})


_JSON_D = sa.bindparam("d", type_=sa.JSON)


def _utc(value) -> dt.datetime:
    # naive UTC in the database; SQLite hands back text
    value = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return value.replace(tzinfo=dt.timezone.utc)


def _json(value):
    return json.loads(value) if isinstance(value, str) else dict(value)


def _rekey_target(key: IdKey, target):
    t = _json(target)
    if "samples" in t:
        t["samples"] = [key.sample(s) for s in t["samples"]]
    elif "subject_hash" in t:
        t["subject_hash"] = key.legacy_subject(t["subject_hash"])
    else:
        return None
    return t


def downgrade() -> None:
    raise NotImplementedError("keyed identifiers cannot be turned back into the identifiers they hide")
