"""Compute sites: the site a run or schedule targets, and a run's batch job on it.

Revision ID: 0002
Revises: 0001

``site`` NULL is the platform's local site (``cloud``), where every run before this revision
executed; ``site_job`` is the Slurm job (``1234``, or ``1234_7`` for a task of a job array).
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("site", sa.String(64)))
        batch.add_column(sa.Column("site_job", sa.String(64)))
    with op.batch_alter_table("schedules") as batch:
        batch.add_column(sa.Column("site", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("schedules") as batch:
        batch.drop_column("site")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("site_job")
        batch.drop_column("site")
