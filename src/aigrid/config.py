"""The server's configuration: models, their deployments and server-wide settings, from TOML."""

from __future__ import annotations

import tomllib
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Literal

from croniter import croniter
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.config import JsonValue

Backend = Literal["openai", "embedded"]
Policy = Literal["failover", "least-busy", "cheapest", "fastest"]
Tier = Literal["edge", "cloud"]
ExtraBuffers = Literal["auto", "on", "off"]
ProviderKind = Literal["mcp", "openapi"]
# A provider's name prefixes its tools ("shop" gives "shop.search"), so it is kept short and plain.
PROVIDER_NAME = r"^[a-z][a-z0-9_-]{0,31}$"

# Prices are kept as integers of a millionth of a micro-unit per token, so costs are integer sums.
PRICE_SCALE = 1_000_000
PRICE_QUANTUM = Decimal("0.000001")
EMBEDDED_MODEL_NAME = "smollm2-135m"
EMBEDDED_MODEL_ALIAS = "local"


class ConfigError(Exception):
    """A configuration file that cannot be used, with a message for the person who wrote it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeploymentConfig(_Strict):
    """One plant that can serve a model: a backend, its upstream name, prices, context and tier."""

    backend: Backend
    name: str | None = Field(default=None, min_length=1, max_length=100)
    base_url: str | None = None
    api_key_env: str | None = None
    upstream_model: str | None = None
    model_path: str | None = None
    # An embedded deployment's GGUF LoRA adapter (a learned version of its model).
    adapter_path: str | None = None
    input_price_per_mtok: Decimal = Decimal(0)
    cached_input_price_per_mtok: Decimal | None = None
    output_price_per_mtok: Decimal = Decimal(0)
    context_length: int = Field(default=8192, gt=0)
    max_output_tokens: int | None = Field(default=None, gt=0)
    tier: Tier = "cloud"
    timeout_s: float = Field(default=120.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    max_connections: int = Field(default=256, gt=0)
    threads: int | None = Field(default=None, gt=0)
    queue_size: int = Field(default=64, gt=0)
    parallel: int = Field(default=4, gt=0, le=64)
    cache_sequences: int = Field(default=2, ge=0, le=192)
    # Whether llama.cpp may repack an embedded model's weights into extra CPU buffer types (AMX,
    # CPU_REPACK): "auto" turns them off on CPUs whose AMX buffers crash llama.cpp.
    cpu_extra_buffers: ExtraBuffers = "auto"
    # An embedded engine that finishes no decode step for this long while it has requests is
    # taken for hung, killed and started again (as vLLM's engine iteration timeout does).
    engine_step_timeout_s: float = Field(default=300.0, gt=0)

    @field_validator("input_price_per_mtok", "cached_input_price_per_mtok", "output_price_per_mtok")
    @classmethod
    def _price(cls, v: Decimal | None) -> Decimal | None:
        if v is None:
            return v
        if v < 0:
            raise ValueError("a price cannot be negative")
        if v != v.quantize(PRICE_QUANTUM):
            raise ValueError("a price may have at most 6 decimal places")
        return v

    @cached_property
    def scaled_prices(self) -> tuple[int, int, int]:
        """Input, cached input and output prices in millionths of a micro-unit per token."""
        cached = self.cached_input_price_per_mtok
        return (
            int(self.input_price_per_mtok * PRICE_SCALE),
            int((self.input_price_per_mtok if cached is None else cached) * PRICE_SCALE),
            int(self.output_price_per_mtok * PRICE_SCALE),
        )

    @model_validator(mode="after")
    def _check_backend_fields(self) -> DeploymentConfig:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("an 'openai' deployment needs base_url")
        if self.backend == "openai" and not self.upstream_model:
            raise ValueError("an 'openai' deployment needs upstream_model")
        if self.adapter_path and self.backend != "embedded":
            raise ValueError("adapter_path is for an 'embedded' deployment (llama.cpp applies it)")
        return self

    @property
    def output_reservation(self) -> int:
        """Tokens reserved for the answer when a request sets no max_tokens."""
        return self.max_output_tokens or min(self.context_length, 8192)


class ModelConfig(_Strict):
    """A model name clients ask for, with the deployments that serve it and how to choose."""

    name: str = Field(min_length=1, max_length=128)
    aliases: list[str] = Field(default_factory=list)
    policy: Policy = "failover"
    deployments: list[DeploymentConfig]

    @field_validator("deployments")
    @classmethod
    def _at_least_one(cls, v: list[DeploymentConfig]) -> list[DeploymentConfig]:
        if not v:
            raise ValueError("a model needs at least one deployment")
        return v


class BreakerConfig(_Strict):
    """How a failing deployment is cooled down."""

    cooldown_s: float = Field(default=5.0, gt=0)
    max_cooldown_s: float = Field(default=300.0, gt=0)


class LedgerConfig(_Strict):
    """How the meter's journal writes: 'normal' survives a killed process, 'full' also a lost machine."""

    sync: Literal["normal", "full"] = "normal"


