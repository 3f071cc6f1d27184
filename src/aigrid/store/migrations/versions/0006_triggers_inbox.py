"""triggers and their firings, webhook secrets, the owner's inbox, where a process came from

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("processes") as batch:
        batch.add_column(sa.Column("origin", sa.String(length=16), nullable=False, server_default="api"))

    with op.batch_alter_table("notifications") as batch:
        batch.drop_index("ix_notifications_tenant")
    op.rename_table("notifications", "inbox")
    with op.batch_alter_table("inbox") as batch:
        batch.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="note"))
        batch.add_column(sa.Column("webhook", sa.String(length=2000), nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("next_try_at_us", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("delivered_at_us", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("delivery_error", sa.String(length=512), nullable=True))
        batch.create_index("ix_inbox_tenant", ["tenant_id", "id"])
        batch.create_index("ix_inbox_pid", ["pid"])
        batch.create_index("ix_inbox_next_try", ["next_try_at_us"])

    op.create_table(
        "agent_triggers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("next_at_us", sa.BigInteger(), nullable=True),
        sa.Column("last_fired_at_us", sa.BigInteger(), nullable=True),
        sa.Column("fired", sa.Integer(), nullable=False, server_default="0"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "agent", "position"),
    )
    with op.batch_alter_table("agent_triggers") as batch:
        batch.create_index("ix_agent_triggers_next", ["next_at_us"])

    op.create_table(
        "agent_secrets",
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", "agent"),
        sa.UniqueConstraint("digest"),
    )


def downgrade() -> None:
    op.drop_table("agent_secrets")
    op.drop_table("agent_triggers")
    with op.batch_alter_table("inbox") as batch:
        for index in ("ix_inbox_next_try", "ix_inbox_pid", "ix_inbox_tenant"):
            batch.drop_index(index)
        for column in ("delivery_error", "delivered_at_us", "next_try_at_us", "attempts", "webhook", "kind"):
            batch.drop_column(column)
    op.rename_table("inbox", "notifications")
    with op.batch_alter_table("notifications") as batch:
        batch.create_index("ix_notifications_tenant", ["tenant_id", "id"])
    with op.batch_alter_table("processes") as batch:
        batch.drop_column("origin")
