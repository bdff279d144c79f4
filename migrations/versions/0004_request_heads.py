"""index for finding each model's oldest queued request

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_requests_model_status_seq", "requests", ["model_id", "status", "seq"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_requests_model_status_seq", table_name="requests")
