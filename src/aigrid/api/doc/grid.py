"""The document's grid and account operations: tokens, models, usage, health, metrics, /admin/*."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonValue

from aigrid.api.doc.common import JSONObject, Open, Page
from aigrid.api.doc.registry import Operation, Reply
from aigrid.store.usage import GROUPS, INTERVALS

_ONE_GROUP = " *(" + "|".join(GROUPS) + ")? *"
_GROUP_LIST = f"^{_ONE_GROUP}(,{_ONE_GROUP})*$"
_GROUPS = "Comma-separated fields to group by: " + ", ".join(GROUPS) + "."
_STREAM = "Either of the two: a JSON answer, or with `stream: true` server-sent events."
_HANDLES = {
    "X-Request-Id": "The ledger row metering a grid model's answer (req_...).",
    "X-Aigrid-Process": "The process answering as `agent:NAME` (chat only).",
    "X-Aigrid-Entry": "The entry answering as `entry` (chat only).",
}


# -- the token endpoints ------------------------------------------------------------------------------


# Stream options go only with a stream.
_STREAM_ONLY: dict[str, JsonValue] = {
    "dependentSchemas": {
        "stream_options": {"required": ["stream"], "properties": {"stream": {"const": True}}}
    }
}
NonEmptyText = Annotated[str, Field(min_length=1)]
NonEmptyList = Annotated[list[Any], Field(min_length=1)]


class StreamOptions(Open):
    """Options of a stream."""

    include_usage: bool | None = None


class _TokenRequest(Open):
    model_config = ConfigDict(json_schema_extra=_STREAM_ONLY)

    model: str = Field(
        min_length=1,
        description="A model or alias the grid serves; on chat also `agent:NAME` (one of the caller's "
        "agents) or `entry` (the super entry).",
    )
    stream: bool | None = None
    stream_options: StreamOptions | None = Field(default=None, description="Only with `stream: true`.")
    max_tokens: int | None = Field(default=None, ge=1)
    user: str | None = None


class ChatMessage(Open):
    """One message of a conversation."""

    role: str
    content: str | list[JSONObject] | None = None


_HELLO: list[JsonValue] = [{"role": "user", "content": "Say hello."}]


class ChatRequest(_TokenRequest):
    """A chat completion request, as OpenAI's; unknown fields go to the model's deployment."""

    model_config = ConfigDict(
        json_schema_extra={
            **_STREAM_ONLY,
            "examples": [
                {"model": "local", "messages": _HELLO, "max_tokens": 8},
                {"model": "local", "messages": _HELLO, "max_tokens": 8, "stream": True},
            ],
        }
    )

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    tools: list[JSONObject] | None = None
    tool_choice: str | JSONObject | None = None
    response_format: JSONObject | None = None


class CompletionRequest(_TokenRequest):
    """A text completion request, as OpenAI's."""

    model_config = ConfigDict(
        json_schema_extra={
            **_STREAM_ONLY,
            "examples": [{"model": "local", "prompt": "Once", "max_tokens": 8}],
        }
    )

    prompt: NonEmptyText | NonEmptyList


class EmbeddingRequest(Open):
    """An embeddings request, as OpenAI's (never streamed)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"model": "local", "input": ["a cup", "a mug"]}]}
    )

    model: str = Field(min_length=1)
    input: NonEmptyText | NonEmptyList
    encoding_format: Literal["float", "base64"] | None = None
    stream: Literal[False] | None = None
    user: str | None = None


class Usage(Open):
    """Tokens a request used."""

    prompt_tokens: int
    completion_tokens: int | None = None
    total_tokens: int


class ChatChoice(Open):
    """One answer of a chat completion."""

    index: int
    message: ChatMessage
    finish_reason: str | None


class ChatCompletion(Open):
    """A whole chat completion."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None


class TextChoice(Open):
    """One answer of a text completion."""

    index: int
    text: str
    finish_reason: str | None


class TextCompletion(Open):
    """A whole text completion."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage | None = None


class Embedding(Open):
    """One input's vector: floats, or base64 of little-endian float32."""

    object: Literal["embedding"]
    index: int
    embedding: list[float] | str


class Embeddings(Open):
    """The vectors of every input."""

    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: Usage | None = None


# -- models, usage, accounts --------------------------------------------------------------------------


