"""encoders: a model may put a frozen feature extractor in front of its
strategy (its stored file's digest and declaration), with the device it runs
on; gated models get a ceiling on their forget gate's false activations

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as b:
        b.add_column(sa.Column("encoder_digest", sa.String(length=64), nullable=True))
        b.add_column(sa.Column("encoder", sa.JSON(), nullable=True))
        # existing models have no encoder and keep the defaults new models get
        b.add_column(sa.Column("device", sa.String(length=32), nullable=False, server_default="cpu"))
        b.add_column(sa.Column("max_false_activation", sa.Float(), nullable=False, server_default="0.05"))


def downgrade() -> None:
    with op.batch_alter_table("models") as b:
        b.drop_column("max_false_activation")
        b.drop_column("device")
        b.drop_column("encoder")
        b.drop_column("encoder_digest")
