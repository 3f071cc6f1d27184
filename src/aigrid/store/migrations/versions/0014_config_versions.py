"""Config versions: a change counter per kind of configuration, so every server of a cluster reloads it

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# Seeded here, so that a change only ever updates its row (no insert race between servers).
KINDS = ("keys", "budgets", "limits", "providers")


def upgrade() -> None:
    table = op.create_table(
        "config_versions",
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("kind"),
    )
    op.bulk_insert(table, [{"kind": kind, "version": 0} for kind in KINDS])


def downgrade() -> None:
    op.drop_table("config_versions")
