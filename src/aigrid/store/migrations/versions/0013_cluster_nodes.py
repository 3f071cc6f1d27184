"""Cluster membership: the servers sharing one database, their epochs and leases; ledger rows' owners

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cluster_nodes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("started_at_us", sa.BigInteger(), nullable=False),
        sa.Column("lease_until_us", sa.BigInteger(), nullable=False),
        sa.Column("heartbeat_at_us", sa.BigInteger(), nullable=False),
        sa.Column("address", sa.String(length=400), nullable=True),
        sa.Column("stats", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    # Nullable and without a default: adding them rewrites nothing, on SQLite or PostgreSQL.
    with op.batch_alter_table("ledger") as batch:
        batch.add_column(sa.Column("node_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("node_epoch", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ledger") as batch:
        batch.drop_column("node_epoch")
        batch.drop_column("node_id")
    op.drop_table("cluster_nodes")
