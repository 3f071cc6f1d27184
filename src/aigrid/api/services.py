"""HTTP routes of the service registry: ``GET /v1/services``, and ``/admin/services`` to add or remove."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aigrid.api.agents import json_object, validated
from aigrid.api.openai import json_response
from aigrid.api.scope import call_store_async, tenant_scope
from aigrid.api.state import state_of
from aigrid.config import ProviderConfig
from aigrid.entry.manifest import Manifest
from aigrid.entry.registry import Service
from aigrid.errors import bad_request

_MAX_SERVICE_BYTES = 256 << 10


def _service_object(service: Service) -> dict[str, Any]:
    status = service.status
    return {
        "object": "service",
        "name": service.name,
        "tenant": service.tenant,
        "category": service.manifest.category,
        "description": service.manifest.description,
        "source": None if status is None else status.config.describe(),
        "status": "down" if status is None or status.error else "up",
        "error": None if status is None else status.error,
        "operations": [
            {"name": op, "tool": f"{service.name}.{op}", **spec.model_dump()}
            for op, spec in service.manifest.operations.items()
        ],
    }


async def list_services(request: Request) -> Response:
    """GET /v1/services: the services the caller may use (the grid's and its tenant's own; the
    admin's: every one, or those ``?tenant=`` may use), each with its manifest and whether it is up."""
    state = state_of(request)
    principal = state.keyring.authenticate(request)
    named = request.query_params.get("tenant")
    await tenant_scope(state, principal, named, "services")
    services = await state.services.services(named if principal.is_admin else principal.tenant)
    return json_response({"object": "list", "data": [_service_object(s) for s in services]})


async def add_service(request: Request) -> Response:
    """POST /admin/services: a provider (MCP or OpenAPI, as for tools) plus its ``manifest``."""
    state = state_of(request)
    state.keyring.require_admin(request)
    raw = await request.body()
    if len(raw) > _MAX_SERVICE_BYTES:
        raise bad_request(f"A service may be described in at most {_MAX_SERVICE_BYTES} bytes.")
    body = json_object(raw, "The body must be a JSON object: a provider with a 'manifest'.")
    manifest = body.pop("manifest", None)
    if not isinstance(manifest, dict):
        raise bad_request(
            "'manifest' must be an object: category, description, operations.", param="manifest"
        )
    config = validated(ProviderConfig, body, "service")
    service = await call_store_async(state.services.add(config, validated(Manifest, manifest, "manifest")))
    return json_response(_service_object(service), status=201)


async def remove_service(request: Request) -> Response:
    """DELETE /admin/services/{name}: close a service and forget it."""
    state = state_of(request)
    state.keyring.require_admin(request)
    name = request.path_params["name"]
    await call_store_async(state.services.remove(name))
    return json_response({"object": "service", "name": name, "deleted": True})


routes = [
    Route("/v1/services", list_services, methods=["GET"]),
    Route("/admin/services", add_service, methods=["POST"]),
    Route("/admin/services/{name}", remove_service, methods=["DELETE"]),
]
