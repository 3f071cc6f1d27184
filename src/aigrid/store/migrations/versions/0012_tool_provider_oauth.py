"""OAuth for MCP tool providers: each provider's client (with its secret) and tokens

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tool_provider_oauth",
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("client", sa.Text(), nullable=True),
        sa.Column("registered", sa.Boolean(), nullable=False),
        sa.Column("tokens", sa.Text(), nullable=True),
        sa.Column("expires_at_us", sa.BigInteger(), nullable=True),
        sa.Column("issuer", sa.String(length=2000), nullable=True),
        sa.Column("updated_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("provider"),
    )


def downgrade() -> None:
    op.drop_table("tool_provider_oauth")
