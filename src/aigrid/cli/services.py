"""`aigrid service add|list|rm`: third-party services, each a tool provider with a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from aigrid.cli import render
from aigrid.cli.common import JsonFlag, call, json_object_file
from aigrid.cli.system import provider_config

service_app = typer.Typer(no_args_is_help=True, help="Register third-party services for the super entry.")


@service_app.command("add")
def service_add(
    name: Annotated[str, typer.Argument(help="The service's name; its operations are tools NAME.<op>.")],
    manifest: Annotated[Path, typer.Option(help="The manifest (JSON): category, description, operations.")],
    mcp: Annotated[str | None, typer.Option(help="An MCP server to start, talking over stdio.")] = None,
    url: Annotated[str | None, typer.Option(help="An MCP server's streamable HTTP endpoint.")] = None,
    openapi: Annotated[str | None, typer.Option(help="An OpenAPI document: a file or a URL.")] = None,
    base_url: Annotated[str | None, typer.Option(help="Where the OpenAPI service answers.")] = None,
    header: Annotated[list[str], typer.Option(help="'Name: value' sent with every request.")] = [],  # noqa: B006
    env: Annotated[list[str], typer.Option(help="'NAME=value' for the MCP server's environment.")] = [],  # noqa: B006
    timeout: Annotated[float, typer.Option(min=0.1, max=3600, help="Seconds a call may take.")] = 30.0,
    as_json: JsonFlag = False,
) -> None:
    """Register a service: it is opened, its manifest checked against its operations, and kept."""
    config = provider_config(name, mcp, url, openapi, base_url, header, env, timeout, command_flag="--mcp")
    config["manifest"] = _manifest(manifest)
    call(as_json, lambda c: c.add_service(config), render.service)


@service_app.command("list")
def service_list(as_json: JsonFlag = False) -> None:
    """List the registered services, their categories, operations and whether they are up."""
    call(as_json, lambda c: c.list_services(), render.services)


@service_app.command("rm")
def service_rm(
    name: Annotated[str, typer.Argument(help="The service's name.")], as_json: JsonFlag = False
) -> None:
    """Close a service and forget it."""
    call(as_json, lambda c: c.remove_service(name), render.removed_service)


def _manifest(path: Path) -> dict[str, Any]:
    return json_object_file(path, "manifest")
