"""audit chain: per-model event sequence and hash links

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""
import sqlalchemy as sa
from alembic import op

from lifecycle.store import schema
from lifecycle.store import audit

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("audit_seq", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("audit_head", sa.String(length=64), nullable=True))
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("seq", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("hash", sa.String(length=64), nullable=True))

    # chain the events an older ledger already holds, in the order they were written
    models = sa.table("models", sa.column("id", sa.Integer), sa.column("audit_seq", sa.Integer),
                      sa.column("audit_head", sa.String))
    events = sa.table("events", sa.column("id", sa.Integer), sa.column("model_id", sa.Integer),
                      sa.column("request_id", sa.String), sa.column("kind", sa.String),
                      sa.column("detail", sa.JSON), sa.column("at", schema.UTCDateTime()),
                      sa.column("seq", sa.Integer), sa.column("prev_hash", sa.String), sa.column("hash", sa.String))
    conn = op.get_bind()
    for (model_id,) in conn.execute(sa.select(models.c.id)).all():
        prev, seq = None, 0
        rows = conn.execute(sa.select(events).where(events.c.model_id == model_id).order_by(events.c.id)).all()
        for row in rows:
            seq += 1
            digest = audit.event_hash(model_id, seq, row.request_id, row.kind, row.detail, row.at, prev)
            conn.execute(events.update().where(events.c.id == row.id).values(seq=seq, prev_hash=prev, hash=digest))
            prev = digest
        conn.execute(models.update().where(models.c.id == model_id).values(audit_seq=seq, audit_head=prev))

    with op.batch_alter_table("models") as batch:
        batch.alter_column("audit_seq", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("events") as batch:
        batch.alter_column("seq", existing_type=sa.Integer(), nullable=False)
        batch.alter_column("hash", existing_type=sa.String(length=64), nullable=False)
        batch.create_unique_constraint(op.f("uq_events_model_id"), ["model_id", "seq"])


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_constraint(op.f("uq_events_model_id"), type_="unique")
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
        batch.drop_column("seq")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("audit_head")
        batch.drop_column("audit_seq")
