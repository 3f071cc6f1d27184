"""third-party services: a tool provider kept with its manifest

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tool_providers") as batch:
        batch.add_column(sa.Column("manifest", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tool_providers") as batch:
        batch.drop_column("manifest")
