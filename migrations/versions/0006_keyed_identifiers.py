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

from store import audit
from store.identity import IdKey

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
    with op.batch_alter_table("tombstones") as b:
        b.add_column(sa.Column("content_digest", sa.String(64), nullable=True))
        b.create_index("ix_tombstones_content", ["model_id", "content_digest"], unique=False)
    _rekey(op.get_bind())


def _rekey(conn) -> None:
    models = conn.execute(sa.text("SELECT id, subject_salt FROM models")).all()
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
    for model_id, _salt in models:
        rows = conn.execute(sa.text("SELECT id, seq, request_id, kind, detail, at FROM events WHERE model_id = :m "
                                    "ORDER BY seq, id"), {"m": model_id}).all()
        prev, seq = None, 0
        events = [(r[0], r[1], r[2], r[3], _json(r[4]), r[5]) for r in rows]
        events.append((None, len(events) + 1, None, "identifiers_rekeyed",
                       {"why": "sample ids and subject hashes replaced by keyed digests (migration 0006); the "
                               "chain was re-linked over the rewritten events"}, now.replace(tzinfo=None)))
        for eid, _old_seq, request_id, kind, detail, at in events:
            seq += 1
            if "target" in detail:
                detail = {**detail, "target": _rekey_target(key, detail["target"]) or detail["target"]}
            at_utc = at.replace(tzinfo=dt.timezone.utc) if isinstance(at, dt.datetime) else \
                dt.datetime.fromisoformat(str(at)).replace(tzinfo=dt.timezone.utc)
            digest = audit.event_hash(model_id, seq, request_id, kind, detail, at_utc, prev)
            params = {"seq": seq, "d": detail, "p": prev, "h": digest}
            if eid is None:
                conn.execute(sa.text("INSERT INTO events (model_id, request_id, kind, detail, at, seq, prev_hash, hash) "
                                     "VALUES (:m, NULL, :k, :d, :at, :seq, :p, :h)").bindparams(_JSON_D),
                             {**params, "m": model_id, "k": kind, "at": at})
            else:
                conn.execute(sa.text("UPDATE events SET seq = :seq, detail = :d, prev_hash = :p, hash = :h "
                                     "WHERE id = :i").bindparams(_JSON_D), {**params, "i": eid})
            prev = digest
        conn.execute(sa.text("UPDATE models SET audit_seq = :s, audit_head = :h WHERE id = :m"),
                     {"s": seq, "h": prev, "m": model_id})


_JSON_D = sa.bindparam("d", type_=sa.JSON)


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
