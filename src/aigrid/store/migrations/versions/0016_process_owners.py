"""Process owners: the node and epoch that steps a process, so that two servers never step one

Revision ID: 0016
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable and without a default: adding them rewrites nothing. A process without an owner
    # (started before this revision) is taken up by the first server that looks for orphans.
    with op.batch_alter_table("processes") as batch:
        batch.add_column(sa.Column("owner_node_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("owner_epoch", sa.BigInteger(), nullable=True))
    # No index on the owner: every step looks its process up by pid, and an index on the owner
    # tempted the planner away from the primary key on small tables. The polls (a server's own
    # runnable processes, orphans) go by state, through ix_processes_state.


def downgrade() -> None:
    with op.batch_alter_table("processes") as batch:
        batch.drop_column("owner_epoch")
        batch.drop_column("owner_node_id")
