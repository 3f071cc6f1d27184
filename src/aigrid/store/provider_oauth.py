"""Tool providers' OAuth clients and tokens, per provider; blocking. Secrets: never logged or listed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from aigrid.clock import now_us
from aigrid.store.schema import ToolProviderOAuthRow


@dataclass(frozen=True, slots=True)
class OAuthRecord:
    """What is kept for one provider: its client and tokens as JSON, their expiry, the pinned issuer."""

    provider: str
    client: str | None
    registered: bool
    tokens: str | None
    expires_at_us: int | None
    issuer: str | None
    updated_at_us: int

    def __repr__(self) -> str:
        # The client holds a secret and the tokens are bearer credentials: a repr never shows them.
        return f"OAuthRecord(provider={self.provider!r}, authorised={self.tokens is not None})"


def _record(row: ToolProviderOAuthRow) -> OAuthRecord:
    return OAuthRecord(
        row.provider, row.client, row.registered, row.tokens, row.expires_at_us, row.issuer, row.updated_at_us
    )


class ProviderOAuthStore:
    """Reads and writes the ``tool_provider_oauth`` rows (one per provider)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def get(self, provider: str) -> OAuthRecord | None:
        """The provider's record, if it has one."""
        with Session(self._engine) as session:
            row = session.get(ToolProviderOAuthRow, provider)
            return None if row is None else _record(row)

    def all(self) -> dict[str, OAuthRecord]:
        """Every provider's record, by provider name."""
        with Session(self._engine) as session:
            return {r.provider: _record(r) for r in session.scalars(select(ToolProviderOAuthRow))}

    def set_client(self, provider: str, client: str, registered: bool) -> None:
        """Keep a client (given or registered); a different client drops the other one's tokens and issuer."""

        def change(row: ToolProviderOAuthRow) -> None:
            if row.client != client:
                row.tokens, row.expires_at_us, row.issuer = None, None, None
            row.client, row.registered = client, registered

        self._change(provider, change)

    def set_tokens(self, provider: str, tokens: str, expires_at_us: int | None) -> None:
        """Keep the provider's newest tokens."""

        def change(row: ToolProviderOAuthRow) -> None:
            row.tokens, row.expires_at_us = tokens, expires_at_us

        self._change(provider, change)

    def drop_tokens(self, provider: str) -> None:
        """Forget the provider's tokens, keeping its client."""

        def change(row: ToolProviderOAuthRow) -> None:
            row.tokens, row.expires_at_us = None, None

        self._change(provider, change)

    def pin_issuer(self, provider: str, issuer: str) -> None:
        """Remember the authorization server the provider's tokens come from."""

        def change(row: ToolProviderOAuthRow) -> None:
            row.issuer = issuer

        self._change(provider, change)

    def forget(self, provider: str) -> None:
        """Drop the provider's client and tokens."""
        with Session(self._engine) as session, session.begin():
            session.execute(delete(ToolProviderOAuthRow).where(ToolProviderOAuthRow.provider == provider))

    def _change(self, provider: str, change: Callable[[ToolProviderOAuthRow], None]) -> None:
        with Session(self._engine) as session, session.begin():
            row = session.get(ToolProviderOAuthRow, provider)
            if row is None:
                row = ToolProviderOAuthRow(provider=provider, registered=False, updated_at_us=now_us())
                session.add(row)
            change(row)
            row.updated_at_us = now_us()