class ModelObject(Open):
    """A model the caller can ask for: a grid model or alias, or one of its agents."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class UsageQuery(BaseModel):
    """Which usage to sum."""

    group_by: str | None = Field(default=None, pattern=_GROUP_LIST, description=_GROUPS)
    interval: Literal[INTERVALS] | None = None  # type: ignore[valid-type]
    since: str | None = Field(default=None, description="ISO 8601 time (naive is UTC) or epoch seconds.")
    until: str | None = Field(default=None, description="ISO 8601 time (naive is UTC) or epoch seconds.")
    tenant: str | None = Field(default=None, description="The admin key: one tenant's usage.")


class UsageTotals(Open):
    """Sums over every row."""

    requests: int
    total_tokens: int
    cost: str | float | int


class UsageReport(BaseModel):
    """Usage summed by groups, in time buckets when asked."""

    object: Literal["list"]
    group_by: list[str]
    interval: str | None
    data: list[JSONObject]
    totals: UsageTotals


class Health(BaseModel):
    """The server is up and holds its cluster lease (a 503 error when it does not)."""

    status: Literal["ok"]
    node: str
    epoch: int | None
    fenced: int = Field(description="How often this server lost its lease and rejoined")


class ClusterNode(BaseModel):
    """A server that registered with the shared database, as the database's clock sees it."""

    id: int
    name: str
    epoch: int
    live: bool
    started_at_us: int
    lease_until_us: int
    lease_left_s: float
    heartbeat_age_s: float
    address: str | None
    load: JSONObject | None
    self: bool = Field(description="The server that answered")


class Cluster(BaseModel):
    """The servers sharing this database, and this one's lease settings."""

    object: Literal["list"]
    data: list[ClusterNode]
    node: str
    live: bool
    lease_s: float
    renew_s: float
    sync_s: float = Field(description="How often this server polls for config changed through its peers")


class Me(BaseModel):
    """Whose key this is."""

    object: Literal["principal"]
    tenant: str | None
    key_id: str | None
    admin: bool
    users: list[str] | None = Field(
        description="The users the tenant acts for besides itself; null: the admin"
    )


class TenantQuery(BaseModel):
    """The admin key may name one tenant; a tenant key only its own."""

    tenant: str | None = None


class Budget(BaseModel):
    """A budget and what its current period has spent and reserved."""

    tenant: str
    kind: Literal["tokens", "cost"]
    period: Literal["day", "month", "total"]
    limit: int
    spent: int
    reserved: int
    remaining: int
    period_start_us: int


class Tenant(BaseModel):
    """A tenant."""

    id: int
    name: str
    created_at_us: int


class TenantUser(BaseModel):
    """A user a tenant acts for: whose wallet its entries may pay from."""

    object: Literal["user"]
    user: str
    tenant: str | None = None
    deleted: bool | None = None


class TenantUsers(BaseModel):
    """The users a tenant acts for besides itself."""

    object: Literal["list"]
    tenant: str
    data: list[TenantUser]


class NewKey(BaseModel):
    """A new key: its secret is here and nowhere else."""

    id: str
    key: str
    tenant: str
    prefix: str
    name: str | None
    created_at_us: int


class Key(BaseModel):
    """A key, without its secret."""

    id: str
    tenant: str
    prefix: str
    name: str | None
    created_at_us: int
    revoked: bool


class Revoked(BaseModel):
    """A revoked key."""

    id: str
    revoked: Literal[True]


class BudgetRemoved(BaseModel):
    """A removed budget."""

    tenant: str
    kind: Literal["tokens", "cost"]
    period: Literal["day", "month", "total"]
    removed: Literal[True]


class Limits(BaseModel):
    """A tenant's rate limits; null is none."""

    tenant: str | None
    rpm: int | None
    tpm: int | None


class DeploymentHealth(Open):
    """A deployment's health, load and speed."""

    model: str
    name: str
    backend: str
    state: str
    healthy: bool
    in_flight: int
    requests: int
    failures: int


def _token(
    path: str, summary: str, body: type[BaseModel], answer: type[BaseModel], stream: bool
) -> Operation:
    reply = Reply(answer, _STREAM if stream else "OK", stream=stream, headers=_HANDLES)
    return Operation(
        "POST", path, summary, "tokens", "key", {200: reply}, body=body, errors=(413, 429, 502, 503)
    )


