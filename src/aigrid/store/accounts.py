"""Tenants, API keys, budgets and rate limits: the account records behind admission."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aigrid.clock import now_us, period_start_us
from aigrid.store.config_versions import BUDGETS, KEYS, LIMITS, bump
from aigrid.store.schema import ApiKey, Budget, LedgerEntry, RateLimit, Tenant

ADMIN_TENANT = "admin"
KEY_PREFIX = "sk-aigrid-"


class AccountError(Exception):
    """A request about accounts that cannot be honoured, with the HTTP status it maps to."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def digest(secret: str) -> str:
    """The stored form of a key: its SHA-256 (keys are random, so no salt is needed)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a tenant and the key used (no key id for the admin key)."""

    tenant_id: int
    tenant: str
    key_id: str | None
    is_admin: bool = False


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just created; the only moment its secret exists outside the client."""

    id: str
    secret: str
    tenant_id: int
    tenant: str
    prefix: str
    name: str | None
    created_at_us: int


def _tenant_view(t: Tenant) -> dict[str, object]:
    return {"id": t.id, "name": t.name, "created_at_us": t.created_at_us}


class AccountStore:
    """Reads and writes account records; every method is blocking (call it off the event loop)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def _tenant(self, session: Session, name: str) -> Tenant:
        tenant = session.scalar(select(Tenant).where(Tenant.name == name))
        if tenant is None:
            raise AccountError(404, f"No tenant named '{name}'.")
        return tenant

    def ensure_tenant(self, name: str) -> int:
        """The id of a tenant, created if missing."""
        with Session(self._engine) as session, session.begin():
            tenant = session.scalar(select(Tenant).where(Tenant.name == name))
            if tenant is None:
                tenant = Tenant(name=name, created_at_us=now_us())
                session.add(tenant)
                session.flush()
            return tenant.id

    def create_tenant(self, name: str) -> dict[str, object]:
        """A new tenant; 409 if the name is taken."""
        try:
            with Session(self._engine) as session, session.begin():
                tenant = Tenant(name=name, created_at_us=now_us())
                session.add(tenant)
                session.flush()
                return _tenant_view(tenant)
        except IntegrityError as exc:
            raise AccountError(409, f"A tenant named '{name}' already exists.") from exc

    def list_tenants(self) -> list[dict[str, object]]:
        """Every tenant."""
        with Session(self._engine) as session:
            return [_tenant_view(t) for t in session.scalars(select(Tenant).order_by(Tenant.id))]

    def create_key(self, tenant: str, name: str | None = None) -> NewKey:
        """A new key for a tenant; the secret is returned once and only its digest is kept."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = "key_" + uuid.uuid4().hex[:16]
        created = now_us()
        with Session(self._engine) as session, session.begin():
            owner = self._tenant(session, tenant)
            owner_id = owner.id
            session.add(
                ApiKey(
                    id=key_id,
                    tenant_id=owner.id,
                    digest=digest(secret),
                    prefix=secret[: len(KEY_PREFIX) + 4],
                    name=name,
                    created_at_us=created,
                )
            )
            bump(session, KEYS)
        return NewKey(key_id, secret, owner_id, tenant, secret[: len(KEY_PREFIX) + 4], name, created)

    def list_keys(self, tenant: str | None = None) -> list[dict[str, object]]:
        """Keys (never their secrets), optionally of one tenant."""
        with Session(self._engine) as session:
            stmt = select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id)
            if tenant is not None:
                stmt = stmt.where(ApiKey.tenant_id == self._tenant(session, tenant).id)
            return [
                {
                    "id": k.id,
                    "tenant": tname,
                    "prefix": k.prefix,
                    "name": k.name,
                    "created_at_us": k.created_at_us,
                    "revoked": k.revoked_at_us is not None,
                }
                for k, tname in session.execute(stmt.order_by(ApiKey.created_at_us))
            ]

    def revoke_key(self, key_id: str) -> str:
        """Revoke a key; returns its digest so the caller can forget it."""
        with Session(self._engine) as session, session.begin():
            key = session.get(ApiKey, key_id)
            if key is None:
                raise AccountError(404, f"No key with id '{key_id}'.")
            if key.revoked_at_us is None:
                key.revoked_at_us = now_us()
                bump(session, KEYS)
            return key.digest

    def active_keys(self) -> list[tuple[str, Principal]]:
        """Every usable key as (digest, principal), for the in-memory key ring."""
        with Session(self._engine) as session:
            rows = session.execute(
                select(ApiKey.digest, ApiKey.id, Tenant.id, Tenant.name)
                .join(Tenant, Tenant.id == ApiKey.tenant_id)
                .where(ApiKey.revoked_at_us.is_(None))
            )
            return [(d, Principal(tid, tname, kid)) for d, kid, tid, tname in rows]

    @staticmethod
    def _budget(session: Session, tenant_id: int, kind: str, period: str) -> Budget | None:
        return session.scalar(
            select(Budget).where(Budget.tenant_id == tenant_id, Budget.kind == kind, Budget.period == period)
        )

    def set_budget(self, tenant: str, kind: str, period: str, limit: int) -> tuple[int, int]:
        """Add or replace a budget; returns (tenant id, amount spent in the current period)."""
        with Session(self._engine) as session, session.begin():
            owner = self._tenant(session, tenant)
            found = self._budget(session, owner.id, kind, period)
            if found is None:
                session.add(Budget(tenant_id=owner.id, kind=kind, period=period, limit_value=limit))
            else:
                found.limit_value = limit
            bump(session, BUDGETS)
            return owner.id, self._spent(session, owner.id, kind, period)

    def remove_budget(self, tenant: str, kind: str, period: str) -> int:
        """Delete a budget; returns the tenant id."""
        with Session(self._engine) as session, session.begin():
            owner = self._tenant(session, tenant)
            found = self._budget(session, owner.id, kind, period)
            if found is None:
                raise AccountError(404, f"Tenant '{tenant}' has no {period} {kind} budget.")
            session.delete(found)
            bump(session, BUDGETS)
            return owner.id

    def all_budgets(self) -> list[tuple[int, str, str, int, int]]:
        """Every budget as (tenant id, kind, period, limit, spent this period)."""
        with Session(self._engine) as session:
            budgets = list(session.scalars(select(Budget)))
            return [
                (
                    b.tenant_id,
                    b.kind,
                    b.period,
                    b.limit_value,
                    self._spent(session, b.tenant_id, b.kind, b.period),
                )
                for b in budgets
            ]

    def _spent(self, session: Session, tenant_id: int, kind: str, period: str) -> int:
        column = (
            LedgerEntry.prompt_tokens + LedgerEntry.completion_tokens
            if kind == "tokens"
            else LedgerEntry.cost_micro
        )
        since = period_start_us(period, now_us())
        total = session.scalar(
            select(func.coalesce(func.sum(column), 0)).where(
                LedgerEntry.tenant_id == tenant_id, LedgerEntry.created_at_us >= since
            )
        )
        return int(total or 0)

    def set_rate_limits(self, tenant: str, rpm: int | None, tpm: int | None) -> int:
        """Set a tenant's rates (None removes one); returns the tenant id."""
        with Session(self._engine) as session, session.begin():
            owner = self._tenant(session, tenant)
            found = session.get(RateLimit, owner.id)
            if found is None:
                session.add(RateLimit(tenant_id=owner.id, rpm=rpm, tpm=tpm))
            else:
                found.rpm, found.tpm = rpm, tpm
            bump(session, LIMITS)
            return owner.id

    def all_rate_limits(self) -> list[tuple[int, int | None, int | None]]:
        """Every tenant's rates as (tenant id, rpm, tpm)."""
        with Session(self._engine) as session:
            return [(r.tenant_id, r.rpm, r.tpm) for r in session.scalars(select(RateLimit))]

    def tenant_id(self, name: str) -> int:
        """The id of the tenant called ``name``; 404 if there is none."""
        with Session(self._engine) as session:
            found = session.scalar(select(Tenant.id).where(Tenant.name == name))
        if found is None:
            raise AccountError(404, f"No tenant named '{name}'.")
        return found

    def tenant_names(self) -> dict[int, str]:
        """Tenant names by id."""
        with Session(self._engine) as session:
            return {tid: name for tid, name in session.execute(select(Tenant.id, Tenant.name))}
