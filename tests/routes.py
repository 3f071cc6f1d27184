"""The app's own route table, walked: every (method, path template) a server answers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from starlette.routing import BaseRoute, Mount

from aigrid.api.app import create_app
from aigrid.api.hot_path import ENDPOINTS
from aigrid.config import ServerConfig


def _routes(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's include_router, unexpanded
        if included is not None:
            context = getattr(route, "include_context", None)
            yield from _routes(included.routes, prefix + str(getattr(context, "prefix", "")))
        elif isinstance(route, Mount):
            inner = route.routes
            if inner:
                yield from _routes(inner, prefix + route.path)
            else:  # an app of its own: static files
                yield "GET", f"{prefix}{route.path}/{{path:path}}"
        else:
            path, methods = getattr(route, "path", None), getattr(route, "methods", None)
            assert path is not None and methods, f"a route the walk cannot read: {route!r}"
            for method in sorted(set(methods) - {"HEAD"} or methods):
                yield method, prefix + path


def app_routes(data_dir: Path) -> set[tuple[str, str]]:
    """Every (method, path template) the server answers: the app's routes and the hot path's."""
    served = create_app(ServerConfig(), data_dir)
    found = set(_routes(served.app.routes))
    found |= {("POST", path) for path in ENDPOINTS}
    return found
