"""Authentication: API keys checked against an in-memory ring of digests."""

from __future__ import annotations

import hmac

from starlette.requests import HTTPConnection

from aigrid.errors import forbidden, unauthorized
from aigrid.store.accounts import Principal, digest


class KeyRing:
    """Maps key digests to principals, so a request is authenticated without touching the database."""

    def __init__(self, admin_key: str, admin: Principal) -> None:
        self._admin_digest = digest(admin_key)
        self._admin = admin
        self._keys: dict[str, Principal] = {}

    def load(self, keys: list[tuple[str, Principal]]) -> None:
        """Replace the ring with the given (digest, principal) pairs."""
        self._keys = dict(keys)

    def add(self, key_digest: str, principal: Principal) -> None:
        """Accept a new key."""
        self._keys[key_digest] = principal

    def remove(self, key_digest: str) -> None:
        """Stop accepting a revoked key."""
        self._keys.pop(key_digest, None)

    def authenticate(self, conn: HTTPConnection) -> Principal:
        """The caller behind a request's bearer token, or a 401."""
        header = conn.headers.get("authorization")
        return self.authenticate_header(header.encode("latin-1") if header else None)

    def authenticate_header(self, header: bytes | None) -> Principal:
        """The caller behind an ``Authorization`` header value, or a 401."""
        if not header:
            raise unauthorized("Missing API key: send 'Authorization: Bearer <key>'.")
        scheme, _, token = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("Malformed Authorization header: expected 'Bearer <key>'.")
        token_digest = digest(token.strip())
        principal = self._keys.get(token_digest)
        if principal is not None:
            return principal
        if hmac.compare_digest(token_digest, self._admin_digest):
            return self._admin
        raise unauthorized()

    def require_admin(self, conn: HTTPConnection) -> Principal:
        """The admin principal, or a 401/403."""
        principal = self.authenticate(conn)
        if not principal.is_admin:
            raise forbidden("This endpoint needs the admin key.")
        return principal
