"""OpenAPI 3 services as tool providers: each operation becomes a tool that makes the HTTP request."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

import httpx
import yaml

from aigrid.config import ProviderConfig
from aigrid.kernel.providers.base import ProviderError, tool_name
from aigrid.kernel.tools import CallContext, Handler, Tool

logger = logging.getLogger(__name__)

METHODS = ("get", "post", "put", "patch", "delete")
MAX_DESCRIPTION = 1000
MAX_ERROR_BODY = 2000
# A recursive schema is cut where it repeats, and a long $ref chain or deep nesting here, to "any value",
# so that a tool's schema stays finite.
MAX_REF_DEPTH = 32
MAX_NESTING = 256
# Header parameters the OpenAPI specification says to ignore: the client sets these itself.
_IGNORED_HEADERS = frozenset({"accept", "content-type", "authorization"})
_VARIABLE = re.compile(r"\{([^{}]+)\}")


class OpenApiHttpError(Exception):
    """A non-2xx answer from the service, with its status and the start of its body."""


class _Resolver:
    """Expands local ``$ref`` pointers (``#/...``) in a spec, cutting cycles and excessive depth."""

    def __init__(self, spec: dict[str, Any], label: str) -> None:
        self._spec = spec
        self._label = label

    def resolve(self, node: Any, refs: tuple[str, ...] = (), depth: int = 0) -> Any:
        """A copy of ``node`` with every local ``$ref`` replaced by what it points to."""
        if depth > MAX_NESTING:
            return {}  # YAML aliases can make a document that nests forever
        if isinstance(node, list):
            return [self.resolve(item, refs, depth + 1) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str):
            if ref in refs or len(refs) >= MAX_REF_DEPTH:
                return {}  # a recursive schema: the repeated part accepts anything
            target = self.resolve(self._lookup(ref), (*refs, ref), depth + 1)
            siblings = {k: self.resolve(v, refs, depth + 1) for k, v in node.items() if k != "$ref"}
            # OpenAPI 3.1 lets a $ref carry siblings (a description, say); they refine the target.
            return {**target, **siblings} if isinstance(target, dict) else target
        return {key: self.resolve(value, refs, depth + 1) for key, value in node.items()}

    def follow(self, node: Any) -> Any:
        """``node`` itself, or what its top-level ``$ref`` points to (a shallow look-up)."""
        for _ in range(MAX_REF_DEPTH):
            if not (isinstance(node, dict) and isinstance(node.get("$ref"), str)):
                return node
            node = self._lookup(node["$ref"])
        return {}

    def _lookup(self, ref: str) -> Any:
        if not ref.startswith("#"):
            logger.warning("%s: external $ref %s is not followed", self._label, ref)
            return {}
        node: Any = self._spec
        for raw in ref[1:].split("/")[1:]:
            part = unquote(raw).replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                logger.warning("%s: $ref %s points to nothing; it is taken as any value", self._label, ref)
                return {}
        return node


@dataclass(frozen=True, slots=True)
class _Param:
    """One operation parameter: where it goes, its name on the wire, whether it is JSON-encoded."""

    location: str
    wire_name: str
    json_encoded: bool = False


@dataclass(slots=True)
class _Operation:
    """What a tool needs to make its request."""

    method: str
    path: str
    params: dict[str, _Param] = field(default_factory=dict)
    body: str | None = None
    required: list[str] = field(default_factory=list)


def _description(summary: str, description: str) -> str:
    text = summary if not description or description == summary else f"{summary}\n\n{description}".strip()
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 1] + "…"


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


