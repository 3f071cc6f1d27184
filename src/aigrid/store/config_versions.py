"""Change counters for configuration that every server of a cluster holds in memory.

Each change to keys, budgets, rate limits or run-time tool providers raises its kind's counter in
the change's own transaction; each server polls the counters (one small SELECT) and reloads a kind
whose counter moved. The counters are only compared for movement, never interpreted.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, Table, insert, select, update
from sqlalchemy.orm import Session

from aigrid.store.schema import ConfigVersion

KEYS = "keys"
BUDGETS = "budgets"
LIMITS = "limits"
# Run-time tool providers, services among them.
PROVIDERS = "providers"
KINDS = (KEYS, BUDGETS, LIMITS, PROVIDERS)
_TABLE: Table = ConfigVersion.__table__  # type: ignore[assignment]


def bump(session: Session | Connection, kind: str) -> None:
    """Raise ``kind``'s counter inside the caller's transaction, so it commits with the change."""
    raised = session.execute(update(_TABLE).where(_TABLE.c.kind == kind).values(version=_TABLE.c.version + 1))
    # The migration seeds every kind; a kind added later starts on its first change.
    if raised.rowcount == 0:  # type: ignore[attr-defined]
        session.execute(insert(_TABLE).values(kind=kind, version=1))


def read_versions(engine: Engine) -> dict[str, int]:
    """Every kind's counter now."""
    with engine.connect() as conn:
        return {kind: int(version) for kind, version in conn.execute(select(_TABLE.c.kind, _TABLE.c.version))}
