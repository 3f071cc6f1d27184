"""agent memory with full-text search, owner notifications, spawn keys, tool providers

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "memories",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("agent", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_us", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "agent", "key"),
    )
    with op.batch_alter_table("memories") as batch:
        batch.create_index("ix_memories_tenant_agent", ["tenant_id", "agent"])
    if op.get_bind().dialect.name == "sqlite":
        # An external-content FTS5 index kept in step with the table by triggers.
        op.execute(
            "CREATE VIRTUAL TABLE memories_fts USING fts5("
            "key, text, content='memories', content_rowid='id', tokenize='porter unicode61')"
        )
        op.execute(
            "CREATE TRIGGER memories_ai AFTER INSERT ON memories BEGIN "
            "INSERT INTO memories_fts(rowid, key, text) VALUES (new.id, new.key, new.text); END"
        )
        op.execute(
            "CREATE TRIGGER memories_ad AFTER DELETE ON memories BEGIN "
            "INSERT INTO memories_fts(memories_fts, rowid, key, text) "
            "VALUES ('delete', old.id, old.key, old.text); END"
        )
        op.execute(
            "CREATE TRIGGER memories_au AFTER UPDATE ON memories BEGIN "
            "INSERT INTO memories_fts(memories_fts, rowid, key, text) "
            "VALUES ('delete', old.id, old.key, old.text); "
            "INSERT INTO memories_fts(rowid, key, text) VALUES (new.id, new.key, new.text); END"
        )
    else:
        op.execute(
            "ALTER TABLE memories ADD COLUMN search tsvector GENERATED ALWAYS AS "
            "(to_tsvector('english', coalesce(key, '') || ' ' || text)) STORED"
        )
        op.execute("CREATE INDEX ix_memories_search ON memories USING gin (search)")

    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("pid", sa.String(length=32), nullable=True),
        sa.Column("agent", sa.String(length=64), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("notifications") as batch:
        batch.create_index("ix_notifications_tenant", ["tenant_id", "id"])

    with op.batch_alter_table("processes") as batch:
        batch.add_column(sa.Column("spawn_key", sa.String(length=64), nullable=True))
        batch.create_index("ix_processes_spawn_key", ["spawn_key"], unique=True)
        batch.create_index("ix_processes_parent", ["parent_pid"])

    op.create_table(
        "tool_providers",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("tool_providers")
    with op.batch_alter_table("processes") as batch:
        batch.drop_index("ix_processes_parent")
        batch.drop_index("ix_processes_spawn_key")
        batch.drop_column("spawn_key")
    op.drop_table("notifications")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE memories_fts")
    op.drop_table("memories")
