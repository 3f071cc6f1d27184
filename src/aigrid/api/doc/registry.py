"""Operations described beside the routes that serve them, and the document they are merged into."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from aigrid.api.doc.common import Error

Auth = Literal["key", "admin", "public", "webhook"]
Model = type[BaseModel]
# A model, one of several models, a raw JSON schema, or none.
Shape = Model | tuple[Model, ...] | dict[str, Any] | None
JSON = "application/json"

_REF = "#/components/schemas/{model}"
_ERRORS = {
    400: "The request is malformed or breaks a rule of the operation.",
    401: "No API key, a malformed Authorization header, or an unknown key.",
    403: "The key may not do this (a tenant key reaching another tenant's things, or an admin operation).",
    404: "The object, tenant or model named does not exist (or is not the caller's).",
    409: "The request conflicts with the object's state.",
    410: "The object is gone.",
    413: "The request body is too large.",
    422: "The request was understood but could not be carried out.",
    429: "A rate limit or budget is spent (see Retry-After when given).",
    502: "No upstream deployment could answer.",
    503: "The server or every deployment is busy or restarting, or usage figures are behind; retry.",
}
# Before OpenAPI 3.2 an event stream's schema describes each event (its fields as SSE parses them).
_SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {"type": "string", "description": "A chunk as JSON, an error object as JSON, or [DONE]."},
        "event": {"type": "string"},
        "id": {"type": "string"},
    },
}
_SECURITY: dict[Auth, list[dict[str, list[str]]]] = {
    "key": [{"TenantKey": []}, {"AdminKey": []}],
    "admin": [{"AdminKey": []}],
    "public": [],
    "webhook": [{"WebhookSecret": []}, {"TenantKey": []}, {"AdminKey": []}],
}
_AUTH_ERRORS: dict[Auth, tuple[int, ...]] = {
    "key": (400, 401, 403, 404),
    "admin": (400, 401, 403, 404),
    "public": (),
    "webhook": (400, 401, 403, 404),
}
SECURITY_SCHEMES = {
    "TenantKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "A tenant's API key (`sk-aigrid-...`, from `POST /admin/keys`): reaches its own.",
    },
    "AdminKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "The admin key (`sk-aigrid-admin-...`, shown by `aigrid serve`): every tenant.",
    },
    "WebhookSecret": {
        "type": "http",
        "scheme": "bearer",
        "description": "An agent's webhook secret (`whs-...`), shown once when the agent is saved.",
    },
}


@dataclass(frozen=True)
class Reply:
    """One answer of an operation: a model (or raw schema) under a media type."""

    model: Shape
    description: str = "OK"
    media: str = JSON
    headers: dict[str, str] = field(default_factory=dict)  # name: description
    stream: bool = False  # also answers with server-sent events (a request's ``stream: true``)


@dataclass(frozen=True)
class Operation:
    """A route as the document shows it: what it takes, what it answers and who may call it."""

    method: str
    path: str
    summary: str
    tag: str
    auth: Auth
    replies: dict[int, Reply | Model]
    body: Shape = None
    body_media: str = JSON
    body_required: bool = True
    query: Model | None = None
    path_schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    description: str | None = None

    @property
    def operation_id(self) -> str:
        """A stable name made of the method and the path."""
        return self.method.lower() + re.sub(r"[^A-Za-z0-9]+", "_", self.path).rstrip("_")


def _replies(op: Operation) -> dict[int, Reply]:
    return {status: r if isinstance(r, Reply) else Reply(r) for status, r in op.replies.items()}


def _each(shape: Shape) -> tuple[Model, ...]:
    if isinstance(shape, type):
        return (shape,)
    return shape if isinstance(shape, tuple) else ()


def _models(ops: Iterable[Operation]) -> list[tuple[Model, Literal["validation", "serialization"]]]:
    found: dict[Model, Literal["validation", "serialization"]] = {Error: "serialization"}
    for op in ops:
        for model in _each(op.body):
            found[model] = "validation"
        for reply in _replies(op).values():
            for model in _each(reply.model):
                found.setdefault(model, "serialization")
    return list(found.items())


def _schema(shape: Shape, refs: Callable[[Model], dict[str, Any]]) -> dict[str, Any] | None:
    if isinstance(shape, type):
        return refs(shape)
    if isinstance(shape, tuple):
        return {"anyOf": [refs(m) for m in shape]}
    return shape


def _content(schema: dict[str, Any] | None, media: str) -> dict[str, Any]:
    return {} if schema is None else {media: {"schema": schema}}


def _query_parameters(query: Model) -> list[dict[str, Any]]:
    schema = query.model_json_schema(ref_template=_REF)
    required = set(schema.get("required", ()))
    params = []
    for name, found in schema.get("properties", {}).items():
        prop = _not_null({k: v for k, v in found.items() if k not in ("title", "description", "default")})
        description = found.get("description")
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if description:
            param["description"] = description
        params.append(param)
    return params


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query value left out is none; one sent is text, never JSON's null."""
    kinds = [k for k in schema.get("anyOf", ()) if k != {"type": "null"}]
    if len(kinds) == 1 and len(schema["anyOf"]) == 2:
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        return {**rest, **kinds[0]}
    return schema


