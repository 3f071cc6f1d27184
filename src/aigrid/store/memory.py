"""Agents' memory across processes, found again by full-text search; blocking calls.

A memory belongs to a tenant and either one agent or the whole tenant (agent ``""``). Search uses
SQLite's FTS5 (bm25 ranking) or PostgreSQL's text search (ts_rank), any word matching.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import Engine, bindparam, delete, select, text
from sqlalchemy.orm import Session

from aigrid.clock import now_us
from aigrid.store.accounts import AccountError
from aigrid.store.schema import Memory

TENANT_WIDE = ""
MAX_MEMORY_CHARS = 20_000
_WORD = re.compile(r"\w+", re.UNICODE)
_MAX_TERMS = 32


@dataclass(frozen=True, slots=True)
class MemoryRecord:
    """One memory: whose (agent, or ``""`` for the whole tenant), its key if any, its text."""

    id: int
    tenant_id: int
    agent: str
    key: str | None
    text: str
    created_at_us: int
    updated_at_us: int


def _record(row: Memory) -> MemoryRecord:
    return MemoryRecord(
        row.id, row.tenant_id, row.agent, row.key, row.text, row.created_at_us, row.updated_at_us
    )


def _terms(query: str) -> list[str]:
    """The words of a query, so that no search syntax from a model or a user reaches the index."""
    return list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))[:_MAX_TERMS]


class MemoryStore:
    """Writes, reads, searches and forgets memories, one tenant at a time."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"

    def write(self, tenant_id: int, agent: str, body: str, key: str | None = None) -> MemoryRecord:
        """Remember ``body``; with a key, replace what was remembered under that key."""
        if not body.strip():
            raise AccountError(400, "A memory needs some text.")
        if len(body) > MAX_MEMORY_CHARS:
            raise AccountError(400, f"A memory holds at most {MAX_MEMORY_CHARS} characters.")
        if key is not None and not 0 < len(key) <= 200:
            raise AccountError(400, "A memory key has 1 to 200 characters.")
        now = now_us()
        with Session(self._engine) as session, session.begin():
            row = None
            if key is not None:
                row = session.scalar(
                    select(Memory)
                    .where(Memory.tenant_id == tenant_id, Memory.agent == agent, Memory.key == key)
                    .with_for_update()
                )
            if row is None:
                row = Memory(
                    tenant_id=tenant_id, agent=agent, key=key, text=body, created_at_us=now, updated_at_us=now
                )
                session.add(row)
            else:
                row.text = body
                row.updated_at_us = now
            session.flush()
            return _record(row)

    def read(self, tenant_id: int, agents: Collection[str], key: str) -> MemoryRecord | None:
        """The memory under ``key`` of the first of ``agents`` that has one."""
        with Session(self._engine) as session:
            rows = {
                r.agent: r
                for r in session.scalars(
                    select(Memory).where(
                        Memory.tenant_id == tenant_id, Memory.agent.in_(list(agents)), Memory.key == key
                    )
                )
            }
        found = next((rows[a] for a in agents if a in rows), None)
        return None if found is None else _record(found)

    def search(
        self, tenant_id: int, query: str, agents: Collection[str] | None = None, limit: int = 10
    ) -> list[MemoryRecord]:
        """The memories that best match any word of ``query``, best first; of some agents if asked."""
        terms = _terms(query)
        if not terms:
            return []
        where = "m.tenant_id = :tenant" + (" AND m.agent IN :agents" if agents is not None else "")
        if self._postgres:
            sql = (
                "SELECT m.id FROM memories m, to_tsquery('english', :q) q "
                f"WHERE m.search @@ q AND {where} ORDER BY ts_rank(m.search, q) DESC, m.id DESC LIMIT :n"
            )
            match = " | ".join(terms)
        else:
            sql = (
                "SELECT m.id FROM memories_fts f JOIN memories m ON m.id = f.rowid "
                f"WHERE memories_fts MATCH :q AND {where} ORDER BY bm25(memories_fts), m.id DESC LIMIT :n"
            )
            match = " OR ".join(f'"{t}"' for t in terms)
        statement = text(sql)
        params: dict[str, object] = {"q": match, "tenant": tenant_id, "n": limit}
        if agents is not None:
            statement = statement.bindparams(bindparam("agents", expanding=True))
            params["agents"] = list(agents) or [None]
        with Session(self._engine) as session:
            ids = [row[0] for row in session.execute(statement, params)]
            if not ids:
                return []
            rows = {r.id: r for r in session.scalars(select(Memory).where(Memory.id.in_(ids)))}
        return [_record(rows[i]) for i in ids if i in rows]

    def recent(self, tenant_id: int, agent: str | None = None, limit: int = 50) -> list[MemoryRecord]:
        """A tenant's memories, newest first; of one agent (``""`` for tenant-wide) if asked."""
        query = select(Memory).where(Memory.tenant_id == tenant_id)
        if agent is not None:
            query = query.where(Memory.agent == agent)
        query = query.order_by(Memory.updated_at_us.desc(), Memory.id.desc()).limit(limit)
        with Session(self._engine) as session:
            return [_record(r) for r in session.scalars(query)]

    def forget(self, tenant_id: int, memory_id: int) -> None:
        """Delete a memory; 404 if the tenant has none of that id."""
        with Session(self._engine) as session, session.begin():
            result = session.execute(
                delete(Memory).where(Memory.id == memory_id, Memory.tenant_id == tenant_id)
            )
        if not getattr(result, "rowcount", 0):
            raise AccountError(404, f"No memory {memory_id}.")
