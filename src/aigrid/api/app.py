"""Assembly of a server: database, accounts, backends, router, meter and the HTTP routes."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, fields
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest
from sqlalchemy import Engine
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount
from starlette.routing import Route as HTTPRoute
from starlette.types import Scope

from aigrid.api import accounts as account_routes
from aigrid.api import admin as admin_routes
from aigrid.api import agents as agent_routes
from aigrid.api import cluster as cluster_routes
from aigrid.api import compose as compose_routes
from aigrid.api import doc as api_doc
from aigrid.api import entry as entry_routes
from aigrid.api import learn as learn_routes
from aigrid.api import learn_models as learn_model_routes
from aigrid.api import openai as openai_routes
from aigrid.api import payers as payer_routes
from aigrid.api import services as service_routes
from aigrid.api import tools as tool_routes
from aigrid.api.auth import KeyRing
from aigrid.api.config_sync import ConfigSync
from aigrid.api.doc.registry import install as install_doc
from aigrid.api.hot_path import HotPath
from aigrid.api.state import AppState, KernelParts, LearnParts, state_of
from aigrid.config import ServerConfig
from aigrid.entry.planner import PLAN_MAX_TOKENS, REDRAW_TEMPERATURE, Planner
from aigrid.entry.registry import ServiceRegistry
from aigrid.entry.service import EntryService
from aigrid.errors import APIError, internal_error, retry_after
from aigrid.grid.backends.base import Backend
from aigrid.grid.limits import Admission
from aigrid.grid.meter import Metrics
from aigrid.grid.plants import build_routes
from aigrid.grid.quota import Leases
from aigrid.grid.router import Router
from aigrid.grid.service import Grid
from aigrid.kernel.builtins import SystemCalls
from aigrid.kernel.compiler import Compiler
from aigrid.kernel.inbox import Inbox
from aigrid.kernel.kernel import Kernel
from aigrid.kernel.model import GridModelClient, ModelRoles, TenantNames
from aigrid.kernel.providers.manager import ProviderManager
from aigrid.kernel.runner import Runner
from aigrid.kernel.scheduler import FairScheduler
from aigrid.kernel.tools import Tool, ToolRegistry
from aigrid.kernel.triggers import TriggerService
from aigrid.learn.datasets import DatasetBuilder
from aigrid.learn.evals import EvalService
from aigrid.learn.experience import ExperienceMemory
from aigrid.learn.feedback import FeedbackService
from aigrid.learn.judges import CompilerJudge, EntryJudge, Judge, ToolsJudge, plan_writer
from aigrid.learn.lessons import Teacher, call_recall, plan_recall, spec_recall
from aigrid.learn.loop import SelfTraining
from aigrid.learn.models import LearnedModels, SuiteModels
from aigrid.learn.recorder import CompileRecorder, EntryRecorder, ProcessRecorder
from aigrid.learn.sampling import Sampler
from aigrid.learn.tool_choice import LearnedToolChoice
from aigrid.store.accounts import ADMIN_TENANT, AccountStore, Principal
from aigrid.store.agents import AgentStore
from aigrid.store.cluster import ClusterStore, Membership
from aigrid.store.config_versions import PROVIDERS, read_versions
from aigrid.store.db import StoreCalls, WalCheckpointer, make_engine, migrate, sqlite_url
from aigrid.store.entries import EntryStore
from aigrid.store.evals import EvalStore
from aigrid.store.experience import ExperienceStore
from aigrid.store.feedback import FeedbackStore
from aigrid.store.inbox import InboxStore
from aigrid.store.learned import LearnedStore
from aigrid.store.ledger import (
    InterruptedSweep,
    Ledger,
    LedgerUnavailable,
    recover_interrupted,
    replay_journal,
)
from aigrid.store.memory import MemoryStore
from aigrid.store.payers import PayerStore
from aigrid.store.process_claims import ProcessClaims
from aigrid.store.processes import ProcessStore
from aigrid.store.providers import ProviderStore
from aigrid.store.quota import QuotaStore
from aigrid.store.shares import process_usage
from aigrid.store.traces import TraceStore
from aigrid.store.triggers import TriggerStore
from aigrid.store.usage import agent_spent
from aigrid.web import console

log = logging.getLogger(__name__)
ADMIN_KEY_FILE = "admin_key"
JOURNAL_DIR = "journal"


def admin_key(data_dir: Path) -> str:
    """The admin key: from AIGRID_ADMIN_KEY, else the one stored in the data dir, else a new one."""
    from_env = os.environ.get("AIGRID_ADMIN_KEY")
    if from_env:
        return from_env
    path = data_dir / ADMIN_KEY_FILE
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    key = "sk-aigrid-admin-" + secrets.token_urlsafe(24)
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(key + "\n")
    return key


def _error_response(exc: APIError) -> Response:
    return Response(exc.to_json(), status_code=exc.status, media_type="application/json", headers=exc.headers)


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return _error_response(exc)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    first = exc.errors()[0].get("loc", ()) if exc.errors() else ()
    param = ".".join(str(p) for p in first if p != "body") or None
    return _error_response(APIError(400, "Invalid request: " + "; ".join(problems), param=param))


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    return _error_response(APIError(exc.status_code, str(exc.detail), code=code, headers=headers))


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route takes on the request's path (Starlette's 405 names only the first
    route's, and FastAPI makes a route per method): each asked of the routes as they match."""
    # A 405 raised inside a mount (the console's files) sees the mount's root path; the routes
    # match against the app's.
    scope = {
        **request.scope,
        "root_path": request.scope.get("app_root_path", request.scope.get("root_path", "")),
    }
    return [
        method
        for method in _METHODS
        if any(_takes(route, {**scope, "method": method}) for route in request.app.router.routes)
    ]


