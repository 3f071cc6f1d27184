"""A test double: an OAuth authorization server and an MCP server it protects, in one uvicorn app.

The MCP side is the SDK's own resource server (``MCPServer`` with ``AuthSettings`` and a token
verifier: the 401 with ``WWW-Authenticate: Bearer resource_metadata=...``, and the RFC 9728
metadata). The authorization side publishes RFC 8414 metadata built by the SDK's
``build_metadata``; its authorization endpoint (which agrees at once and redirects), token
endpoint (client_credentials, authorization_code with PKCE, refresh_token) and registration
endpoint (RFC 7591) are written here: the SDK's handlers want a full provider and serve no
client_credentials grant. Everything it did is recorded for the tests to check.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import unquote, urlencode

import uvicorn
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.routes import build_metadata
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.server.mcpserver import MCPServer
from pydantic import AnyHttpUrl
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

SCOPE = "tools"


@dataclass
class _Refresh:
    client_id: str
    scope: str


@dataclass
class _Code:
    client_id: str
    challenge: str
    redirect_uri: str
    scope: str


@dataclass
class OAuthProtectedMcpServer:
    """The double's state: its clients, live tokens, and the grants and registrations it served."""

    port: int
    clients: dict[str, str] = field(default_factory=dict)  # client id -> secret
    expires_in: int = 3600
    refresh_tokens: bool = False  # whether client_credentials answers carry a refresh token
    refuse_refresh: bool = False
    registration: bool = True
    tokens: dict[str, AccessToken] = field(default_factory=dict)
    refreshes: dict[str, _Refresh] = field(default_factory=dict)
    grants: list[str] = field(default_factory=list)  # each token request's grant type, in order
    registered: list[dict[str, object]] = field(default_factory=list)
    refusals: int = 0  # MCP requests answered 401
    codes: dict[str, _Code] = field(default_factory=dict)
    deny: bool = False  # the person at the browser says no

    @property
    def base(self) -> str:
        """The authorization server's issuer: the server's origin."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The MCP endpoint."""
        return f"{self.base}/mcp"

    def revoke_all(self) -> None:
        """Forget every access token (a client still holding one gets 401)."""
        self.tokens.clear()

    async def authorize(self, request: Request) -> Response:
        """GET /authorize: the person agrees at once; the browser goes back with a code (or a refusal)."""
        params = request.query_params
        if params.get("client_id") not in self.clients or params.get("code_challenge_method") != "S256":
            return JSONResponse({"error": "invalid_request"}, 400)
        back = {"state": params.get("state", ""), "iss": str(AnyHttpUrl(self.base))}  # as its metadata says
        if self.deny:
            back["error"] = "access_denied"
        else:
            code = secrets.token_urlsafe(12)
            self.codes[code] = _Code(
                params["client_id"],
                params["code_challenge"],
                params["redirect_uri"],
                params.get("scope", SCOPE),
            )
            back["code"] = code
        return RedirectResponse(f"{params['redirect_uri']}?{urlencode(back)}", 302)

    def _issue(self, client_id: str, scope: str, refresh: bool = False) -> dict[str, object]:
        token = secrets.token_urlsafe(16)
        expires_at = int(time.time()) + self.expires_in
        self.tokens[token] = AccessToken(
            token=token, client_id=client_id, scopes=scope.split(), expires_at=expires_at
        )
        answer: dict[str, object] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": scope,
        }
        if self.refresh_tokens or refresh:
            kept = secrets.token_urlsafe(16)
            self.refreshes[kept] = _Refresh(client_id, scope)
            answer["refresh_token"] = kept
        return answer

    def _client(self, request: Request, form: dict[str, str]) -> str | None:
        """The authenticated client's id (client_secret_basic or client_secret_post), or None."""
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            pair = base64.b64decode(header[6:]).decode()
            client_id, _, secret = pair.partition(":")
            client_id, secret = unquote(client_id), unquote(secret)
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        known = self.clients.get(client_id)
        return client_id if known is not None and secrets.compare_digest(known, secret) else None

    async def token(self, request: Request) -> Response:
        """POST /token: client_credentials, authorization_code (PKCE) and refresh_token grants."""
        form = {k: str(v) for k, v in (await request.form()).items()}
        grant = form.get("grant_type", "")
        self.grants.append(grant)
        client_id = self._client(request, form)
        if client_id is None:
            return JSONResponse({"error": "invalid_client", "error_description": "unknown client"}, 401)
        if grant == "client_credentials":
            scope = form.get("scope", SCOPE)
            if not set(scope.split()) <= {SCOPE}:
                return JSONResponse({"error": "invalid_scope"}, 400)
            return JSONResponse(self._issue(client_id, scope), headers={"Cache-Control": "no-store"})
        if grant == "authorization_code":
            kept_code = self.codes.pop(form.get("code", ""), None)
            digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
            challenge = base64.urlsafe_b64encode(digest).decode().rstrip("=")
            if kept_code is None or kept_code.client_id != client_id or kept_code.challenge != challenge:
                return JSONResponse({"error": "invalid_grant"}, 400)
            return JSONResponse(self._issue(client_id, kept_code.scope, refresh=True))
        if grant == "refresh_token":
            kept = self.refreshes.pop(form.get("refresh_token", ""), None)
            if self.refuse_refresh or kept is None or kept.client_id != client_id:
                return JSONResponse({"error": "invalid_grant", "error_description": "refresh refused"}, 400)
            return JSONResponse(self._issue(client_id, kept.scope, refresh=True))
        return JSONResponse({"error": "unsupported_grant_type"}, 400)

    async def register(self, request: Request) -> Response:
        """POST /register: dynamic client registration (RFC 7591) for client_credentials clients."""
        if not self.registration:
            return JSONResponse({"error": "not found"}, 404)
        metadata = json.loads(await request.body())
        self.registered.append(metadata)
        client_id, secret = f"dyn-{secrets.token_hex(4)}", secrets.token_urlsafe(16)
        self.clients[client_id] = secret
        answer = {**metadata, "client_id": client_id, "client_secret": secret}
        answer["client_id_issued_at"] = int(time.time())
        return JSONResponse(answer, 201)

    async def metadata(self, request: Request) -> Response:
        """GET /.well-known/oauth-authorization-server (RFC 8414), from the SDK's builder."""
        built = build_metadata(
            AnyHttpUrl(self.base),
            None,
            ClientRegistrationOptions(enabled=self.registration, valid_scopes=[SCOPE]),
            RevocationOptions(),
        )
        built.grant_types_supported = ["client_credentials", "authorization_code", "refresh_token"]
        return JSONResponse(built.model_dump(mode="json", exclude_none=True))

    async def verify_token(self, token: str) -> AccessToken | None:
        """The MCP server's token verifier: tokens this server issued and has not forgotten."""
        found = self.tokens.get(token)
        if found is None:
            self.refusals += 1
        return found


