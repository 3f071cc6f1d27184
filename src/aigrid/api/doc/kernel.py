"""The document's kernel operations: agents, processes, approvals, tools, memory, inbox, services."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from aigrid.api.agents import MAX_ID
from aigrid.api.doc.common import Deleted, JSONObject, Open, Page
from aigrid.api.doc.registry import Operation, Reply
from aigrid.config import ProviderConfig
from aigrid.entry.manifest import Manifest
from aigrid.spec import AgentSpec
from aigrid.store.memory import MAX_MEMORY_CHARS
from aigrid.store.processes import STATES

_ONE_STATE = "(" + "|".join(STATES) + ")"
_STATES = f"^({_ONE_STATE}(,{_ONE_STATE})*)?$"
_NAMED = "The admin key names the tenant; a tenant key may only name its own."
_ID = {"type": "integer", "minimum": 0, "maximum": MAX_ID}


class TenantQuery(BaseModel):
    """The admin key names the tenant; a tenant key reaches its own."""

    tenant: str | None = Field(default=None, description=_NAMED)


class AgentQuery(TenantQuery):
    """Which version of an agent."""

    version: int | None = Field(
        default=None, ge=0, le=MAX_ID, description="A version; the newest if left out."
    )


class AgentSpecIn(AgentSpec):
    """An agent spec to store as the agent's next version, and (the admin key) its tenant."""

    tenant: str | None = Field(default=None, description=_NAMED)


class Described(BaseModel):
    """An agent described in a sentence, compiled into a spec (and saved unless ``dry_run``)."""

    description: str = Field(min_length=1, pattern=r"\S")
    timezone: str = "UTC"
    dry_run: bool = False
    tenant: str | None = Field(default=None, description=_NAMED)


class Change(BaseModel):
    """A change to an agent in words."""

    change: str = Field(min_length=1, pattern=r"\S")
    timezone: str = "UTC"
    dry_run: bool = False


class Agent(BaseModel):
    """A stored version of an agent."""

    object: Literal["agent"]
    name: str
    version: int
    tenant: str | None
    created_at: int
    spec: AgentSpec
    webhook_secret: str | None = Field(
        default=None, description="Only when the agent's webhook secret is new."
    )


class AgentVersion(Agent):
    """A version with its difference from the one before (none for the first)."""

    diff: str | None


class Draft(BaseModel):
    """A spec the compiler wrote, not saved."""

    object: Literal["agent.draft"]
    spec: AgentSpec
    text: str
    notes: list[str]
    diff: str | None
    version: int | None = Field(default=None, description="On an edit: the version it changes.")


class CompiledAgent(Agent):
    """A compiled agent, saved, with the draft it came from."""

    draft: Draft


class Trigger(BaseModel):
    """A timed trigger of the newest version and when it fires next."""

    object: Literal["agent.trigger"]
    position: int
    trigger: JSONObject
    next_at: int | None
    last_fired_at: int | None
    fired: int


class Secret(BaseModel):
    """A new webhook secret; the old one stops working."""

    object: Literal["agent.secret"]
    agent: str
    webhook_secret: str


class ProcessUsage(BaseModel):
    """What a process's model calls used."""

    prompt_tokens: int
    completion_tokens: int
    cost_micro: int


class Process(BaseModel):
    """A run of an agent version on an input."""

    object: Literal["process"]
    pid: str
    tenant: str | None
    agent: str
    agent_version: int
    parent_pid: str | None
    state: Literal[STATES]  # type: ignore[valid-type]
    reason: str | None
    priority: str
    steps: int
    usage: ProcessUsage
    input: str
    result: str | None
    created_at: int
    updated_at: int


class ProcessIn(BaseModel):
    """A run to start: the newest version of ``agent`` on ``input``."""

    agent: str = Field(min_length=1)
    input: str = Field(min_length=1, pattern=r"\S")
    tenant: str | None = Field(default=None, description=_NAMED)


class ProcessQuery(TenantQuery):
    """Which processes."""

    state: str | None = Field(default=None, pattern=_STATES, description="Comma-separated states.")
    agent: str | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class JournalQuery(BaseModel):
    """Which steps."""

    after: int = Field(default=0, ge=0, le=MAX_ID, description="Only steps after this one.")


class Step(Open):
    """One journaled step; its payload's fields beside these."""

    object: Literal["process.step"]
    seq: int
    kind: str
    at_us: int


class Approval(BaseModel):
    """A tool call waiting for a person's yes or no."""

    object: Literal["approval"]
    id: str
    pid: str
    tenant: str | None
    agent: str
    tool: str
    arguments: JSONObject
    requested_at: int


class Tool(BaseModel):
    """A tool agents can be granted."""

    object: Literal["tool"]
    name: str
    called_as: str
    description: str
    provider: str
    tenant: str | None
    parameters: JSONObject


