"""callback outbox: one row per erasure status change and callback URL,
written with the change, and one row per delivery attempt

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# the vocabulary at this revision, as in 0008
DELIVERY_STATES = ("pending", "delivered", "gave_up")


def upgrade() -> None:
    allowed = ", ".join(f"'{v}'" for v in DELIVERY_STATES)
    op.create_table(
        "callback_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("erasure_id", sa.String(length=36), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("claimed_by", sa.String(length=36), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["erasure_id"], ["erasures.id"], name="fk_callback_outbox_erasure_id_erasures"),
        sa.PrimaryKeyConstraint("id", name="pk_callback_outbox"),
        sa.CheckConstraint(f"state IN ({allowed})", name="ck_callback_outbox_state"),
    )
    op.create_index("ix_callback_outbox_due", "callback_outbox", ["state", "next_attempt_at"], unique=False)
    op.create_index("ix_callback_outbox_erasure", "callback_outbox", ["erasure_id", "id"], unique=False)
    op.create_table(
        "callback_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["outbox_id"], ["callback_outbox.id"],
                                name="fk_callback_attempts_outbox_id_callback_outbox"),
        sa.PrimaryKeyConstraint("id", name="pk_callback_attempts"),
    )
    op.create_index("ix_callback_attempts_outbox", "callback_attempts", ["outbox_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_callback_attempts_outbox", table_name="callback_attempts")
    op.drop_table("callback_attempts")
    op.drop_index("ix_callback_outbox_erasure", table_name="callback_outbox")
    op.drop_index("ix_callback_outbox_due", table_name="callback_outbox")
    op.drop_table("callback_outbox")