def oauth_protected_mcp_app(double: OAuthProtectedMcpServer) -> MCPServer:
    """The protected MCP server (tools ``add`` and ``whoami``) with the authorization server's routes."""
    auth = AuthSettings(
        issuer_url=AnyHttpUrl(double.base),
        resource_server_url=AnyHttpUrl(double.url),
        required_scopes=[SCOPE],
        validate_token_resource=False,
    )
    server = MCPServer("protected", token_verifier=double, auth=auth)

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def whoami() -> str:
        """The OAuth client the call's token was issued to."""
        token = get_access_token()
        return "nobody" if token is None else token.client_id

    server.custom_route("/token", methods=["POST"])(double.token)
    server.custom_route("/register", methods=["POST"])(double.register)
    server.custom_route("/authorize", methods=["GET"])(double.authorize)
    server.custom_route("/.well-known/oauth-authorization-server", methods=["GET"])(double.metadata)
    return server


class Running:
    """A uvicorn server in a thread, serving the double until stopped."""

    def __init__(self, double: OAuthProtectedMcpServer) -> None:
        app = oauth_protected_mcp_app(double).streamable_http_app()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=double.port, log_level="warning", timeout_graceful_shutdown=1
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the OAuth-protected MCP server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self.server.should_exit = True
        self.thread.join(10)
