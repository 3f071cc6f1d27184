"""Taking up processes whose owner is gone: a server claims orphans in batches, by compare-and-set.

A process is owned by a node and an epoch (``processes.owner_node_id``, ``owner_epoch``); the
node's lease in ``cluster_nodes`` is the process's lease, so owning costs no write per process
while the owner lives. A process whose owner's epoch holds no running lease (the node died, was
paused past its lease, or left) is an orphan, and any live server may claim it. An epoch whose
lease ended never runs again, so an orphan stays one until it is claimed, and its old owner's
writes stay refused (see ``ProcessStore``'s owner check).

On PostgreSQL the candidates are locked ``FOR UPDATE SKIP LOCKED``: two claimers never wait on
each other, never get the same process, and a row a step is writing (locked by its UPDATE) is
left for the next round. SQLite serialises writers, so the plain compare-and-set suffices.
Blocking calls (run them off the event loop).
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import Engine, text

from aigrid.clock import now_us
from aigrid.store.cluster import Owner
from aigrid.store.db import DriverConnection, DriverStatement
from aigrid.store.process_records import COLUMNS, FINAL_STATES, STATES, ProcessRecord, record_of
from aigrid.store.processes import now_sql

_OPEN = ", ".join(f"'{s}'" for s in STATES if s not in FINAL_STATES)
# The candidates are picked once, in a CTE (materialised: its locks are taken once, as the queue
# libraries that claim this way do), then moved to the claimer in the same statement.
_CLAIM = (
    "WITH picked AS {materialized}(SELECT p.pid FROM processes p WHERE p.state IN ({open}){one} "
    "AND (p.owner_node_id IS NULL OR NOT EXISTS (SELECT 1 FROM cluster_nodes o "
    "WHERE o.id = p.owner_node_id AND o.epoch = p.owner_epoch AND o.lease_until_us > {now})) "
    "ORDER BY p.created_at_us LIMIT :limit{lock}) "
    "UPDATE processes SET owner_node_id = :node, owner_epoch = :epoch "
    "WHERE pid IN (SELECT pid FROM picked) "
    # The claimer's own lease must run, or a zombie could take work back.
    "AND EXISTS (SELECT 1 FROM cluster_nodes c WHERE c.id = :node AND c.epoch = :epoch "
    "AND c.lease_until_us > {now}) "
    f"RETURNING {COLUMNS}"
)
_OWNED = (
    f"SELECT {COLUMNS} FROM processes WHERE owner_node_id = :node AND owner_epoch = :epoch "
    "AND state IN ({states}) ORDER BY created_at_us"
)


class ProcessClaims:
    """Claims orphaned processes for a server and lists the ones it owns."""

    def __init__(self, engine: Engine) -> None:
        now = now_sql(engine)
        postgres = engine.dialect.name == "postgresql"
        lock = " FOR UPDATE OF p SKIP LOCKED" if postgres else ""
        shape = {"open": _OPEN, "now": now, "lock": lock, "materialized": "MATERIALIZED " if postgres else ""}
        self._claim = DriverStatement(engine, text(_CLAIM.format(one="", **shape)))
        self._claim_one = DriverStatement(engine, text(_CLAIM.format(one=" AND p.pid = :pid", **shape)))
        self._engine = engine
        self._driver = DriverConnection(engine)

    def claim(self, owner: Owner, limit: int = 100) -> list[ProcessRecord]:
        """Up to ``limit`` unfinished orphans, oldest first, now ``owner``'s (none unless it is live)."""
        values = {"node": owner.node_id, "epoch": owner.epoch, "limit": limit, "now": now_us()}
        with self._driver.cursor(write=True) as cursor:
            self._claim.run(cursor, values)
            return sorted((record_of(r) for r in cursor.fetchall()), key=lambda p: p.created_at_us)

    def claim_one(self, pid: str, owner: Owner) -> ProcessRecord | None:
        """The process, now owned by ``owner``, if it was unfinished and orphaned; else None."""
        values = {"node": owner.node_id, "epoch": owner.epoch, "limit": 1, "now": now_us(), "pid": pid}
        with self._driver.cursor(write=True) as cursor:
            self._claim_one.run(cursor, values)
            row = cursor.fetchone()
        return None if row is None else record_of(row)

    def owned(self, owner: Owner, states: Collection[str]) -> list[ProcessRecord]:
        """The processes ``owner`` owns in ``states``, oldest first."""
        if not states:
            return []
        names = {f"s{i}": state for i, state in enumerate(states)}
        query = text(_OWNED.format(states=", ".join(":" + n for n in names)))
        with self._engine.connect() as conn:
            rows = conn.execute(query, {"node": owner.node_id, "epoch": owner.epoch, **names})
            return [record_of(r) for r in rows]
