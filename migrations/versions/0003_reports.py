"""reports written by the service

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""
import sqlalchemy as sa
from alembic import op

from lifecycle.store import schema

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("written_at", schema.UTCDateTime(), nullable=False),
        sa.Column("html_path", sa.String(length=1000), nullable=False),
        sa.Column("html_sha256", sa.String(length=64), nullable=False),
        sa.Column("json_sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_reports_model_id_models")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reports")),
    )
    op.create_index("ix_reports_model", "reports", ["model_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_reports_model", table_name="reports")
    op.drop_table("reports")
