"""quarantine: a model whose stored state or data is unreadable stops being claimed (but for repairs)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as b:
        b.add_column(sa.Column("quarantine", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models") as b:
        b.drop_column("quarantine")