OPERATIONS = [
    _token("/v1/chat/completions", "A chat completion (or its stream)", ChatRequest, ChatCompletion, True),
    _token("/v1/completions", "A text completion (or its stream)", CompletionRequest, TextCompletion, True),
    _token("/v1/embeddings", "Embeddings of the inputs", EmbeddingRequest, Embeddings, False),
    Operation(
        "GET",
        "/v1/models",
        "The grid's models, then the caller's agents",
        "models",
        "key",
        {200: Page[ModelObject]},
    ),
    Operation("GET", "/v1/models/{model:path}", "One model", "models", "key", {200: ModelObject}),
    Operation(
        "GET",
        "/v1/usage",
        "Usage summed and bucketed",
        "usage",
        "key",
        {200: UsageReport},
        query=UsageQuery,
        errors=(503,),
    ),
    Operation("GET", "/v1/me", "Whose key this is", "accounts", "key", {200: Me}),
    Operation(
        "GET",
        "/v1/budgets",
        "The caller's budgets this period",
        "accounts",
        "key",
        {200: Page[Budget]},
        query=TenantQuery,
    ),
    Operation(
        "GET",
        "/healthz",
        "The server is up (and holds its cluster lease)",
        "server",
        "public",
        {200: Health},
        errors=(503,),
    ),
    Operation(
        "GET",
        "/admin/cluster",
        "The servers sharing this database: epochs, leases, load",
        "admin",
        "admin",
        {200: Cluster},
    ),
    Operation(
        "GET",
        "/metrics",
        "Prometheus metrics",
        "server",
        "admin",
        {200: Reply({"type": "string"}, "Prometheus text format", "text/plain")},
    ),
    # /admin/*: FastAPI describes their parameters and bodies from the handlers' signatures.
    Operation("POST", "/admin/tenants", "Create a tenant", "admin", "admin", {201: Tenant}, errors=(409,)),
    Operation("GET", "/admin/tenants", "Every tenant", "admin", "admin", {200: Page[Tenant]}),
    Operation(
        "POST", "/admin/keys", "Create a key (its secret is shown once)", "admin", "admin", {201: NewKey}
    ),
    Operation("GET", "/admin/keys", "Keys, without their secrets", "admin", "admin", {200: Page[Key]}),
    Operation("DELETE", "/admin/keys/{key_id}", "Revoke a key at once", "admin", "admin", {200: Revoked}),
    Operation("PUT", "/admin/budgets", "Set a tenant's budget for a period", "admin", "admin", {200: Budget}),
    Operation("GET", "/admin/budgets", "Every tenant's budgets", "admin", "admin", {200: Page[Budget]}),
    Operation("DELETE", "/admin/budgets", "Remove a budget", "admin", "admin", {200: BudgetRemoved}),
    Operation(
        "GET",
        "/admin/tenants/{tenant}/users",
        "The users a tenant acts for",
        "admin",
        "admin",
        {200: TenantUsers},
    ),
    Operation(
        "PUT",
        "/admin/tenants/{tenant}/users/{user}",
        "Let a tenant act for a user (pay from the user's wallet)",
        "admin",
        "admin",
        {200: Reply(TenantUser, "The tenant already acted for the user"), 201: TenantUser},
    ),
    Operation(
        "DELETE",
        "/admin/tenants/{tenant}/users/{user}",
        "Stop a tenant acting for a user",
        "admin",
        "admin",
        {200: TenantUser},
    ),
    Operation("PUT", "/admin/limits", "Set a tenant's rate limits", "admin", "admin", {200: Limits}),
    Operation(
        "GET",
        "/admin/limits",
        "Rate limits of every tenant that has one",
        "admin",
        "admin",
        {200: Page[Limits]},
    ),
    Operation(
        "GET",
        "/admin/deployments",
        "Every deployment's health, load and speed",
        "admin",
        "admin",
        {200: Page[DeploymentHealth]},
    ),
    # The console: a page for people, a client of this API like the CLI.
    Operation(
        "GET",
        "/",
        "The console's page",
        "console",
        "public",
        {200: Reply({"type": "string"}, "HTML", "text/html")},
    ),
    Operation(
        "GET",
        "/console",
        "The console lives at /",
        "console",
        "public",
        {308: Reply(None, "Redirect to /", headers={"location": "/"})},
    ),
    Operation(
        "GET",
        "/console/{path:path}",
        "The console's static files",
        "console",
        "public",
        {200: Reply({}, "A file", "*/*")},
        errors=(404,),
    ),
]
