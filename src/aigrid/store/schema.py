"""The ORM schema. Times are integer microseconds since the epoch (UTC); money is integer micro-units."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """The declarative base of every aigrid table."""


class Tenant(Base):
    """An account that owns keys, budgets and usage."""

    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at_us: Mapped[int] = mapped_column(BigInteger)


class ApiKey(Base):
    """A tenant's API key; only a SHA-256 digest of the secret is kept."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(32))
    name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    revoked_at_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class TenantUser(Base):
    """An end user a tenant acts for: whose wallet its entries may pay from, whose data its agents
    may ask a shared service about."""

    __tablename__ = "tenant_users"

    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    user: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at_us: Mapped[int] = mapped_column(BigInteger)


class Budget(Base):
    """A spending cap for a tenant over a period, in tokens or in cost micro-units."""

    __tablename__ = "budgets"
    __table_args__ = (UniqueConstraint("tenant_id", "kind", "period"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    period: Mapped[str] = mapped_column(String(8))
    limit_value: Mapped[int] = mapped_column(BigInteger)


class RateLimit(Base):
    """Requests and tokens per minute allowed to a tenant."""

    __tablename__ = "rate_limits"

    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm: Mapped[int | None] = mapped_column(Integer, nullable=True)


class LedgerEntry(Base):
    """One metered request: who, which plant, how many tokens, what it cost, how it ended."""

    __tablename__ = "ledger"
    __table_args__ = (
        Index("ix_ledger_tenant_time", "tenant_id", "created_at_us"),
        Index("ix_ledger_time", "created_at_us"),
        # Only rows still in progress are looked up by status (at restart), so only they are indexed.
        Index(
            "ix_ledger_in_progress",
            "status",
            sqlite_where=text("status = 'in_progress'"),
            postgresql_where=text("status = 'in_progress'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    tenant_id: Mapped[int] = mapped_column(Integer)
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    agent: Mapped[str | None] = mapped_column(String(128), nullable=True)
    process_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    endpoint: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128))
    deployment: Mapped[str | None] = mapped_column(String(128), nullable=True)
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    ttft_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    http_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The server (cluster node and its epoch) that wrote the row: recovery at start marks a row
    # still in progress as interrupted only when that owner no longer holds a live lease.
    node_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    node_epoch: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class ClusterNode(Base):
    """A server of the cluster: its name, its current epoch, and its lease on the database's clock."""

    __tablename__ = "cluster_nodes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # Raised each time a server registers under this name: writes that carry an older epoch are fenced.
    epoch: Mapped[int] = mapped_column(BigInteger)
    started_at_us: Mapped[int] = mapped_column(BigInteger)
    lease_until_us: Mapped[int] = mapped_column(BigInteger)
    heartbeat_at_us: Mapped[int] = mapped_column(BigInteger)
    address: Mapped[str | None] = mapped_column(String(400), nullable=True)
    stats: Mapped[str | None] = mapped_column(Text, nullable=True)


class QuotaGrant(Base):
    """A slice of a tenant's budget or rate, leased by one node (and epoch) for a period or window."""

    __tablename__ = "quota_grants"

    tenant_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # "tokens:day", "cost:month"... for budgets; "rpm" or "tpm" for rates.
    resource: Mapped[str] = mapped_column(String(16), primary_key=True)
    # The budget period's start, or the rate window's start, on the database's clock.
    window_start_us: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    node_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_epoch: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # What the owner may consume in the window, all its grants together (only rises, except when
    # the owner hands back what it did not use).
    granted: Mapped[int] = mapped_column(BigInteger)
    updated_at_us: Mapped[int] = mapped_column(BigInteger)


class ConfigVersion(Base):
    """A change counter per kind of configuration (keys, budgets, providers...): servers poll it to reload."""

    __tablename__ = "config_versions"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    # Raised in the transaction of every change of that kind; only its movement means anything.
    version: Mapped[int] = mapped_column(BigInteger)


class AgentSpecVersion(Base):
    """One version of a tenant's agent spec, as JSON; versions are never changed, only added."""

    __tablename__ = "agent_specs"
    __table_args__ = (UniqueConstraint("tenant_id", "name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    spec: Mapped[str] = mapped_column(Text)
    created_at_us: Mapped[int] = mapped_column(BigInteger)


class ProcessRow(Base):
    """One run of an agent spec: its state, its counters and, once done, its answer."""

    __tablename__ = "processes"
    __table_args__ = (
        Index("ix_processes_tenant_state", "tenant_id", "state"),
        Index("ix_processes_state", "state"),
        Index("ix_processes_spawn_key", "spawn_key", unique=True),
        Index("ix_processes_parent", "parent_pid"),
    )

    pid: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    agent: Mapped[str] = mapped_column(String(64))
    agent_version: Mapped[int] = mapped_column(Integer)
    parent_pid: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # The idempotency key of the tool call that started this process, so a retried call finds it.
    spawn_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    input: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(String(512), nullable=True)
    priority: Mapped[str] = mapped_column(String(16))
    steps: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_micro: Mapped[int] = mapped_column(BigInteger, default=0)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    updated_at_us: Mapped[int] = mapped_column(BigInteger)
    # What started it: api, trigger, webhook, message, spawn or chat.
    origin: Mapped[str] = mapped_column(String(16), server_default="api")
    # The node (cluster_nodes.id) and epoch that steps it; its lease is the process's lease.
    owner_node_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    owner_epoch: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class JournalEntry(Base):
    """One step of a process, written before the next begins: the process's durable memory."""

    __tablename__ = "process_journal"
    __table_args__ = (UniqueConstraint("pid", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pid: Mapped[str] = mapped_column(ForeignKey("processes.pid", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(24))
    payload: Mapped[str] = mapped_column(Text)
    created_at_us: Mapped[int] = mapped_column(BigInteger)


class ToolAudit(Base):
    """One tool call as the audit log keeps it: who, which tool, a digest of the arguments, outcome."""

    __tablename__ = "tool_audit"
    __table_args__ = (Index("ix_tool_audit_tenant_time", "tenant_id", "at_us"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at_us: Mapped[int] = mapped_column(BigInteger)
    tenant_id: Mapped[int] = mapped_column(Integer)
    pid: Mapped[str] = mapped_column(String(32), index=True)
    agent: Mapped[str] = mapped_column(String(64))
    tool: Mapped[str] = mapped_column(String(128))
    arguments_sha256: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))


class Memory(Base):
    """A remembered text of an agent, or of a whole tenant (agent ''), found again by full-text search."""

    __tablename__ = "memories"
    __table_args__ = (
        UniqueConstraint("tenant_id", "agent", "key"),
        Index("ix_memories_tenant_agent", "tenant_id", "agent"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    agent: Mapped[str] = mapped_column(String(64))
    key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    text: Mapped[str] = mapped_column(Text)
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    updated_at_us: Mapped[int] = mapped_column(BigInteger)


class InboxRow(Base):
    """A message for a tenant's owner: a note an agent left, or a process's result; and its delivery."""

    __tablename__ = "inbox"
    __table_args__ = (
        Index("ix_inbox_tenant", "tenant_id", "id"),
        Index("ix_inbox_pid", "pid"),
        Index("ix_inbox_next_try", "next_try_at_us"),
        # One result per process, however many servers sweep for unreported ones.
        Index(
            "ux_inbox_result_pid",
            "pid",
            unique=True,
            sqlite_where=text("kind = 'result'"),
            postgresql_where=text("kind = 'result'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    pid: Mapped[str | None] = mapped_column(String(32), nullable=True)
    agent: Mapped[str | None] = mapped_column(String(64), nullable=True)
    kind: Mapped[str] = mapped_column(String(16), server_default="note")
    text: Mapped[str] = mapped_column(Text)
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    # Delivery to the agent's webhook, when its spec names one: tried until it answers 2xx.
    webhook: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_try_at_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    delivered_at_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    delivery_error: Mapped[str | None] = mapped_column(String(512), nullable=True)
    # The server delivering it now (a claim; see docs/cluster.md): another takes it only once
    # that owner's lease has ended or the claim ran out (on the database's clock).
    owner_node_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    owner_epoch: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    claimed_until_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class AgentTrigger(Base):
    """A timed trigger of an agent's newest version and when it fires next (null: never again)."""

    __tablename__ = "agent_triggers"
    __table_args__ = (
        UniqueConstraint("tenant_id", "agent", "position"),
        Index("ix_agent_triggers_next", "next_at_us"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    agent: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer)  # its place in the spec's triggers
    definition: Mapped[str] = mapped_column(Text)  # the trigger as JSON, to see whether a save changed it
    next_at_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_fired_at_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    fired: Mapped[int] = mapped_column(Integer, server_default="0")


class AgentSecret(Base):
    """The secret that lets a webhook start an agent; only its SHA-256 digest is kept."""

    __tablename__ = "agent_secrets"

    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    agent: Mapped[str] = mapped_column(String(64), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at_us: Mapped[int] = mapped_column(BigInteger)


class ToolProviderRow(Base):
    """A tool provider added at run time (``aigrid tool add``), opened again at every start."""

    __tablename__ = "tool_providers"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    config: Mapped[str] = mapped_column(Text)
    # A third-party service's manifest (aigrid service add); none for a plain tool provider.
    manifest: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at_us: Mapped[int] = mapped_column(BigInteger)


class ToolProviderOAuthRow(Base):
    """A provider's OAuth client (its secret included) and tokens; secrets, so never logged or shown."""

    __tablename__ = "tool_provider_oauth"

    # Not a foreign key: providers from the config file keep their tokens here too.
    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    # The SDK's OAuthClientInformationFull as JSON: given by the admin or registered dynamically.
    client: Mapped[str | None] = mapped_column(Text, nullable=True)
    registered: Mapped[bool] = mapped_column(Boolean, default=False)
    tokens: Mapped[str | None] = mapped_column(Text, nullable=True)
    expires_at_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The authorization server the tokens came from, pinned at the first token when none was configured.
    issuer: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    updated_at_us: Mapped[int] = mapped_column(BigInteger)


class EntryRow(Base):
    """One sentence given to the super entry: its plan, what it will buy, and how its saga stands."""

    __tablename__ = "entries"
    __table_args__ = (
        Index("ix_entries_tenant", "tenant_id", "created_at_us"),
        Index("ix_entries_state", "state"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user: Mapped[str] = mapped_column(String(128))  # whose wallet pays
    input: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(24))
    plan: Mapped[str | None] = mapped_column(Text, nullable=True)  # the plan as JSON
    # What the user is asked to confirm (JSON): the purchases, each with seller, item and amount.
    summary: Mapped[str | None] = mapped_column(Text, nullable=True)
    answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    updated_at_us: Mapped[int] = mapped_column(BigInteger)
    # The server carrying it out while it plans or runs its saga: every write of that work checks
    # it; another server recovers the entry only once this owner's lease has ended.
    owner_node_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    owner_epoch: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class EntryJournalRow(Base):
    """One step of an entry's saga, journaled before a call (its intent) and after (its outcome)."""

    __tablename__ = "entry_journal"
    __table_args__ = (UniqueConstraint("entry_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entry_id: Mapped[str] = mapped_column(ForeignKey("entries.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    payload: Mapped[str] = mapped_column(Text)
    created_at_us: Mapped[int] = mapped_column(BigInteger)


class TraceRow(Base):
    """One task's run as the learning loop reads it: what was asked, what the model saw and said,
    what was called, and how it ended (an entry's plan, a compile, a process)."""

    __tablename__ = "traces"
    __table_args__ = (
        Index("ix_traces_tenant_time", "tenant_id", "created_at_us"),
        UniqueConstraint("kind", "subject"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # entry | compile | process
    subject: Mapped[str] = mapped_column(String(96))  # the entry id, agent@version or pid it traces
    input: Mapped[str] = mapped_column(Text)
    messages: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON: the model's last prompt
    answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    tools: Mapped[str] = mapped_column(Text, server_default="[]")  # JSON: the operations or tools called
    model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))  # pending | success | failure
    reason: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    cost_micro: Mapped[int] = mapped_column(BigInteger, server_default="0")
    latency_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    updated_at_us: Mapped[int] = mapped_column(BigInteger)


class FeedbackRow(Base):
    """A person's word on an answer: a rating, a comment, and perhaps the answer it should have been."""

    __tablename__ = "feedback"
    __table_args__ = (Index("ix_feedback_tenant", "tenant_id", "id"), Index("ix_feedback_target", "target"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # completion | process | entry | agent
    target: Mapped[str] = mapped_column(String(96))
    rating: Mapped[int] = mapped_column(Integer)  # 1 good, -1 bad, 0 neither
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    correction: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at_us: Mapped[int] = mapped_column(BigInteger)


class ExperienceRow(Base):
    """A judged example a tenant's next plans and compiles learn from: a sentence and what did (or
    did not) work for it, with the sentence's embedding for finding it again by meaning."""

    __tablename__ = "experience"
    __table_args__ = (
        Index("ix_experience_tenant_kind", "tenant_id", "kind", "outcome"),
        UniqueConstraint("tenant_id", "kind", "digest"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # plan | spec
    text: Mapped[str] = mapped_column(Text)
    example: Mapped[str] = mapped_column(Text)  # JSON: the plan, or the spec's parts
    outcome: Mapped[str] = mapped_column(String(16))  # success | failure
    reason: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    source: Mapped[str] = mapped_column(String(96))  # where it came from: entry id, suite, feedback
    # Shown to every tenant: a suite's training examples the admin taught the whole grid (no one's data).
    shared: Mapped[bool] = mapped_column(Boolean, server_default=false())
    digest: Mapped[str] = mapped_column(String(64))  # SHA-256 of kind, text and example: no duplicates
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # float32, normalised
    embedding_model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    uses: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    last_used_at_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class EvalRunRow(Base):
    """One run of an eval suite's split against a model, with or without experience."""

    __tablename__ = "eval_runs"
    __table_args__ = (Index("ix_eval_runs_tenant", "tenant_id", "started_at_us"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    suite: Mapped[str] = mapped_column(String(32))
    split: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(128))
    experience: Mapped[bool] = mapped_column(Boolean)
    # Answers drawn per task, the first the plan checker accepts judged (1: the planner as it runs).
    best_of: Mapped[int] = mapped_column(Integer, server_default="1")
    state: Mapped[str] = mapped_column(String(16))  # running | done | failed
    total: Mapped[int] = mapped_column(Integer, server_default="0")
    done: Mapped[int] = mapped_column(Integer, server_default="0")
    metrics: Mapped[str] = mapped_column(Text, server_default="{}")  # JSON: name -> [passed, counted]
    error: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    started_at_us: Mapped[int] = mapped_column(BigInteger)
    ended_at_us: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class EvalResultRow(Base):
    """One task of an eval run: what the verifier said of it."""

    __tablename__ = "eval_results"
    __table_args__ = (UniqueConstraint("run_id", "task_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("eval_runs.id", ondelete="CASCADE"))
    task_id: Mapped[str] = mapped_column(String(96))
    passed: Mapped[bool] = mapped_column(Boolean)
    checks: Mapped[str] = mapped_column(Text)  # JSON: metric -> bool, for the metrics this task counts in
    reason: Mapped[str] = mapped_column(Text)
    seconds: Mapped[float] = mapped_column(Float)
    answer: Mapped[str | None] = mapped_column(Text, nullable=True)


class DatasetRow(Base):
    """A training set built from verified traces, corrections and samples; its examples are a file."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # planner | compiler | agents
    examples: Mapped[int] = mapped_column(Integer)
    sources: Mapped[str] = mapped_column(Text, server_default="{}")  # JSON: source -> examples
    left_out: Mapped[str] = mapped_column(Text, server_default="{}")  # JSON: reason -> count
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(1000))
    created_at_us: Mapped[int] = mapped_column(BigInteger)


class LearnedModelRow(Base):
    """A learned version of a model: its adapter file, lineage and where it stands."""

    __tablename__ = "learned_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    base: Mapped[str] = mapped_column(String(128))
    dataset_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # training | failed | candidate | promoted | kept | retired
    state: Mapped[str] = mapped_column(String(16))
    folder: Mapped[str] = mapped_column(String(1000))
    adapter_path: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    lineage: Mapped[str] = mapped_column(Text, server_default="{}")  # JSON: rounds, training, evals
    error: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    updated_at_us: Mapped[int] = mapped_column(BigInteger)


class PromotionRow(Base):
    """A change of the model in use for a task kind: the newest row of a kind is in force."""

    __tablename__ = "model_promotions"
    __table_args__ = (Index("ix_model_promotions_kind", "kind", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    model: Mapped[str | None] = mapped_column(String(128), nullable=True)  # None: the configured one
    action: Mapped[str] = mapped_column(String(16))  # promote | rollback
    reason: Mapped[str] = mapped_column(String(1000))
    at_us: Mapped[int] = mapped_column(BigInteger)