class ClusterConfig(_Strict):
    """This server's node in a cluster of servers sharing one database: its name and its lease."""

    # The name peers and operators know it by; by default the host's name and the port it serves.
    node: str | None = Field(default=None, min_length=1, max_length=200)
    # Where operators (and later peers) reach it; shown by /admin/cluster.
    address: str | None = Field(default=None, max_length=400)
    lease_s: float = Field(default=15.0, gt=0, le=3600)
    renew_s: float = Field(default=5.0, gt=0, le=3600)
    # How often a server polls for keys, budgets and limits changed through another server.
    sync_s: float = Field(default=1.0, gt=0, le=3600)
    # Admission from quota leases (docs/cluster.md): "auto" uses them on PostgreSQL, where
    # servers may share the database; a lone server on SQLite admits from its own counts.
    quota: Literal["auto", "on", "off"] = "auto"
    # Strict: a lost server's unused grant stays counted as spent until the period ends or an admin
    # resets the budget (overspend 0); else it returns to the pool once its lease has ended.
    strict_budgets: bool = False
    # A budget grant's size, as a fraction of the limit: at most this much per lost server is overspent.
    grant_fraction: float = Field(default=0.01, gt=0, le=1)
    # Rate windows: rpm and tpm admit at most their allowance per fixed window of this length.
    rate_window_s: float = Field(default=60.0, ge=1, le=3600)
    # How long a request the local grant cannot cover waits for the database to grant more.
    acquire_wait_s: float = Field(default=1.0, gt=0, le=30)

    @model_validator(mode="after")
    def _renews_in_time(self) -> ClusterConfig:
        if self.renew_s >= self.lease_s:
            raise ValueError(f"renew_s ({self.renew_s}) must be shorter than lease_s ({self.lease_s})")
        return self


class KernelConfig(_Strict):
    """How the agent kernel shares the grid: workers (steps at once) and the scheduler's rules."""

    workers: int = Field(default=64, ge=1, le=4096)
    tenant_cap: int = Field(default=16, ge=1, le=4096)
    aging_s: float = Field(default=30.0, gt=0)
    weights: dict[str, float] = Field(default_factory=dict)
    # The model (or tier) that compiles descriptions into specs, and the one compiled agents use.
    compiler_model: str = Field(default="local", min_length=1)
    agent_model: str = Field(default="local", min_length=1)
    # The model (or tier) that plans what the super entry does for a sentence.
    planner_model: str = Field(default="local", min_length=1)

    @field_validator("weights")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        for tenant, weight in v.items():
            if weight <= 0:
                raise ValueError(f"tenant '{tenant}' needs a weight above 0")
        return v


class LearnConfig(_Strict):
    """The experience memory: whether plans and compiles learn from judged examples, and how."""

    # On by default: verified successes are kept and the nearest few shown to the next plan or compile.
    experience: bool = True
    # The model whose /v1/embeddings finds examples by meaning ("" for words alone).
    embedding_model: str = Field(default="local", max_length=128)
    # Worked examples shown to one plan or compile.
    examples: int = Field(default=3, ge=0, le=8)
    # The most examples a tenant keeps of a kind; past it the least recently used are forgotten.
    max_examples: int = Field(default=5000, ge=10, le=1_000_000)
    # When the self-training loop runs a round by itself (a cron expression, UTC); off when unset.
    schedule: str | None = Field(default=None, max_length=100)
    # A scheduled round runs only when this many verified traces came in since the last one.
    min_new_traces: int = Field(default=50, ge=1, le=1_000_000)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is not None and not croniter.is_valid(v):
            raise ValueError(f"'{v}' is not a cron expression (five fields: minute hour day month weekday)")
        return v


class OAuthConfig(_Strict):
    """OAuth for an MCP server over HTTP: client_credentials or an admin's login; its client given or made."""

    # authorization_code: an admin logs in once (aigrid tool login); then the refresh token carries on.
    grant: Literal["client_credentials", "authorization_code"] = "client_credentials"
    # None: register a client dynamically (RFC 7591) where the authorization server offers it.
    client_id: str | None = Field(default=None, min_length=1, max_length=512)
    # Kept in the database's oauth table, never in the provider's kept config; repr shows no secret.
    client_secret: SecretStr | None = Field(default=None, min_length=1, max_length=4096)
    scope: str | None = Field(default=None, min_length=1, max_length=2000)
    # The authorization server the client belongs to: token requests go only there. None: the first
    # one discovered is trusted and then kept (pinned) for this provider.
    issuer: str | None = Field(default=None, pattern=r"^https?://", max_length=2000)
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    # Where the authorization server sends the admin's browser back (authorization_code only); nothing
    # need listen there: the admin pastes the address the browser was sent to.
    redirect_uri: str = Field(
        default="http://127.0.0.1:8976/oauth/callback", pattern=r"^https?://", max_length=2000
    )
    # A URL-based client id (a Client ID Metadata Document the admin publishes there, listing the
    # redirect_uri), used where the authorization server supports them instead of registering a client
    # (authorization_code without a client_id only).
    client_metadata_url: str | None = Field(default=None, pattern=r"^https://[^/]+/.", max_length=2000)

    @model_validator(mode="after")
    def _secret_has_an_id(self) -> OAuthConfig:
        if self.client_secret is not None and self.client_id is None:
            raise ValueError("oauth: a client_secret needs its client_id")
        if self.client_metadata_url is not None and (
            self.grant != "authorization_code" or self.client_id is not None
        ):
            raise ValueError("oauth: client_metadata_url is for authorization_code without a client_id")
        return self


