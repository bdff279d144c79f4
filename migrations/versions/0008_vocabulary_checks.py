"""vocabulary checks: request kinds and statuses, task states, sample statuses,
evaluation roles and the probe policy are CHECK-constrained to the values the
code knows

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# A snapshot of the vocabulary at this revision (later code may add values in
# a migration of its own), so this file never changes with the enums.
CHECKS = {
    "models": {"forgotten_probes": ("keep", "purge")},
    "tasks": {"state": ("pending", "learned", "forgotten", "relearned")},
    "samples": {"status": ("pending", "active", "forgotten")},
    "requests": {"kind": ("learn", "forget", "retrain", "repair"),
                 "status": ("queued", "running", "applied", "failed", "rejected", "cancelled")},
    "evaluations": {"role": ("retained", "forgotten")},
}


def upgrade() -> None:
    for table, columns in CHECKS.items():
        with op.batch_alter_table(table) as b:
            for column, values in columns.items():
                allowed = ", ".join(f"'{v}'" for v in values)
                b.create_check_constraint(f"ck_{table}_{column}", f"{column} IN ({allowed})")


def downgrade() -> None:
    for table, columns in CHECKS.items():
        with op.batch_alter_table(table) as b:
            for column in columns:
                b.drop_constraint(f"ck_{table}_{column}", type_="check")