class OpenApiProvider:
    """Tools from one OpenAPI 3 service: one per operation, calling the service over HTTP."""

    def __init__(self, config: ProviderConfig) -> None:
        if config.kind != "openapi" or not config.spec:
            raise ValueError("OpenApiProvider needs an 'openapi' provider with a spec")
        self.config = config
        self._client: httpx.AsyncClient | None = None
        self._label = f"openapi provider '{config.name}'"

    async def open(self) -> list[Tool]:
        """Load the spec, and return a tool for each operation; the HTTP client opens here."""
        spec, spec_url = await self._load()
        if "swagger" in spec:
            raise ProviderError(
                f"{self._label}: {self.config.spec} is Swagger {spec.get('swagger')}; only OpenAPI 3 is "
                "supported (convert it, e.g. with swagger2openapi)"
            )
        if not str(spec.get("openapi", "")).startswith("3."):
            raise ProviderError(f"{self._label}: {self.config.spec} is not an OpenAPI 3 document")
        base = self._base_url(spec, spec_url)
        resolver = _Resolver(spec, self._label)
        tools: list[Tool] = []
        seen: set[str] = set()
        for path, raw_item in (spec.get("paths") or {}).items():
            item = resolver.follow(raw_item)
            if not isinstance(item, dict):
                continue
            # Only what a tool needs is expanded: responses can be large and are never sent to the model.
            shared = resolver.resolve(item.get("parameters")) or []
            for method in METHODS:
                operation = item.get(method)
                if not isinstance(operation, dict):
                    continue
                operation = {
                    **operation,
                    "parameters": resolver.resolve(operation.get("parameters")) or [],
                    "requestBody": resolver.resolve(operation.get("requestBody")),
                }
                tool = self._tool(base, str(path), method, operation, shared)
                if tool.name in seen:
                    logger.warning(
                        "%s: skipping %s %s: the name %s is taken", self._label, method, path, tool.name
                    )
                    continue
                seen.add(tool.name)
                tools.append(tool)
        if self._client is not None:
            await self._client.aclose()
        self._client = httpx.AsyncClient(headers=dict(self.config.headers), timeout=self.config.timeout_s)
        return tools

    async def close(self) -> None:
        """Close the HTTP client; safe to call twice or after a failed open."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _load(self) -> tuple[dict[str, Any], str | None]:
        """The parsed spec, and its URL when it came from one (relative server URLs resolve against it)."""
        source = str(self.config.spec)
        spec_url: str | None = None
        try:
            if urlsplit(source).scheme in ("http", "https"):
                spec_url = source
                async with httpx.AsyncClient(timeout=self.config.timeout_s, follow_redirects=True) as client:
                    response = await client.get(source, headers=self._spec_headers(source))
                if response.status_code >= 300:
                    raise ProviderError(f"{self._label}: fetching {source} gave HTTP {response.status_code}")
                text = response.text
            else:
                text = await asyncio.to_thread(_read_file, source)
        except (OSError, httpx.HTTPError) as exc:
            raise ProviderError(f"{self._label}: could not load spec {source}: {exc}") from exc
        try:
            spec = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise ProviderError(f"{self._label}: spec {source} is neither JSON nor YAML: {exc}") from exc
        if not isinstance(spec, dict):
            raise ProviderError(f"{self._label}: spec {source} is not an OpenAPI document")
        return spec, spec_url

    def _spec_headers(self, spec_url: str) -> dict[str, str]:
        # The configured headers (credentials, usually) go only to the service itself, not to a spec host.
        if self.config.base_url is None:
            return dict(self.config.headers)
        same = urlsplit(spec_url)[:2] == urlsplit(self.config.base_url)[:2]
        return dict(self.config.headers) if same else {}

    def _base_url(self, spec: dict[str, Any], spec_url: str | None) -> str:
        if self.config.base_url:
            return self.config.base_url.rstrip("/")
        servers = spec.get("servers")
        server = servers[0] if isinstance(servers, list) and servers and isinstance(servers[0], dict) else {}
        url = server.get("url")
        if not isinstance(url, str) or not url:
            raise ProviderError(f"{self._label}: the spec names no servers; set base_url")
        variables = server.get("variables") or {}

        def default(match: re.Match[str]) -> str:
            value = variables.get(match.group(1), {})
            return str(value.get("default", "")) if isinstance(value, dict) else ""

        url = _VARIABLE.sub(default, url)
        if not urlsplit(url).scheme:
            if spec_url is None:
                raise ProviderError(
                    f"{self._label}: the server URL {url!r} is relative to a file; set base_url"
                )
            url = urljoin(spec_url, url)
        return url.rstrip("/")

    def _tool(self, base: str, path: str, method: str, operation: dict[str, Any], shared: list[Any]) -> Tool:
        # Operation parameters override path-item ones of the same name and location.
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        for param in [*shared, *(operation.get("parameters") or [])]:
            if isinstance(param, dict) and "name" in param and "in" in param:
                merged[(str(param["in"]), str(param["name"]))] = param
        op = _Operation(method=method, path=path)
        properties: dict[str, Any] = {}
        for (location, name), param in merged.items():
            if location not in ("path", "query", "header") or (
                location == "header" and name.lower() in _IGNORED_HEADERS
            ):
                continue
            schema, json_encoded = param.get("schema"), False
            if not isinstance(schema, dict) and isinstance(param.get("content"), dict):
                media: Any = next(iter(param["content"].values()), {})
                schema, json_encoded = (media.get("schema") if isinstance(media, dict) else None), True
            prop = dict(schema) if isinstance(schema, dict) else {}
            if param.get("description"):
                prop["description"] = str(param["description"])
            key = name if name not in properties else f"{location}_{name}"
            properties[key] = prop
            op.params[key] = _Param(location, name, json_encoded)
            if location == "path" or param.get("required"):
                op.required.append(key)
        for name in _VARIABLE.findall(path):
            if ("path", name) not in merged:  # undeclared, but the URL cannot be built without it
                key = name if name not in properties else f"path_{name}"
                properties[key] = {"type": "string"}
                op.params[key] = _Param("path", name)
                op.required.append(key)
        body = operation.get("requestBody")
        if isinstance(body, dict):
            content = body.get("content") or {}
            media = next((m for ct, m in content.items() if _is_json(ct)), None)
            if isinstance(media, dict):
                op.body = "body" if "body" not in properties else "request_body"
                properties[op.body] = dict(media.get("schema") or {})
                if body.get("description") and "description" not in properties[op.body]:
                    properties[op.body]["description"] = str(body["description"])
                if body.get("required"):
                    op.required.append(op.body)
            elif content:
                logger.info("%s: %s %s takes %s, not JSON: no body", self._label, method, path, list(content))
        name = operation.get("operationId") or f"{method}_{path.strip('/')}"
        description = _description(
            str(operation.get("summary") or ""), str(operation.get("description") or "")
        )
        parameters: dict[str, Any] = {"type": "object", "properties": properties}
        if op.required:
            parameters["required"] = op.required
        return Tool(
            name=tool_name(self.config.name, str(name)),
            description=description or f"{method.upper()} {path}",
            handler=self._handler(base, op),
            parameters=parameters,
            timeout_s=self.config.timeout_s,
        )

    def _handler(self, base: str, op: _Operation) -> Handler:
        async def handler(arguments: dict[str, Any], context: CallContext) -> Any:
            client = self._client
            if client is None:
                raise RuntimeError(f"{self._label} is closed")
            missing = [key for key in op.required if arguments.get(key) is None]
            if missing:
                raise ValueError(f"missing required argument(s): {', '.join(missing)}")
            path = op.path
            query: list[tuple[str, str]] = []
            headers: dict[str, str] = {}
            for key, param in op.params.items():
                value = arguments.get(key)
                if value is None:
                    continue
                if param.location == "path":
                    path = path.replace(f"{{{param.wire_name}}}", quote(_scalar(value, param), safe=""))
                elif param.location == "query":
                    query.extend(_query_pairs(param, value))
                else:
                    headers[param.wire_name] = _scalar(value, param)
            if op.method != "get":
                headers["Idempotency-Key"] = context.idempotency_key
            body = arguments.get(op.body) if op.body else None
            url = base + path
            try:
                response = await client.request(
                    op.method.upper(), url, params=tuple(query), headers=headers, json=body
                )
            except httpx.TimeoutException:
                raise
            except httpx.HTTPError as exc:
                raise OpenApiHttpError(
                    f"{op.method.upper()} {url} failed: {type(exc).__name__}: {exc}"
                ) from exc
            return _answer(response)

        return handler


def _read_file(source: str) -> str:
    return Path(source).expanduser().read_text(encoding="utf-8")


def _scalar(value: Any, param: _Param) -> str:
    if isinstance(value, str) and not param.json_encoded:
        return value
    if isinstance(value, bool) and not param.json_encoded:
        return "true" if value else "false"
    if isinstance(value, int | float) and not param.json_encoded:
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _query_pairs(param: _Param, value: Any) -> list[tuple[str, str]]:
    # OpenAPI's default query style is form, exploded: a list repeats its key; an object spreads its keys.
    if isinstance(value, list) and not param.json_encoded:
        return [(param.wire_name, _scalar(v, param)) for v in value]
    if isinstance(value, dict) and not param.json_encoded:
        return [(str(k), _scalar(v, param)) for k, v in value.items()]
    return [(param.wire_name, _scalar(value, param))]


def _answer(response: httpx.Response) -> Any:
    if not response.is_success:
        raise OpenApiHttpError(f"HTTP {response.status_code}: {response.text[:MAX_ERROR_BODY]}")
    if not response.content:
        return f"HTTP {response.status_code} (no content)"
    if _is_json(response.headers.get("content-type", "")):
        try:
            return response.json()
        except ValueError:
            pass  # a service that labels text as JSON: the text is still the answer
    return response.text
