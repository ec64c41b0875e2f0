"""The wallboard and agent desktop pages, served from package data.

How this works: the pages are plain HTML + CSS + vanilla JS modules in engine/web/static/, no build step and
no CDN (the daemon may have no internet). They call the JSON API and the WebSocket on the same origin
with a bearer token the user types once (kept in sessionStorage, never in a URL). This module only
maps three paths onto those files; all authorisation happens in the API the pages call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

WEB_DIR = Path(__file__).parent / "static"

# The pages hold no secrets, but a stale cached page after an upgrade would talk to a changed API.
_NO_CACHE = {"Cache-Control": "no-cache"}


def _page(name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    path = WEB_DIR / name

    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path, headers=_NO_CACHE)

    return handler


def add_web_routes(app: web.Application) -> None:
    """Serve GET /wallboard, GET /agent and /static/... (the files of engine/web/static/)."""
    app.router.add_get("/wallboard", _page("wallboard.html"))
    app.router.add_get("/agent", _page("agent.html"))
    app.router.add_static("/static/", WEB_DIR, show_index=False, follow_symlinks=False)
