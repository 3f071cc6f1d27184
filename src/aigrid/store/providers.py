"""Tool providers added at run time, kept so that a restarted server opens them again; blocking."""

from __future__ import annotations

from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aigrid.clock import now_us
from aigrid.config import ProviderConfig
from aigrid.store.accounts import AccountError
from aigrid.store.config_versions import PROVIDERS, bump
from aigrid.store.provider_oauth import ProviderOAuthStore
from aigrid.store.schema import ToolProviderOAuthRow, ToolProviderRow

# A client secret is kept with the provider's OAuth client (tool_provider_oauth), not in its config.
_SECRETS_KEPT_APART = {"oauth": {"client_secret"}}


class ProviderStore:
    """Saves, lists and deletes run-time tool providers by name."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.oauth = ProviderOAuthStore(engine)

    def save(self, config: ProviderConfig, manifest: str | None = None) -> None:
        """Keep a new provider (a service: with its manifest); 409 if one of that name is kept already."""
        row = ToolProviderRow(
            name=config.name,
            config=config.model_dump_json(exclude=_SECRETS_KEPT_APART),
            manifest=manifest,
            created_at_us=now_us(),
        )
        try:
            with Session(self._engine) as session, session.begin():
                session.add(row)
                session.flush()  # a name taken fails here, before the counter moves
                bump(session, PROVIDERS)
        except IntegrityError as exc:
            raise AccountError(409, f"A tool provider named '{config.name}' exists already.") from exc

    def all(self) -> list[ProviderConfig]:
        """Every kept provider, by name."""
        with Session(self._engine) as session:
            rows = session.scalars(select(ToolProviderRow).order_by(ToolProviderRow.name)).all()
            return [ProviderConfig.model_validate_json(r.config) for r in rows]

    def manifests(self) -> dict[str, str]:
        """The manifests of the kept providers that are services, by name."""
        with Session(self._engine) as session:
            rows = session.execute(
                select(ToolProviderRow.name, ToolProviderRow.manifest).where(
                    ToolProviderRow.manifest.is_not(None)
                )
            ).all()
            return {name: manifest for name, manifest in rows if manifest is not None}

    def services(self) -> list[tuple[ProviderConfig, str]]:
        """The kept providers that are services, each with its manifest, by name."""
        with Session(self._engine) as session:
            rows = session.execute(
                select(ToolProviderRow.config, ToolProviderRow.manifest)
                .where(ToolProviderRow.manifest.is_not(None))
                .order_by(ToolProviderRow.name)
            ).all()
            return [
                (ProviderConfig.model_validate_json(config), manifest)
                for config, manifest in rows
                if manifest is not None
            ]

    def delete(self, name: str) -> bool:
        """Forget a provider, with its OAuth client and tokens; whether there was one."""
        with Session(self._engine) as session, session.begin():
            result = session.execute(delete(ToolProviderRow).where(ToolProviderRow.name == name))
            session.execute(delete(ToolProviderOAuthRow).where(ToolProviderOAuthRow.provider == name))
            removed = bool(getattr(result, "rowcount", 0))
            if removed:
                bump(session, PROVIDERS)
        return removed
