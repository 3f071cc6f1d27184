"""OpenAPI providers against a real HTTP service, described by a YAML file and by its own /openapi.json."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel
from tests.support import free_port

from aigrid.config import ProviderConfig
from aigrid.kernel.providers.base import ProviderError
from aigrid.kernel.providers.openapi import OpenApiHttpError, OpenApiProvider
from aigrid.kernel.tools import CallContext, Tool, ToolRegistry

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

PETSTORE = Path(__file__).with_name("petstore.yaml")
CTX = CallContext(pid="p1", tenant_id=1, idempotency_key="p1:3")


class Owner(BaseModel):
    name: str
    email: str | None = None


class Pet(BaseModel):
    name: str
    tag: str | None = None
    owner: Owner | None = None
    category: dict[str, Any] | None = None


def service() -> FastAPI:
    """The pet store the specs describe; it answers with what it was sent, for the tests to check."""
    app = FastAPI(servers=[{"url": "/"}])
    pets: dict[int, dict[str, Any]] = {1: {"id": 1, "name": "Rex", "tag": "dog", "owner": {"name": "Ann"}}}

    @app.get("/pets/{pet_id}", operation_id="getPet")
    def get_pet(pet_id: int, verbose: bool = False) -> dict[str, Any]:
        if pet_id not in pets:
            raise HTTPException(404, f"no pet {pet_id}")
        pet = pets[pet_id]
        return pet if verbose else {k: v for k, v in pet.items() if k != "owner"}

    @app.delete("/pets/{pet_id}", status_code=204)
    def delete_pet(pet_id: int) -> Response:
        pets.pop(pet_id, None)
        return Response(status_code=204)

    @app.get("/pets", operation_id="listPets")
    def list_pets(limit: int, tag: str | None = None) -> dict[str, Any]:
        return {"limit": limit, "tag": tag, "names": [p["name"] for p in pets.values()]}

    @app.post("/pets", operation_id="createPet", status_code=201)
    def create_pet(pet: Pet, request: Request) -> dict[str, Any]:
        new = {"id": max(pets, default=0) + 1, **pet.model_dump(exclude_none=True)}
        pets[new["id"]] = new
        return {**new, "idempotency_key": request.headers.get("idempotency-key")}

    @app.get("/echo/{word:path}", operation_id="echo", response_class=PlainTextResponse)
    def echo(word: str, request: Request) -> str:
        return str(request.scope["raw_path"].decode())

    @app.get("/whoami", operation_id="whoami")
    def whoami(request: Request, x_trace: str | None = Header(None)) -> dict[str, Any]:
        return {
            "trace": x_trace,
            "authorization": request.headers.get("authorization"),
            "idempotency_key": request.headers.get("idempotency-key"),
        }

    return app


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(service(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the service did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def config(spec: str | Path, base: str | None = None, **extra: Any) -> ProviderConfig:
    return ProviderConfig(
        name="shop",
        kind="openapi",
        spec=str(spec),
        base_url=base,
        headers={"Authorization": "Bearer tok"},
        timeout_s=10,
        **extra,
    )


@pytest.fixture
async def shop(base_url: str) -> AsyncIterator[dict[str, Tool]]:
    provider = OpenApiProvider(config(PETSTORE, base_url))
    tools = await provider.open()
    yield {t.name: t for t in tools}
    await provider.close()


async def test_operations_become_tools_with_resolved_schemas(shop: dict[str, Tool]) -> None:
    assert set(shop) == {
        "shop.getPet",
        "shop.delete_pets_pet_id",
        "shop.listPets",
        "shop.createPet",
        "shop.echo",
        "shop.whoami",
    }
    get_pet = shop["shop.getPet"]
    assert get_pet.description == "One pet by its id.\n\nThe pet, and with verbose its owner too."
    assert get_pet.parameters == {
        "type": "object",
        "properties": {
            "pet_id": {"type": "integer", "description": "The pet's id."},
            "verbose": {"type": "boolean", "description": "Include the owner."},
        },
        "required": ["pet_id"],
    }
    assert shop["shop.listPets"].parameters["required"] == ["limit"]
    create = shop["shop.createPet"].parameters
    assert create["required"] == ["body"]
    pet = create["properties"]["body"]
    assert pet["required"] == ["name"]
    assert pet["properties"]["owner"]["properties"]["email"] == {"type": "string"}
    # The recursive category is cut where it repeats.
    assert pet["properties"]["category"]["properties"]["parent"] == {}
    assert "$ref" not in json.dumps(create)
    # The spec's Authorization header parameter is ignored, as OpenAPI says: config.headers carry auth.
    assert set(shop["shop.whoami"].parameters["properties"]) == {"X-Trace"}
    assert shop["shop.delete_pets_pet_id"].description == "Remove a pet."


async def test_a_get_with_path_and_query_parameters(shop: dict[str, Tool]) -> None:
    pet = await shop["shop.getPet"].handler({"pet_id": 1, "verbose": True}, CTX)
    assert pet == {"id": 1, "name": "Rex", "tag": "dog", "owner": {"name": "Ann"}}
    assert "owner" not in await shop["shop.getPet"].handler({"pet_id": 1, "verbose": False}, CTX)
    listed = await shop["shop.listPets"].handler({"limit": 5, "tag": "dog"}, CTX)
    assert (listed["limit"], listed["tag"]) == (5, "dog")
    outcome = await ToolRegistry().call(shop["shop.listPets"], {"limit": 2}, CTX)
    assert outcome.ok and json.loads(outcome.content)["limit"] == 2


async def test_path_parameters_are_url_encoded_and_text_answers_stay_text(shop: dict[str, Tool]) -> None:
    assert await shop["shop.echo"].handler({"word": "a b/c?d"}, CTX) == "/echo/a%20b%2Fc%3Fd"


async def test_a_post_sends_its_body_and_the_idempotency_key(shop: dict[str, Tool]) -> None:
    body = {"name": "Tom", "owner": {"name": "Bo"}}
    created = await shop["shop.createPet"].handler({"body": body}, CTX)
    assert created["name"] == "Tom" and created["owner"] == {"name": "Bo"}
    assert created["idempotency_key"] == "p1:3"
    assert await shop["shop.getPet"].handler({"pet_id": created["id"]}, CTX) == {
        "id": created["id"],
        "name": "Tom",
    }
    assert await shop["shop.delete_pets_pet_id"].handler({"pet_id": created["id"]}, CTX) == (
        "HTTP 204 (no content)"
    )


async def test_configured_and_parameter_headers_arrive(shop: dict[str, Tool]) -> None:
    seen = await shop["shop.whoami"].handler({"X-Trace": "t-1"}, CTX)
    # A GET is safe to repeat, so it carries no idempotency key.
    assert seen == {"trace": "t-1", "authorization": "Bearer tok", "idempotency_key": None}


async def test_an_error_status_is_raised_with_its_body(shop: dict[str, Tool]) -> None:
    with pytest.raises(OpenApiHttpError, match=r'HTTP 404: \{"detail":"no pet 99"\}'):
        await shop["shop.getPet"].handler({"pet_id": 99}, CTX)
    outcome = await ToolRegistry().call(shop["shop.getPet"], {"pet_id": 99}, CTX)
    assert not outcome.ok and "HTTP 404" in outcome.content


async def test_a_missing_required_argument_is_named(shop: dict[str, Tool]) -> None:
    with pytest.raises(ValueError, match=r"missing required argument\(s\): limit"):
        await shop["shop.listPets"].handler({"tag": "dog"}, CTX)
    with pytest.raises(ValueError, match="body"):
        await shop["shop.createPet"].handler({}, CTX)


async def test_a_json_spec_by_url_with_a_relative_server(base_url: str) -> None:
    provider = OpenApiProvider(config(f"{base_url}/openapi.json"))
    tools = {t.name: t for t in await provider.open()}
    try:
        assert {"shop.getPet", "shop.listPets", "shop.createPet", "shop.whoami"} <= set(tools)
        body = tools["shop.createPet"].parameters["properties"]["body"]
        assert body["properties"]["name"]["type"] == "string"
        assert "$ref" not in json.dumps(tools["shop.createPet"].parameters)
        assert await tools["shop.getPet"].handler({"pet_id": 1}, CTX) == {
            "id": 1,
            "name": "Rex",
            "tag": "dog",
        }
        created = await tools["shop.createPet"].handler({"body": {"name": "Kit"}}, CTX)
        assert created["idempotency_key"] == "p1:3"
    finally:
        await provider.close()
    await provider.close()
    with pytest.raises(RuntimeError, match="closed"):
        await tools["shop.getPet"].handler({"pet_id": 1}, CTX)


async def test_the_first_server_and_its_variable_defaults_give_the_base_url(
    base_url: str, tmp_path: Path
) -> None:
    port = base_url.rsplit(":", 1)[1]
    spec = tmp_path / "spec.yaml"
    spec.write_text(PETSTORE.read_text().replace('default: "9"', f'default: "{port}"'))
    provider = OpenApiProvider(config(spec))
    tools = {t.name: t for t in await provider.open()}
    try:
        assert (await tools["shop.listPets"].handler({"limit": 1}, CTX))["limit"] == 1
    finally:
        await provider.close()


async def test_specs_that_cannot_be_used_are_refused(base_url: str, tmp_path: Path) -> None:
    swagger = tmp_path / "swagger.json"
    swagger.write_text(json.dumps({"swagger": "2.0", "info": {"title": "t", "version": "1"}, "paths": {}}))
    no_servers = tmp_path / "bare.yaml"
    no_servers.write_text("openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths: {}\n")
    relative = tmp_path / "relative.yaml"
    relative.write_text("openapi: 3.0.0\ninfo: {title: t, version: '1'}\nservers: [{url: /api}]\npaths: {}\n")
    cases: list[tuple[str | Path, str]] = [
        (swagger, "Swagger 2.0; only OpenAPI 3"),
        (tmp_path / "missing.yaml", "could not load spec"),
        (no_servers, "names no servers; set base_url"),
        (relative, "relative to a file"),
        (f"{base_url}/nowhere.json", "gave HTTP 404"),
    ]
    for spec, message in cases:
        provider = OpenApiProvider(config(spec))
        with pytest.raises(ProviderError, match=message):
            await provider.open()
        await provider.close()
    # With base_url the bare spec is fine.
    provider = OpenApiProvider(config(no_servers, base_url))
    assert await provider.open() == []
    await provider.close()


async def test_refs_with_siblings_escapes_and_dangling_targets(base_url: str, tmp_path: Path) -> None:
    spec = {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {
            "/pets": {
                "post": {
                    "operationId": "createPet",
                    "requestBody": {"$ref": "#/components/requestBodies/NewPet"},
                }
            }
        },
        "components": {
            "requestBodies": {
                "NewPet": {
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/pets~1new"}}}
                }
            },
            "schemas": {
                "pets/new": {
                    "type": "object",
                    "properties": {
                        "name": {"$ref": "#/components/schemas/Name", "description": "What it answers to."},
                        "tag": {"$ref": "#/components/schemas/Missing"},
                    },
                },
                "Name": {"type": "string", "description": "A name."},
            },
        },
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    provider = OpenApiProvider(config(path, base_url))
    [tool] = await provider.open()
    try:
        body = tool.parameters["properties"]["body"]
        assert body["properties"] == {
            "name": {"type": "string", "description": "What it answers to."},
            "tag": {},
        }
        assert "required" not in tool.parameters
        created = await tool.handler({"body": {"name": "Ivy"}}, CTX)
        assert created["name"] == "Ivy"
    finally:
        await provider.close()