# What ``ProviderConfig._one_source`` checks, said in JSON Schema for the API's document.
_ONE_SOURCE: list[JsonValue] = [
    {
        "properties": {"kind": {"const": "mcp"}, "command": {"minItems": 1}, "url": {"type": "null"}},
        "required": ["kind", "command"],
    },
    {
        "properties": {
            "kind": {"const": "mcp"},
            "command": {"maxItems": 0},
            "url": {"type": "string", "minLength": 1},
        },
        "required": ["kind", "url"],
    },
    {
        "properties": {
            "kind": {"const": "openapi"},
            "command": {"maxItems": 0},
            "spec": {"type": "string", "minLength": 1},
        },
        "required": ["kind", "spec"],
    },
]


class ProviderConfig(BaseModel):
    """One MCP server (a command over stdio, or a streamable HTTP URL) or one OpenAPI service."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"anyOf": _ONE_SOURCE})

    name: str = Field(pattern=PROVIDER_NAME)
    kind: ProviderKind
    command: tuple[str, ...] = Field(default=(), max_length=256)
    env: dict[str, str] = Field(default_factory=dict)
    url: str | None = Field(default=None, max_length=2000)
    spec: str | None = Field(default=None, max_length=2000)
    base_url: str | None = Field(default=None, max_length=2000)
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=30.0, gt=0, le=3600)
    tenant: str | None = Field(default=None, min_length=1, max_length=64)
    # The argument of its tools that names the end user they act for (a wallet's owner): a tenant's
    # calls may name only users it acts for. A service's manifest sets it as ``payer``.
    acts_for: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    oauth: OAuthConfig | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ProviderConfig:
        if self.kind == "mcp" and bool(self.command) == bool(self.url):
            raise ValueError("an 'mcp' provider needs either command (stdio) or url (streamable HTTP)")
        if self.kind == "openapi" and not self.spec:
            raise ValueError("an 'openapi' provider needs spec (a file path or URL)")
        if self.kind == "openapi" and self.command:
            raise ValueError("an 'openapi' provider takes spec and base_url, not command")
        if self.oauth is not None and (self.kind != "mcp" or not self.url):
            raise ValueError("oauth is for an 'mcp' provider over streamable HTTP (a url)")
        if self.oauth is not None and any(h.lower() == "authorization" for h in self.headers):
            raise ValueError("oauth and an Authorization header cannot both be given: OAuth sets that header")
        return self

    def describe(self) -> str:
        """Where the tools come from, in a few words, for listings."""
        if self.kind == "openapi":
            return f"openapi {self.spec}"
        return f"mcp {self.url}" if self.url else f"mcp stdio {' '.join(self.command)}"


class ServerConfig(_Strict):
    """Everything the config file declares."""

    database_url: str | None = None
    models: list[ModelConfig] = Field(default_factory=list)
    breaker: BreakerConfig = BreakerConfig()
    ledger: LedgerConfig = LedgerConfig()
    tools: list[ProviderConfig] = Field(default_factory=list)
    kernel: KernelConfig = KernelConfig()
    learn: LearnConfig = LearnConfig()
    cluster: ClusterConfig = ClusterConfig()

    @model_validator(mode="after")
    def _unique_names(self) -> ServerConfig:
        seen: set[str] = set()
        for model in self.models:
            for name in (model.name, *model.aliases):
                if name in seen:
                    raise ValueError(f"model name '{name}' is declared twice")
                seen.add(name)
        providers = [p.name for p in self.tools]
        for name in providers:
            if providers.count(name) > 1:
                raise ValueError(f"tool provider '{name}' is declared twice")
        return self


def default_embedded_model() -> ModelConfig:
    """The model served when no config file names any: the embedded SmolLM2."""
    return ModelConfig(
        name=EMBEDDED_MODEL_NAME,
        aliases=[EMBEDDED_MODEL_ALIAS],
        deployments=[
            DeploymentConfig(
                backend="embedded",
                name="embedded-smollm2",
                upstream_model=EMBEDDED_MODEL_NAME,
                context_length=8192,
                tier="edge",
            )
        ],
    )


def load_config(path: Path | None) -> ServerConfig:
    """Read and validate a TOML config; without a path, serve the embedded model alone."""
    if path is None:
        return ServerConfig(models=[default_embedded_model()])
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        config = ServerConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from exc
    if not config.models:
        config = config.model_copy(update={"models": [default_embedded_model()]})
    return config
