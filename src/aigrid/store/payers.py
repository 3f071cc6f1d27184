"""Payer identity: the end users each tenant acts for (whose wallet pays, whose account is asked).

A tenant always acts for itself (a user named like the tenant, the key's owner) and for the users
an admin adds; the admin tenant, the operator, acts for anyone. A shared service is asked about a
user only by a tenant that acts for that user.
"""

from __future__ import annotations

import re

from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aigrid.clock import now_us
from aigrid.store.accounts import ADMIN_TENANT, AccountError
from aigrid.store.schema import Tenant, TenantUser

USER = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")


def checked_user(user: str) -> str:
    """``user`` if it is a user name; a 400 otherwise."""
    if not USER.match(user):
        raise AccountError(400, f"'{user}' is not a user name (1 to 128 letters, digits and _.@- only).")
    return user


class PayerStore:
    """Reads and writes the users tenants act for; every method is blocking (call it off the loop)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def _tenant_id(self, session: Session, tenant: str) -> int:
        found = session.scalar(select(Tenant.id).where(Tenant.name == tenant))
        if found is None:
            raise AccountError(404, f"No tenant named '{tenant}'.")
        return found

    def users(self, tenant: str) -> list[str]:
        """The users added to ``tenant``, by name (the tenant itself is not listed); 404 unknown."""
        with Session(self._engine) as session:
            tenant_id = self._tenant_id(session, tenant)
            return list(
                session.scalars(
                    select(TenantUser.user).where(TenantUser.tenant_id == tenant_id).order_by(TenantUser.user)
                )
            )

    def add(self, tenant: str, user: str) -> bool:
        """Let ``tenant`` act for ``user``; False if it already did. 404 unknown tenant, 400 bad name."""
        checked_user(user)
        try:
            with Session(self._engine) as session, session.begin():
                tenant_id = self._tenant_id(session, tenant)
                if session.get(TenantUser, (tenant_id, user)) is not None:
                    return False
                session.add(TenantUser(tenant_id=tenant_id, user=user, created_at_us=now_us()))
        except IntegrityError:  # added at the same moment by another request
            return False
        return True

    def remove(self, tenant: str, user: str) -> None:
        """Stop ``tenant`` acting for ``user``; 404 if it did not."""
        with Session(self._engine) as session, session.begin():
            tenant_id = self._tenant_id(session, tenant)
            gone = session.execute(
                delete(TenantUser).where(TenantUser.tenant_id == tenant_id, TenantUser.user == user)
            )
            if not getattr(gone, "rowcount", 0):
                raise AccountError(404, f"Tenant '{tenant}' does not act for a user named '{user}'.")

    def refusal(self, tenant_id: int, user: str) -> str | None:
        """None if the tenant may pay as (or ask a shared service about) ``user``; else why not, and
        how an admin changes that."""
        with Session(self._engine) as session:
            name = session.scalar(select(Tenant.name).where(Tenant.id == tenant_id))
            if name is None:
                return f"No tenant with id {tenant_id}."
            if name in (ADMIN_TENANT, user) or session.get(TenantUser, (tenant_id, user)) is not None:
                return None
        return (
            f"Tenant '{name}' does not act for user '{user}': an admin lets it with "
            f"`aigrid tenant users add {name} {user}` (PUT /admin/tenants/{name}/users/{user})."
        )
