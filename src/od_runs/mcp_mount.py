"""/mcp in the daemon, with the MCP SDK loaded after the daemon is already answering.

Importing the SDK costs about 0.6 s (it builds pydantic models for every protocol type),
half of the daemon's start. The daemon binds and serves /api at once and loads the SDK in a
worker thread; a request to /mcp that comes first waits for the load.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from .runs import RunService

log = logging.getLogger("od_runs.mcp")

MCP_PATH = "/mcp"
# A request to /mcp waits at most this long for the SDK to load.
LOAD_TIMEOUT = 60.0


class McpMount:
    """The /mcp route: the Streamable HTTP app of a RunsMcp, once it is loaded."""

    def __init__(self) -> None:
        self._app: ASGIApp | None = None
        self._error: str | None = None
        self._settled = anyio.Event()

    def route(self) -> Route:
        """The route to add to the daemon's app."""
        return Route(MCP_PATH, endpoint=self)

    @asynccontextmanager
    async def serving(self, service: RunService) -> AsyncIterator[None]:
        """Load the SDK in the background and serve /mcp from it until the daemon stops."""
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._serve, service, stop)
            try:
                yield
            finally:
                stop.set()
                if not self._settled.is_set():
                    tg.cancel_scope.cancel()  # stopping before the load ended: skip the rest

    async def _serve(self, service: RunService, stop: anyio.Event) -> None:
        try:
            module = await anyio.to_thread.run_sync(
                importlib.import_module, "od_runs.mcp_server", abandon_on_cancel=True
            )
            mcp = module.RunsMcp()
            routes = mcp.http_routes()
        except Exception as exc:  # a broken install: /api still works, /mcp says why
            log.exception("cannot load the MCP server")
            self._error = f"the MCP server could not be loaded: {exc}"
            self._settled.set()
            return
        async with mcp.serving(service):
            self._app = routes[0].app
            self._settled.set()
            await stop.wait()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with anyio.move_on_after(LOAD_TIMEOUT):
            await self._settled.wait()
        if self._app is None:
            message = self._error or "the MCP server is still loading; try again"
            body = {"error": {"code": "MCP_UNAVAILABLE", "message": message}}
            await JSONResponse(body, status_code=503)(scope, receive, send)
            return
        await self._app(scope, receive, send)


__all__ = ["MCP_PATH", "McpMount"]