class ProviderLogin(BaseModel):
    """An admin's OAuth login started: the address to open in a browser."""

    object: Literal["tool.provider.login"]
    name: str
    authorization_url: str


class LoginCallback(BaseModel):
    """Where the authorization server sent the admin's browser back."""

    model_config = ConfigDict(extra="forbid")

    redirect_url: str = Field(min_length=1, pattern=r"\S")


class Provider(BaseModel):
    """A tool provider, its tools, or why it is down (header and env values hidden)."""

    object: Literal["tool.provider"]
    name: str
    source: str
    origin: str
    state: Literal["up", "down"]
    error: str | None
    tools: list[str]
    config: JSONObject


class AuditQuery(TenantQuery):
    """Which tool calls."""

    pid: str | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class ToolCall(BaseModel):
    """One tool call in the audit log."""

    object: Literal["tool.call"]
    at_us: int
    tenant: str | None
    pid: str
    agent: str
    tool: str
    arguments_sha256: str
    outcome: str


class MemoryQuery(TenantQuery):
    """``q`` searches by words; otherwise the newest."""

    q: str | None = None
    agent: str | None = None
    limit: int = Field(default=50, ge=1, le=500)


class MemoryIn(BaseModel):
    """A text to remember for an agent, or for all of the tenant's agents."""

    text: str = Field(max_length=MAX_MEMORY_CHARS, pattern=r"\S")
    key: str | None = Field(
        default=None, min_length=1, max_length=200, description="Writing a key again replaces its memory."
    )
    agent: str | None = None


class Memory(BaseModel):
    """A memory."""

    object: Literal["memory"]
    id: int
    agent: str | None
    shared: bool
    key: str | None
    text: str
    updated_at: int


class InboxQuery(TenantQuery):
    """Which messages."""

    after: int = Field(default=0, ge=0, le=1 << 62)
    limit: int = Field(default=100, ge=1, le=1000)


class Delivery(BaseModel):
    """A message's delivery to the agent's webhook."""

    webhook: str
    attempts: int
    delivered_at: int | None
    error: str | None


class InboxMessage(BaseModel):
    """An agent's note, or an unattended process's result."""

    object: Literal["inbox.message"]
    id: int
    tenant: str | None
    kind: str
    pid: str | None
    agent: str | None
    text: str
    created_at: int
    delivery: Delivery | None


class ServiceIn(ProviderConfig):
    """A third-party service: a provider, as for tools, and its manifest."""

    manifest: Manifest


class Service(BaseModel):
    """A registered service, its manifest, and whether it is up."""

    object: Literal["service"]
    name: str
    tenant: str | None
    category: str
    description: str
    source: str | None
    status: Literal["up", "down"]
    error: str | None
    operations: list[JSONObject]


# Operations that call a model on the caller's account: its limits, budgets and deployments apply.
_MODEL = (409, 422, 429, 502, 503)
_SIGNAL = {"type": "string", "enum": ["pause", "resume", "kill"]}
_DECISION = {"type": "string", "enum": ["approve", "deny"]}
_WEBHOOK_BODY = {"type": "string", "maxLength": 64 << 10}


def _op(
    method: str, path: str, summary: str, tag: str, replies: dict[int, Reply | type[BaseModel]], **kw: object
) -> Operation:
    return Operation(method, path, summary, tag, kw.pop("auth", "key"), replies, **kw)  # type: ignore[arg-type]


