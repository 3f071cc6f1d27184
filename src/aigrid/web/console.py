"""Serving the console: its page at ``/`` and its static files under ``/console/``.

The page talks only to this server: the Content-Security-Policy forbids every other origin, so a
vendored library that tried to reach a CDN or a font service would fail loudly in the browser.
"""

from __future__ import annotations

from pathlib import Path

from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

# The page lives beside its static files, not among them: served only at /, always with the policy.
PAGE = Path(__file__).parent / "index.html"
STATIC = Path(__file__).parent / "static"
# Alpine evaluates its attribute expressions with Function(), hence 'unsafe-eval'; bindings that set
# a style attribute need 'unsafe-inline' for styles. Nothing may be loaded from elsewhere.
POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_HEADERS = {
    "content-security-policy": POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


async def page(request: Request) -> Response:
    """GET /: the console's one page; it signs in with an API key and routes by the URL's fragment."""
    return FileResponse(PAGE, headers=_HEADERS)


async def to_page(request: Request) -> Response:
    """GET /console: the page lives at /."""
    return RedirectResponse("/", status_code=308)


routes: list[BaseRoute] = [
    Route("/", page, methods=["GET", "HEAD"]),
    Route("/console", to_page, methods=["GET", "HEAD"]),
    # Compressed: Chart.js alone is 210 kB as built, 71 kB gzipped, which a phone notices.
    Mount("/console", app=GZipMiddleware(StaticFiles(directory=STATIC), minimum_size=1024), name="console"),
]
