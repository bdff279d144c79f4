"""initial ledger schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-24 13:33:24.765797
"""
from alembic import op
import sqlalchemy as sa
from lifecycle.store import schema


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('models',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('strategy', sa.String(length=64), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('n_features', sa.Integer(), nullable=False),
    sa.Column('n_classes', sa.Integer(), nullable=False),
    sa.Column('relapse_threshold', sa.Float(), nullable=False),
    sa.Column('forget_due_days', sa.Float(), nullable=False),
    sa.Column('subject_salt', sa.String(length=64), nullable=False),
    sa.Column('created_at', schema.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_models')),
    sa.UniqueConstraint('name', name=op.f('uq_models_name'))
    )
    op.create_table('events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.String(length=36), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('at', schema.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_events_model_id_models')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_events'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_model', ['model_id', 'id'], unique=False)

    op.create_table('requests',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('target', sa.JSON(), nullable=False),
    sa.Column('payload_sha', sa.String(length=64), nullable=False),
    sa.Column('payload_digest', sa.String(length=64), nullable=True),
    sa.Column('idempotency_key', sa.String(length=200), nullable=True),
    sa.Column('requested_by', sa.String(length=200), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('received_at', schema.UTCDateTime(), nullable=False),
    sa.Column('due_at', schema.UTCDateTime(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('lease_owner', sa.String(length=200), nullable=True),
    sa.Column('lease_expires_at', schema.UTCDateTime(), nullable=True),
    sa.Column('started_at', schema.UTCDateTime(), nullable=True),
    sa.Column('finished_at', schema.UTCDateTime(), nullable=True),
    sa.Column('step_seconds', sa.Float(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('result_version', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_requests_model_id_models')),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_requests')),
    sa.UniqueConstraint('id', name=op.f('uq_requests_id')),
    sa.UniqueConstraint('model_id', 'idempotency_key', name=op.f('uq_requests_model_id'))
    )
    with op.batch_alter_table('requests', schema=None) as batch_op:
        batch_op.create_index('ix_requests_status_model', ['status', 'model_id'], unique=False)

    op.create_table('tasks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('classes', sa.JSON(), nullable=False),
    sa.Column('probe_digest', sa.String(length=64), nullable=True),
    sa.Column('forgotten_at_version', sa.Integer(), nullable=True),
    sa.Column('acc_at_forget', sa.Float(), nullable=True),
    sa.Column('peak_since_forget', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_tasks_model_id_models')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tasks')),
    sa.UniqueConstraint('model_id', 'name', name=op.f('uq_tasks_model_id'))
    )
    op.create_table('certificates',
    sa.Column('request_id', sa.String(length=36), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('body', sa.JSON(), nullable=False),
    sa.Column('created_at', schema.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_certificates_model_id_models')),
    sa.ForeignKeyConstraint(['request_id'], ['requests.id'], name=op.f('fk_certificates_request_id_requests')),
    sa.PrimaryKeyConstraint('request_id', name=op.f('pk_certificates'))
    )
    op.create_table('evaluations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('accuracy', sa.Float(), nullable=False),
    sa.Column('chance', sa.Float(), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_evaluations_model_id_models')),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_evaluations_task_id_tasks')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_evaluations')),
    sa.UniqueConstraint('model_id', 'version', 'task_id', name=op.f('uq_evaluations_model_id'))
    )
    op.create_table('model_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.String(length=36), nullable=False),
    sa.Column('artifact_digest', sa.String(length=64), nullable=False),
    sa.Column('state_purged', sa.Boolean(), nullable=False),
    sa.Column('created_at', schema.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_model_versions_model_id_models')),
    sa.ForeignKeyConstraint(['request_id'], ['requests.id'], name=op.f('fk_model_versions_request_id_requests')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_versions')),
    sa.UniqueConstraint('model_id', 'version', name=op.f('uq_model_versions_model_id')),
    sa.UniqueConstraint('request_id', name=op.f('uq_model_versions_request_id'))
    )
    op.create_table('relapse_findings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('forgotten_at_version', sa.Integer(), nullable=False),
    sa.Column('acc_at_forget', sa.Float(), nullable=False),
    sa.Column('accuracy', sa.Float(), nullable=False),
    sa.Column('chance', sa.Float(), nullable=False),
    sa.Column('relapse', sa.Float(), nullable=False),
    sa.Column('threshold', sa.Float(), nullable=False),
    sa.Column('peak_since_forget', sa.Float(), nullable=False),
    sa.Column('created_at', schema.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_relapse_findings_model_id_models')),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_relapse_findings_task_id_tasks')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_relapse_findings'))
    )
    op.create_table('samples',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('sample_id', sa.String(length=200), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('subject_hash', sa.String(length=64), nullable=True),
    sa.Column('label', sa.Integer(), nullable=False),
    sa.Column('learn_request_seq', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('data_digest', sa.String(length=64), nullable=True),
    sa.Column('data_row', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_samples_model_id_models')),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_samples_task_id_tasks')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_samples')),
    sa.UniqueConstraint('model_id', 'sample_id', name=op.f('uq_samples_model_id'))
    )
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.create_index('ix_samples_subject', ['model_id', 'subject_hash'], unique=False)
        batch_op.create_index('ix_samples_task', ['task_id'], unique=False)

    op.create_table('tombstones',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('sample_id', sa.String(length=200), nullable=False),
    sa.Column('subject_hash', sa.String(length=64), nullable=True),
    sa.Column('request_id', sa.String(length=36), nullable=False),
    sa.Column('created_at', schema.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_tombstones_model_id_models')),
    sa.ForeignKeyConstraint(['request_id'], ['requests.id'], name=op.f('fk_tombstones_request_id_requests')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tombstones')),
    sa.UniqueConstraint('model_id', 'sample_id', name=op.f('uq_tombstones_model_id'))
    )
    with op.batch_alter_table('tombstones', schema=None) as batch_op:
        batch_op.create_index('ix_tombstones_subject', ['model_id', 'subject_hash'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('tombstones', schema=None) as batch_op:
        batch_op.drop_index('ix_tombstones_subject')

    op.drop_table('tombstones')
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.drop_index('ix_samples_task')
        batch_op.drop_index('ix_samples_subject')

    op.drop_table('samples')
    op.drop_table('relapse_findings')
    op.drop_table('model_versions')
    op.drop_table('evaluations')
    op.drop_table('certificates')
    op.drop_table('tasks')
    with op.batch_alter_table('requests', schema=None) as batch_op:
        batch_op.drop_index('ix_requests_status_model')

    op.drop_table('requests')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_model')

    op.drop_table('events')
    op.drop_table('models')