def _takes(route: BaseRoute, scope: Scope) -> bool:
    """Whether ``route`` answers the scope's method on its path; a mounted app of its own is static
    files, which answer GET and HEAD (a mount matches its paths whatever the method)."""
    if isinstance(route, Mount) and not route.routes and scope["method"] not in ("GET", "HEAD"):
        return False
    return route.matches(scope)[0] == Match.FULL


async def _on_ledger_behind(request: Request, exc: Exception) -> Response:
    return _error_response(
        APIError(
            503,
            f"Usage figures are not available right now: {exc}. Try again shortly.",
            type="api_error",
            code="ledger_unavailable",
            headers=retry_after(5),
        )
    )


async def _on_crash(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _error_response(internal_error())


async def metrics(request: Request) -> Response:
    """GET /metrics in Prometheus format (admin key)."""
    state = state_of(request)
    state.keyring.require_admin(request)
    return Response(generate_latest(state.grid.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _load(router: Router) -> dict[str, int]:
    """What /admin/cluster shows of this node's load, sent with each lease renewal."""
    return {
        "pid": os.getpid(),
        "requests_in_flight": sum(d.in_flight for d in router.deployments()),
    }


@dataclass
class _Store:
    engine: Engine
    accounts: AccountStore
    keyring: KeyRing
    admission: Admission
    membership: Membership
    sync: ConfigSync


def _membership(engine: Engine, config: ServerConfig, data_dir: Path) -> Membership:
    """This server's node; without a configured name, the host and the data directory name it,
    so that a server restarted on the same data knows its earlier epochs as its own."""
    cluster = config.cluster
    name = cluster.node or f"{socket.gethostname()}:{data_dir.resolve()}"
    return Membership(
        ClusterStore(engine), name, lease_s=cluster.lease_s, renew_s=cluster.renew_s, address=cluster.address
    )


def _leases(engine: Engine, config: ServerConfig, membership: Membership) -> Leases | None:
    """Quota leases where servers may share the database (see docs/cluster.md); None for a lone server."""
    cluster = config.cluster
    if cluster.quota == "off" or (cluster.quota == "auto" and engine.dialect.name != "postgresql"):
        return None
    store = QuotaStore(engine, strict=cluster.strict_budgets, window_s=cluster.rate_window_s)
    leases = Leases(
        store,
        membership.current,
        membership.holds,
        fraction=cluster.grant_fraction,
        wait_s=cluster.acquire_wait_s,
    )
    membership.on_new_epoch(leases.new_epoch)
    return leases


def _open_store(config: ServerConfig, data_dir: Path) -> _Store:
    """Migrate the database, close what a killed server left open, and load accounts and limits."""
    key = admin_key(data_dir)
    engine = make_engine(config.database_url or sqlite_url(data_dir))
    migrate(engine)
    replayed = replay_journal(engine, data_dir / JOURNAL_DIR)
    if replayed:
        log.warning("applied %d ledger operation(s) the last server journaled but did not store", replayed)
    # Joining comes first: recovery leaves alone the rows of every owner holding a live lease,
    # which after this includes no earlier run of this server.
    membership = _membership(engine, config, data_dir)
    owner = membership.join()
    recovered = recover_interrupted(engine, owner)
    if recovered:
        log.warning("recorded %d request(s) cut off by a stopped server as interrupted", recovered)
    accounts = AccountStore(engine)
    admin_tenant = accounts.ensure_tenant(ADMIN_TENANT)
    keyring = KeyRing(key, Principal(admin_tenant, ADMIN_TENANT, None, is_admin=True))
    # Read before what they count: a change committed meanwhile shows as moved at the first poll.
    versions = read_versions(engine)
    keyring.load(accounts.active_keys())
    admission = Admission(leases=_leases(engine, config, membership))
    for tenant_id, kind, period, limit, spent in accounts.all_budgets():
        admission.set_budget(tenant_id, kind, period, limit, spent)
    for tenant_id, rpm, tpm in accounts.all_rate_limits():
        admission.set_rate_limits(tenant_id, rpm, tpm)
    sync = ConfigSync(engine, accounts, keyring, admission, config.cluster.sync_s, versions)
    return _Store(engine, accounts, keyring, admission, membership, sync)


def _kernel(grid: Grid, store: _Store, config: ServerConfig, data_dir: Path) -> KernelParts:
    """The kernel of a server: its processes' model calls go through ``grid`` in-process."""
    engine = store.engine
    agents, processes = AgentStore(engine), ProcessStore(engine)
    tools = ToolRegistry()
    model = GridModelClient(grid, TenantNames(store.accounts.tenant_names))
    spent = functools.partial(agent_spent, engine)
    settings = config.kernel
    names = store.accounts.tenant_names()
    # Weights name tenants; one not created yet gets its weight once it exists and the server restarts.
    weights = {tid: settings.weights[name] for tid, name in names.items() if name in settings.weights}
    scheduler = FairScheduler(tenant_cap=settings.tenant_cap, aging_s=settings.aging_s, weights=weights)
    runner = Runner(model, processes, agents, tools, spent)
    owner = store.membership.current
    lease_s = config.cluster.lease_s
    # Processes are owned by this node's epoch: every poll (renew_s) claims those whose owner's lease
    # ended, and the fair shares follow what tenants used on every server.
    kernel = Kernel(
        runner,
        processes,
        agents,
        scheduler,
        workers=settings.workers,
        owner=owner,
        claims=ProcessClaims(engine),
        poll_s=config.cluster.renew_s,
        usage=functools.partial(process_usage, engine),
    )
    inbox = Inbox(InboxStore(engine), agents, processes, owner=owner, sweep_s=lease_s)
    kernel.add_end_listener(inbox.result)
    tools.add_all(SystemCalls(MemoryStore(engine), inbox, processes, kernel).tools())
    kept = ProviderStore(engine)
    payers = PayerStore(engine)
    providers = ProviderManager(tools, kept, store.accounts.tenant_id, list(config.tools), payers.refusal)
    triggers = TriggerService(TriggerStore(engine), kernel)
    calls = StoreCalls(engine)
    memory = _memory(grid, model, engine, calls, config)
    traces = TraceStore(engine)
    examples = config.learn.examples
    specs = spec_recall(memory, examples)
    tool_choice = LearnedToolChoice(memory)
    roles = ModelRoles(
        {
            "planner": settings.planner_model,
            "compiler": settings.compiler_model,
            "agents": settings.agent_model,
        }
    )
    compiler = Compiler(
        model.json_writer(lambda: roles.model("compiler")), lambda: roles.model("agents"), specs, tool_choice
    )
    services = ServiceRegistry(providers, kept)
    plans = plan_recall(memory, examples)
    planner = Planner(
        model.json_writer(lambda: roles.model("planner"), "planner", PLAN_MAX_TOKENS),
        plans,
        model.json_writer(lambda: roles.model("planner"), "planner", PLAN_MAX_TOKENS, REDRAW_TEMPERATURE),
    )
    entries_store = EntryStore(engine)
    recorder = EntryRecorder(traces, memory, calls, settings.planner_model)
    entries = EntryService(
        entries_store, services, tools, planner, calls, payers.refusal, observer=recorder, owner=owner
    )
    store.membership.on_new_epoch(entries.new_epoch)
    kernel.add_end_listener(ProcessRecorder(traces, processes, tools, calls).ended)

    def builtins(tenant_id: int) -> list[Tool]:
        return [r.tool for r in tools.visible(tenant_id) if r.provider is None]

    compiler_judge = CompilerJudge(
        lambda m: model.json_writer(m, "eval"), builtins, settings.agent_model, specs, tool_choice
    )
    judges: dict[str, Judge] = {
        "entry": EntryJudge(entries.catalog, plan_writer(model.json_writer), plans),
        "compiler": compiler_judge,
        "tools": ToolsJudge(model.ask, call_recall(memory, examples)),
    }
    defaults = SuiteModels(roles)
    feedback = FeedbackService(
        FeedbackStore(engine), engine, calls, entries_store, processes, agents, memory, entries.catalog
    )
    evals = EvalService(EvalStore(engine), calls, judges, defaults)
    learned = LearnedStore(engine)
    models = LearnedModels(
        learned, calls, data_dir / "learn" / "models", grid.router, config.breaker, roles, evals
    )
    datasets = DatasetBuilder(traces, FeedbackStore(engine), learned, calls, data_dir / "learn" / "datasets")
    sampler = Sampler(entries.catalog, lambda m, t: model.json_writer(m, "learn", PLAN_MAX_TOKENS, t), plans)
    learn = LearnParts(
        traces,
        feedback,
        memory,
        evals,
        Teacher(memory, entries.catalog, lambda tenant_id: {t.name for t in compiler_judge.tools(tenant_id)}),
        CompileRecorder(traces, memory, calls, settings.compiler_model),
        datasets,
        models,
        SelfTraining(sampler, datasets, models, roles, traces, calls),
    )
    return KernelParts(
        kernel, tools, providers, agents, processes, triggers, inbox, compiler, services, entries, learn
    )


def _memory(
    grid: Grid, model: GridModelClient, engine: Engine, calls: StoreCalls, config: ServerConfig
) -> ExperienceMemory:
    """The experience memory: embeddings from the grid's own model, lookups timed in /metrics."""
    learning = config.learn
    embed = model.embedder(learning.embedding_model, "experience") if learning.embedding_model else None
    lookups = Histogram(
        "aigrid_experience_lookup_seconds",
        "Time to find the worked examples for one plan or compile (embedding and search)",
        registry=grid.metrics.registry,
        buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
    )
    return ExperienceMemory(
        ExperienceStore(engine, learning.max_examples),
        calls,
        embed,
        learning.embedding_model or None,
        enabled=learning.experience,
        observe=lookups.observe,
    )


def create_app(
    config: ServerConfig,
    data_dir: Path,
    *,
    starting: Callable[[Backend], AbstractContextManager[object]] = nullcontext,
) -> HotPath:
    """A server for a config and a data directory; everything starts in its lifespan.

    Each backend starts inside ``starting(backend)``: how `aigrid serve` shows models loading.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await asyncio.to_thread(_open_store, config, data_dir)
        routes = build_routes(config.models, config)
        router = Router(routes)
        membership = store.membership
        ledger = Ledger(
            store.engine, data_dir / JOURNAL_DIR, sync=config.ledger.sync, owner=membership.current
        )
        ledger.start()
        membership.stats = functools.partial(_load, router)
        await membership.start()
        # Every renewal period: a dead server's streams are marked within its lease plus one renewal.
        sweep = InterruptedSweep(store.engine, membership.current, config.cluster.renew_s)
        sweep.start()
        store.sync.start()
        checkpointer = WalCheckpointer(store.engine)
        checkpointer.start()
        grid = Grid(
            router, store.admission, ledger, Metrics(lambda: [d.health() for d in router.deployments()])
        )
        started: list[Backend] = []
        parts: KernelParts | None = None
        try:
            for d in router.deployments():
                with starting(d.backend):
                    await d.backend.start()
                started.append(d.backend)
            parts = await asyncio.to_thread(_kernel, grid, store, config, data_dir)
            await parts.providers.start()
            store.sync.follow(PROVIDERS, parts.providers.sync)
            await parts.kernel.start()
            await parts.inbox.start()
            await parts.triggers.start()
            # Only entries whose owner's lease ended: a live peer's sagas are its own.
            await parts.entries.recover()
            parts.entries.start_recovery(config.cluster.lease_s)
            await parts.learn.evals.recover()
            await parts.learn.models.start()
            parts.learn.loop.schedule(config.learn, store.accounts.tenant_id(ADMIN_TENANT))
            app.state.aigrid = AppState(
                **{f.name: getattr(parts, f.name) for f in fields(KernelParts)},
                config=config,
                data_dir=data_dir,
                engine=store.engine,
                accounts=store.accounts,
                keyring=store.keyring,
                grid=grid,
                membership=membership,
                config_sync=store.sync,
            )
            # What start-up built lives as long as the server; a full collection that walked it
            # again each time paused every request for tens of milliseconds.
            gc.freeze()
            yield
        finally:
            if parts is not None:
                await parts.learn.loop.close()
                await parts.learn.models.close()
                await parts.learn.evals.close()
                await parts.entries.close()
                await parts.triggers.aclose()
                await parts.kernel.close()
                await parts.inbox.aclose()
                await parts.providers.close()
            for backend in started:
                await backend.close()
            await store.sync.aclose()
            if store.admission.leases is not None:
                # Before the lease ends: what this server did not use returns to the pool at once.
                await store.admission.leases.aclose()
            await sweep.aclose()
            await ledger.aclose()
            await membership.aclose()
            await checkpointer.aclose()
            store.engine.dispose()

    app = FastAPI(title="aigrid", version="0.1.0", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.router.routes.extend(openai_routes.routes)
    app.router.routes.extend(account_routes.routes)
    app.router.routes.extend(compose_routes.routes)
    app.router.routes.extend(service_routes.routes)
    app.router.routes.extend(entry_routes.routes)
    app.router.routes.extend(learn_routes.routes)
    app.router.routes.extend(learn_model_routes.routes)
    app.router.routes.extend(agent_routes.routes)
    app.router.routes.extend(tool_routes.routes)
    app.router.routes.append(HTTPRoute("/metrics", metrics, methods=["GET"]))
    app.include_router(admin_routes.router)
    app.include_router(payer_routes.router)
    app.include_router(cluster_routes.router)
    app.router.routes.extend(console.routes)
    app.add_exception_handler(APIError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(LedgerUnavailable, _on_ledger_behind)
    app.add_exception_handler(Exception, _on_crash)
    install_doc(app, api_doc.OPERATIONS)
    return HotPath(app)
