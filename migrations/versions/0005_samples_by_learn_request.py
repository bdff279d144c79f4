"""index for finding the samples a learn request brought

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_samples_learn_request", "samples", ["learn_request_seq"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_samples_learn_request", table_name="samples")
