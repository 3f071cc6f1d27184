"""Owners of entries and of inbox deliveries, so that exactly one server recovers each; one result per process

Revision ID: 0017
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable and without a default: adding them rewrites nothing. An entry or a delivery with
    # no owner (written before clusters) is anyone's to claim.
    with op.batch_alter_table("entries") as batch:
        batch.add_column(sa.Column("owner_node_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("owner_epoch", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("inbox") as batch:
        batch.add_column(sa.Column("owner_node_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("owner_epoch", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("claimed_until_us", sa.BigInteger(), nullable=True))
    # One result message per process: two servers sweeping for unreported results post it once.
    # Duplicates from before (one per server that swept) are removed first, keeping the oldest.
    op.execute(
        "DELETE FROM inbox WHERE kind = 'result' AND pid IS NOT NULL AND id NOT IN "
        "(SELECT MIN(id) FROM inbox WHERE kind = 'result' AND pid IS NOT NULL GROUP BY pid)"
    )
    op.create_index(
        "ux_inbox_result_pid",
        "inbox",
        ["pid"],
        unique=True,
        sqlite_where=sa.text("kind = 'result'"),
        postgresql_where=sa.text("kind = 'result'"),
    )


def downgrade() -> None:
    op.drop_index("ux_inbox_result_pid", table_name="inbox")
    with op.batch_alter_table("inbox") as batch:
        batch.drop_column("claimed_until_us")
        batch.drop_column("owner_epoch")
        batch.drop_column("owner_node_id")
    with op.batch_alter_table("entries") as batch:
        batch.drop_column("owner_epoch")
        batch.drop_column("owner_node_id")
