"""Agent specs by tenant and name, each change a new version; blocking calls (see ``calls``)."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aigrid.clock import now_us
from aigrid.spec import AgentSpec
from aigrid.store.accounts import AccountError
from aigrid.store.db import DriverConnection, DriverStatement, StoreCalls
from aigrid.store.schema import AgentSpecVersion


@dataclass(frozen=True, slots=True)
class StoredSpec:
    """A spec as stored: which tenant's, which version, since when."""

    tenant_id: int
    version: int
    created_at_us: int
    spec: AgentSpec


# Every process started looks up its agent's newest version, so that runs on the driver.
_NEWEST_VERSION = text("SELECT max(version) FROM agent_specs WHERE tenant_id = :tenant AND name = :name")
_CACHED_VERSIONS = 4096


def _stored(row: AgentSpecVersion) -> StoredSpec:
    return StoredSpec(row.tenant_id, row.version, row.created_at_us, AgentSpec.model_validate_json(row.spec))


class AgentStore:
    """Reads and writes agent specs; a saved spec that equals the newest version adds none."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._driver = DriverConnection(engine)
        self._newest_version = DriverStatement(engine, _NEWEST_VERSION)
        # A stored version never changes: each is read and parsed once.
        self._versions: dict[tuple[int, str, int], StoredSpec] = {}
        self.calls = StoreCalls(engine)

    def save(self, tenant_id: int, spec: AgentSpec) -> tuple[StoredSpec, bool]:
        """Store ``spec`` as the agent's next version; also whether a version was added."""
        body = orjson.dumps(spec.model_dump(mode="json")).decode()
        try:
            with Session(self._engine) as session, session.begin():
                newest = self._newest(session, tenant_id, spec.name)
                if newest is not None and newest.spec == body:
                    return _stored(newest), False
                row = AgentSpecVersion(
                    tenant_id=tenant_id,
                    name=spec.name,
                    version=1 if newest is None else newest.version + 1,
                    spec=body,
                    created_at_us=now_us(),
                )
                session.add(row)
                session.flush()
                return _stored(row), True
        except IntegrityError as exc:  # another writer took the same version number first
            raise AccountError(409, f"Agent '{spec.name}' was changed at the same time; try again.") from exc

    def get(self, tenant_id: int, name: str, version: int | None = None) -> StoredSpec:
        """A version of an agent (the newest by default); 404 if there is none."""
        if version is None:
            with self._driver.cursor() as cursor:
                self._newest_version.run(cursor, {"tenant": tenant_id, "name": name})
                version = cursor.fetchone()[0]
            if version is None:
                raise AccountError(404, f"No agent named '{name}'.")
        key = (tenant_id, name, version)
        stored = self._versions.get(key)
        if stored is None:
            with Session(self._engine) as session:
                row = session.scalar(
                    select(AgentSpecVersion).where(
                        AgentSpecVersion.tenant_id == tenant_id,
                        AgentSpecVersion.name == name,
                        AgentSpecVersion.version == version,
                    )
                )
            if row is None:
                raise AccountError(404, f"No version {version} of agent named '{name}'.")
            stored = _stored(row)
            if len(self._versions) >= _CACHED_VERSIONS:
                self._versions.pop(next(iter(self._versions)))
            self._versions[key] = stored
        return stored

    def cached(self, tenant_id: int, name: str, version: int) -> StoredSpec | None:
        """A version already read, without going to the database (None if it was not)."""
        return self._versions.get((tenant_id, name, version))

    def versions(self, tenant_id: int, name: str) -> list[StoredSpec]:
        """Every version of an agent, oldest first; 404 if it has none."""
        with Session(self._engine) as session:
            rows = session.scalars(
                select(AgentSpecVersion)
                .where(AgentSpecVersion.tenant_id == tenant_id, AgentSpecVersion.name == name)
                .order_by(AgentSpecVersion.version)
            ).all()
        if not rows:
            raise AccountError(404, f"No agent named '{name}'.")
        return [_stored(r) for r in rows]

    def newest(self, tenant_id: int | None = None) -> list[StoredSpec]:
        """The newest version of every agent, of one tenant or of all, by tenant and name."""
        newest = (
            select(
                AgentSpecVersion.tenant_id,
                AgentSpecVersion.name,
                func.max(AgentSpecVersion.version).label("v"),
            )
            .group_by(AgentSpecVersion.tenant_id, AgentSpecVersion.name)
            .subquery()
        )
        query = select(AgentSpecVersion).join(
            newest,
            (AgentSpecVersion.tenant_id == newest.c.tenant_id)
            & (AgentSpecVersion.name == newest.c.name)
            & (AgentSpecVersion.version == newest.c.v),
        )
        if tenant_id is not None:
            query = query.where(AgentSpecVersion.tenant_id == tenant_id)
        with Session(self._engine) as session:
            rows = session.scalars(query.order_by(AgentSpecVersion.tenant_id, AgentSpecVersion.name)).all()
        return [_stored(r) for r in rows]

    @staticmethod
    def _newest(session: Session, tenant_id: int, name: str) -> AgentSpecVersion | None:
        return session.scalar(
            select(AgentSpecVersion)
            .where(AgentSpecVersion.tenant_id == tenant_id, AgentSpecVersion.name == name)
            .order_by(AgentSpecVersion.version.desc())
            .limit(1)
        )
