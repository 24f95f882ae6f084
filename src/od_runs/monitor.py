"""The web monitor's routes: the page at `/` and `/runs/{id}`, its assets under `/static/`.

The page is static: everything it shows comes from the same-origin API. Serving it needs no
token (it holds no data); the API calls it makes still do.
"""

from __future__ import annotations

import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

WEB_DIR = Path(__file__).parent / "web"
_PAGE_RE = re.compile(r"^/(?:runs/[A-Za-z0-9._:-]{1,128}/?)?$")


def is_public(method: str, path: str) -> bool:
    """True for a GET of the page or its assets: served without a token."""
    return method in ("GET", "HEAD") and (bool(_PAGE_RE.match(path)) or path.startswith("/static/"))


async def _page(request: Request) -> FileResponse:
    # One page for the list and the run view: app.js reads the path.
    return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def monitor_routes() -> list[BaseRoute]:
    """The routes that serve the monitor."""
    return [
        Route("/", _page, methods=["GET"], include_in_schema=False),
        Route("/runs/{run_id}", _page, methods=["GET"], include_in_schema=False),
        Mount("/static", StaticFiles(directory=WEB_DIR), name="static"),
    ]