def _path_parameters(op: Operation) -> list[dict[str, Any]]:
    names = re.findall(r"{([^}:]+)(?::[^}]+)?}", op.path)
    return [
        {"name": n, "in": "path", "required": True, "schema": op.path_schemas.get(n, {"type": "string"})}
        for n in names
    ]


def _responses(op: Operation, refs: Callable[[Model], dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status, reply in sorted(_replies(op).items()):
        content = _content(_schema(reply.model, refs), reply.media)
        if reply.stream:
            content["text/event-stream"] = {"schema": _SSE_EVENT}
        answer: dict[str, Any] = {"description": reply.description}
        if content:
            answer["content"] = content
        if reply.headers:
            answer["headers"] = {
                name: {"description": text, "schema": {"type": "string"}}
                for name, text in reply.headers.items()
            }
        out[str(status)] = answer
    for status in sorted({*_AUTH_ERRORS[op.auth], *op.errors}):
        answer = {"description": _ERRORS[status], "content": _content(refs(Error), JSON)}
        if status in (429, 503):
            answer["headers"] = {
                "Retry-After": {"description": "Seconds to wait", "schema": {"type": "string"}}
            }
        out[str(status)] = answer
    return out


def _operation(
    op: Operation, refs: Callable[[Model], dict[str, Any]], known: dict[str, Any]
) -> dict[str, Any]:
    doc: dict[str, Any] = dict(known)
    doc.update(summary=op.summary, tags=[op.tag], operationId=known.get("operationId", op.operation_id))
    if op.description:
        doc["description"] = op.description
    if "parameters" not in known:
        params = _path_parameters(op) + (_query_parameters(op.query) if op.query else [])
        if params:
            doc["parameters"] = params
    if op.body is not None and "requestBody" not in known:
        content = _content(_schema(op.body, refs), op.body_media)
        doc["requestBody"] = {"required": op.body_required, "content": content}
    doc["responses"] = _responses(op, refs)
    doc["security"] = _SECURITY[op.auth]
    return doc


def document(app: FastAPI, ops: list[Operation]) -> dict[str, Any]:
    """FastAPI's document of ``app`` with every operation in ``ops`` described (added or completed)."""
    from fastapi.openapi.utils import get_openapi

    base = get_openapi(title=app.title, version=app.version, routes=app.routes, openapi_version="3.1.0")
    keys, defs = models_json_schema(_models(ops), ref_template=_REF)
    schemas = {**base.get("components", {}).get("schemas", {}), **defs.get("$defs", {})}
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)

    def refs(model: Model) -> dict[str, Any]:
        for mode in ("serialization", "validation"):
            if (model, mode) in keys:
                return dict(keys[(model, mode)])
        raise KeyError(model)

    paths: dict[str, Any] = base.get("paths", {})
    for op in ops:
        item = paths.setdefault(re.sub(r"{(\w+):\w+}", r"{\1}", op.path), {})
        item[op.method.lower()] = _operation(op, refs, item.get(op.method.lower(), {}))
    return {
        **base,
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES},
    }


def install(app: FastAPI, ops: list[Operation]) -> None:
    """Serve the merged document at /openapi.json (and so at /docs), built once on first use."""
    built: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not built:
            built.update(document(app, ops))
        return built

    app.openapi = openapi  # type: ignore[method-assign]
