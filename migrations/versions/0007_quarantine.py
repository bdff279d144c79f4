"""quarantine: a model whose stored state or data is unreadable stops being claimed (but for repairs);
indexes an audit reads certificates and findings by

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
    op.create_index("ix_certificates_model", "certificates", ["model_id"], unique=False)
    op.create_index("ix_relapse_findings_model", "relapse_findings", ["model_id", "version"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_relapse_findings_model", table_name="relapse_findings")
    op.drop_index("ix_certificates_model", table_name="certificates")
    with op.batch_alter_table("models") as b:
        b.drop_column("quarantine")
