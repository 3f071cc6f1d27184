"""People's feedback: kept on what the tenant owns, and judging again what an entry or agent taught.

A rating of -1 on an entry or an agent version turns the examples it taught into failures (the
next plans and compiles no longer see them); +1 on an entry that answered a question keeps its
plan as a success; a correction of an entry's plan is checked against the catalog, like any plan
given to the entry, and kept as a success. Feedback on completions and processes is kept for
training (part 2 of the loop).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from sqlalchemy import Engine

from aigrid.entry.catalog import Catalog
from aigrid.entry.plan import PlanError
from aigrid.entry.planner import checked
from aigrid.learn.experience import ExperienceMemory
from aigrid.store.accounts import AccountError
from aigrid.store.agents import AgentStore
from aigrid.store.db import StoreCalls
from aigrid.store.entries import EntryStore
from aigrid.store.feedback import FEEDBACK_KINDS, FeedbackKind, FeedbackRecord, FeedbackStore, request_owner
from aigrid.store.processes import ProcessStore

MAX_COMMENT = 4000
MAX_CORRECTION = 20_000


class FeedbackService:
    """Takes feedback on a tenant's completions, processes, entries and agent versions."""

    def __init__(
        self,
        store: FeedbackStore,
        engine: Engine,
        calls: StoreCalls,
        entries: EntryStore,
        processes: ProcessStore,
        agents: AgentStore,
        memory: ExperienceMemory,
        catalog: Callable[[int], Awaitable[Catalog]],
    ) -> None:
        self.store = store
        self._engine = engine
        self._calls = calls
        self._entries = entries
        self._processes = processes
        self._agents = agents
        self._memory = memory
        self._catalog = catalog

    async def give(self, tenant_id: int, body: dict[str, Any]) -> FeedbackRecord:
        """Keep the feedback ``body`` describes; 400 for a bad body, 404 for a target not the tenant's."""
        kind, target, version = _target(body)
        rating = body.get("rating")
        if isinstance(rating, bool) or rating not in (-1, 0, 1):
            raise AccountError(400, "rating must be 1 (good), -1 (bad) or 0.")
        comment = _text(body, "comment", MAX_COMMENT)
        correction = _text(body, "correction", MAX_CORRECTION)
        owner = await self._owned(tenant_id, kind, target, version)
        if kind == "agent":
            target = f"{target}@{owner}"
        if kind == "entry":
            await self._judge_entry(tenant_id, target, rating, correction)
        elif kind == "agent" and rating == -1:
            await self._memory.rejudge(tenant_id, target, "failure", comment or "a person said it was wrong")
        return await self._calls(self.store.add, tenant_id, kind, target, rating, comment, correction)

    async def _owned(self, tenant_id: int, kind: FeedbackKind, target: str, version: int | None) -> int:
        """404 unless the tenant owns the target; an agent's version (its newest when not given)."""
        if kind == "completion":
            if not target.startswith("req_"):
                raise AccountError(
                    400, "A completion is named by its X-Request-Id header (req_...), which the ledger keeps."
                )
            if await self._calls(request_owner, self._engine, target) != tenant_id:
                raise AccountError(404, f"No completion '{target}'.")
        elif kind == "process":
            await self._calls(self._processes.get, target, tenant_id)
        elif kind == "entry":
            await self._calls(self._entries.get, target, tenant_id)
        else:
            stored = await self._calls(self._agents.get, tenant_id, target, version)
            return stored.version
        return 0

    async def _judge_entry(self, tenant_id: int, entry_id: str, rating: int, correction: str | None) -> None:
        entry = await self._calls(self._entries.get, entry_id, tenant_id)
        if correction is not None:
            try:
                plan = checked(correction, await self._catalog(tenant_id))
            except PlanError as exc:
                raise AccountError(400, f"The correction is not a plan that can run: {exc}.") from exc
            example = plan.model_dump(mode="json", by_alias=True, exclude_defaults=True)
            await self._memory.remember(
                tenant_id, "plan", entry.input, example, "success", f"feedback:{entry_id}"
            )
        if rating == -1:
            await self._memory.rejudge(tenant_id, entry_id, "failure", "a person said it was wrong")
        elif rating == 1 and entry.state == "done" and entry.plan is not None:
            await self._memory.remember(tenant_id, "plan", entry.input, entry.plan, "success", entry_id)


def _target(body: dict[str, Any]) -> tuple[FeedbackKind, str, int | None]:
    named = [k for k in FEEDBACK_KINDS if body.get(k) is not None]
    if len(named) != 1:
        raise AccountError(400, "Name exactly one of 'completion', 'process', 'entry' or 'agent'.")
    kind: FeedbackKind = named[0]  # type: ignore[assignment]
    target = body[kind]
    if not isinstance(target, str) or not 0 < len(target) <= 96:
        raise AccountError(400, f"'{kind}' must be an id of 1 to 96 characters.")
    version = body.get("version")
    if version is not None and (kind != "agent" or isinstance(version, bool) or not isinstance(version, int)):
        raise AccountError(400, "'version' is an agent version's number, and goes only with 'agent'.")
    if isinstance(version, int) and not 1 <= version <= 2**31 - 1:
        raise AccountError(400, "'version' must be between 1 and 2147483647.")
    return kind, target, version


def _text(body: dict[str, Any], name: str, limit: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, (dict, list)) and name == "correction":
        value = orjson.dumps(value).decode()  # a plan given as JSON rather than as text
    if not isinstance(value, str):
        raise AccountError(400, f"'{name}' must be text.")
    if len(value) > limit:
        raise AccountError(400, f"'{name}' holds at most {limit} characters.")
    return value
