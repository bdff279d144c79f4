"""erasures and API tokens: a person's erasure above the per-model forgets it
fans out into (one part per model), and HTTP API tokens kept as SHA-256 hashes

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# the vocabulary at this revision, as in 0008
ERASURE_STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")
PART_OUTCOMES = ("forget", "joined", "none", "already_forgotten")


def _one_of(table: str, column: str, values) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=f"ck_{table}_{column}")


def upgrade() -> None:
    op.create_table(
        "erasures",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("subject_hash", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("payload_sha", sa.String(length=64), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("token_id", sa.String(length=32), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("callbacks", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_erasures"),
        sa.UniqueConstraint("idempotency_key", name="uq_erasures_idempotency_key"),
        _one_of("erasures", "status", ERASURE_STATUSES),
    )
    op.create_index("ix_erasures_status_due", "erasures", ["status", "due_at"], unique=False)
    op.create_index("ix_erasures_subject", "erasures", ["subject_hash"], unique=False)
    op.create_table(
        "erasure_parts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("erasure_id", sa.String(length=36), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("request_id", sa.String(length=36), nullable=True),
        sa.Column("held", sa.Integer(), nullable=False),
        sa.Column("tombstoned", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["erasure_id"], ["erasures.id"], name="fk_erasure_parts_erasure_id_erasures"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_erasure_parts_model_id_models"),
        sa.ForeignKeyConstraint(["request_id"], ["requests.id"], name="fk_erasure_parts_request_id_requests"),
        sa.PrimaryKeyConstraint("id", name="pk_erasure_parts"),
        sa.UniqueConstraint("erasure_id", "model_id", name="uq_erasure_parts_erasure_id"),
        _one_of("erasure_parts", "outcome", PART_OUTCOMES),
    )
    op.create_index("ix_erasure_parts_request", "erasure_parts", ["request_id"], unique=False)
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("token_sha256", name="uq_api_tokens_token_sha256"),
    )


def downgrade() -> None:
    op.drop_table("api_tokens")
    op.drop_index("ix_erasure_parts_request", table_name="erasure_parts")
    op.drop_table("erasure_parts")
    op.drop_index("ix_erasures_subject", table_name="erasures")
    op.drop_index("ix_erasures_status_due", table_name="erasures")
    op.drop_table("erasures")
