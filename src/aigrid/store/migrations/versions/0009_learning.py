"""self-iteration: traces, feedback, the experience memory (with full-text search) and eval runs

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "traces",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=96), nullable=False),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("messages", sa.Text(), nullable=True),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("tools", sa.Text(), server_default="[]", nullable=False),
        sa.Column("model", sa.String(length=128), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=True),
        sa.Column("cost_micro", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("latency_us", sa.BigInteger(), nullable=True),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_us", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("kind", "subject"),
    )
    op.create_index("ix_traces_tenant_time", "traces", ["tenant_id", "created_at_us"])

    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=96), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("correction", sa.Text(), nullable=True),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_feedback_tenant", "feedback", ["tenant_id", "id"])
    op.create_index("ix_feedback_target", "feedback", ["target"])

    op.create_table(
        "experience",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("example", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=True),
        sa.Column("source", sa.String(length=96), nullable=False),
        sa.Column("shared", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.Column("embedding_model", sa.String(length=128), nullable=True),
        sa.Column("uses", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.Column("last_used_at_us", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "kind", "digest"),
    )
    op.create_index("ix_experience_tenant_kind", "experience", ["tenant_id", "kind", "outcome"])
    if op.get_bind().dialect.name == "sqlite":
        # As the memories' index: external content, kept in step by triggers.
        op.execute(
            "CREATE VIRTUAL TABLE experience_fts USING fts5("
            "text, content='experience', content_rowid='id', tokenize='porter unicode61')"
        )
        op.execute(
            "CREATE TRIGGER experience_ai AFTER INSERT ON experience BEGIN "
            "INSERT INTO experience_fts(rowid, text) VALUES (new.id, new.text); END"
        )
        op.execute(
            "CREATE TRIGGER experience_ad AFTER DELETE ON experience BEGIN "
            "INSERT INTO experience_fts(experience_fts, rowid, text) VALUES ('delete', old.id, old.text); END"
        )
        op.execute(
            "CREATE TRIGGER experience_au AFTER UPDATE OF text ON experience BEGIN "
            "INSERT INTO experience_fts(experience_fts, rowid, text) VALUES ('delete', old.id, old.text); "
            "INSERT INTO experience_fts(rowid, text) VALUES (new.id, new.text); END"
        )
    else:
        op.execute(
            "ALTER TABLE experience ADD COLUMN search tsvector GENERATED ALWAYS AS "
            "(to_tsvector('english', text)) STORED"
        )
        op.execute("CREATE INDEX ix_experience_search ON experience USING gin (search)")

    op.create_table(
        "eval_runs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("suite", sa.String(length=32), nullable=False),
        sa.Column("split", sa.String(length=16), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("experience", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("total", sa.Integer(), server_default="0", nullable=False),
        sa.Column("done", sa.Integer(), server_default="0", nullable=False),
        sa.Column("metrics", sa.Text(), server_default="{}", nullable=False),
        sa.Column("error", sa.String(length=1000), nullable=True),
        sa.Column("started_at_us", sa.BigInteger(), nullable=False),
        sa.Column("ended_at_us", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_eval_runs_tenant", "eval_runs", ["tenant_id", "started_at_us"])
    op.create_table(
        "eval_results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("task_id", sa.String(length=96), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("checks", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["eval_runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "task_id"),
    )


def downgrade() -> None:
    op.drop_table("eval_results")
    op.drop_index("ix_eval_runs_tenant", table_name="eval_runs")
    op.drop_table("eval_runs")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS experience_fts")
    op.drop_index("ix_experience_tenant_kind", table_name="experience")
    op.drop_table("experience")
    op.drop_index("ix_feedback_target", table_name="feedback")
    op.drop_index("ix_feedback_tenant", table_name="feedback")
    op.drop_table("feedback")
    op.drop_index("ix_traces_tenant_time", table_name="traces")
    op.drop_table("traces")