OPERATIONS = [
    _op(
        "POST",
        "/v1/agents",
        "Store an agent spec as its next version, or compile one from a description",
        "agents",
        {
            200: Reply((Agent, Draft), "The spec was already the newest version, or a dry run's draft"),
            201: Reply((CompiledAgent, Agent), "A new version (with the draft when compiled)"),
        },
        body=(AgentSpecIn, Described),
        errors=_MODEL,
        description="A body with `description` and no `instructions` is compiled first (422 when it "
        "cannot be); `dry_run: true` answers the draft without saving it.",
    ),
    _op(
        "GET",
        "/v1/agents",
        "The newest version of each agent",
        "agents",
        {200: Page[Agent]},
        query=TenantQuery,
    ),
    _op(
        "GET",
        "/v1/agents/{name}",
        "An agent's newest version, or ?version=N",
        "agents",
        {200: Agent},
        query=AgentQuery,
    ),
    _op(
        "GET",
        "/v1/agents/{name}/versions",
        "Every version with its diff",
        "agents",
        {200: Page[AgentVersion]},
        query=TenantQuery,
    ),
    _op(
        "GET",
        "/v1/agents/{name}/triggers",
        "Timed triggers and their next firing",
        "agents",
        {200: Page[Trigger]},
        query=TenantQuery,
    ),
    _op(
        "POST",
        "/v1/agents/{name}/secret",
        "A new webhook secret",
        "agents",
        {200: Secret},
        query=TenantQuery,
        errors=(409,),
    ),
    _op(
        "POST",
        "/v1/agents/{name}/trigger",
        "A webhook starts the agent; the body is its input",
        "agents",
        {202: Process},
        auth="webhook",
        query=TenantQuery,
        body=_WEBHOOK_BODY,
        body_media="text/plain",
        body_required=False,
        errors=(409, 413),
        description="An `Idempotency-Key` header (1 to 40 characters) makes a retried call start nothing.",
    ),
    _op(
        "POST",
        "/v1/agents/{name}/edit",
        "A change in words becomes the next version (or a draft)",
        "agents",
        {200: Reply(Draft, "A dry run's draft"), 201: CompiledAgent},
        query=TenantQuery,
        body=Change,
        errors=_MODEL,
    ),
    _op(
        "POST",
        "/v1/processes",
        "Run an agent on an input",
        "processes",
        {201: Process},
        body=ProcessIn,
        errors=(409, 429),
    ),
    _op(
        "GET",
        "/v1/processes",
        "Processes, newest first",
        "processes",
        {200: Page[Process]},
        query=ProcessQuery,
    ),
    _op("GET", "/v1/processes/{pid}", "A process", "processes", {200: Process}),
    _op(
        "GET",
        "/v1/processes/{pid}/journal",
        "A process's steps, in order",
        "processes",
        {200: Page[Step]},
        query=JournalQuery,
    ),
    _op(
        "POST",
        "/v1/processes/{pid}/{signal:signal}",
        "Pause, resume or kill a process",
        "processes",
        {200: Process},
        path_schemas={"signal": _SIGNAL},
        errors=(409,),
    ),
    _op(
        "GET",
        "/v1/approvals",
        "Tool calls waiting for a yes or no",
        "processes",
        {200: Page[Approval]},
        query=TenantQuery,
    ),
    _op(
        "POST",
        "/v1/approvals/{id}/{decision}",
        "Approve or deny a tool call",
        "processes",
        {200: Process},
        path_schemas={"decision": _DECISION},
        errors=(409,),
    ),
    _op(
        "GET",
        "/v1/tools",
        "The tools the caller's agents can be granted",
        "tools",
        {200: Page[Tool]},
        query=TenantQuery,
    ),
    _op("GET", "/admin/tools/providers", "Every tool provider", "tools", {200: Page[Provider]}, auth="admin"),
    _op(
        "POST",
        "/admin/tools/providers",
        "Open an MCP server or an OpenAPI service and keep it",
        "tools",
        {201: Provider},
        auth="admin",
        body=ProviderConfig,
        errors=(409, 422),
    ),
    _op(
        "DELETE",
        "/admin/tools/providers/{name}",
        "Close a provider and forget it",
        "tools",
        {200: Deleted},
        auth="admin",
        errors=(409,),
    ),
    _op(
        "POST",
        "/admin/tools/providers/{name}/login",
        "Start an admin's OAuth login to a provider (authorization-code grant)",
        "tools",
        {200: ProviderLogin},
        auth="admin",
    ),
    _op(
        "POST",
        "/admin/tools/providers/{name}/login/callback",
        "Finish an admin's OAuth login with the address the browser was sent back to",
        "tools",
        {200: Provider},
        auth="admin",
        body=LoginCallback,
        errors=(409,),
    ),
    _op("GET", "/v1/audit", "Tool calls, newest first", "tools", {200: Page[ToolCall]}, query=AuditQuery),
    _op(
        "GET",
        "/v1/memory",
        "Memories: a search, or the newest",
        "memory",
        {200: Page[Memory]},
        query=MemoryQuery,
    ),
    _op("POST", "/v1/memory", "Remember a text", "memory", {201: Memory}, query=TenantQuery, body=MemoryIn),
    _op(
        "DELETE",
        "/v1/memory/{id}",
        "Forget a memory",
        "memory",
        {200: Deleted},
        query=TenantQuery,
        path_schemas={"id": _ID},
    ),
    _op(
        "GET",
        "/v1/inbox",
        "Agents' notes and unattended runs' results",
        "memory",
        {200: Page[InboxMessage]},
        query=InboxQuery,
    ),
    _op(
        "GET",
        "/v1/services",
        "The services the caller may use",
        "services",
        {200: Page[Service]},
        query=TenantQuery,
    ),
    _op(
        "POST",
        "/admin/services",
        "Register a service",
        "services",
        {201: Service},
        auth="admin",
        body=ServiceIn,
        errors=(409, 422),
    ),
    _op(
        "DELETE",
        "/admin/services/{name}",
        "Close a service and forget it",
        "services",
        {200: Deleted},
        auth="admin",
        errors=(409,),
    ),
]
