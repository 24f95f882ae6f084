"""The MCP server of od-runs, built from its tools, resources and prompt.

They are written once against a small runs interface (mcp_backend.RunsBackend): RunService
implements it inside the daemon (served at /mcp over Streamable HTTP); DaemonClient
implements it over HTTP for `od-runs mcp` on stdio. The tools are in mcp_tools, the
resources and their subscriptions in mcp_resources.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.lowlevel import Server
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.server.transport_security import TransportSecuritySettings
from starlette.routing import BaseRoute

from . import __version__
from .mcp_backend import EventsPage, RunListView, RunsBackend, RunView, WaitResult
from .mcp_mount import MCP_PATH
from .mcp_resources import (
    RESOURCE_EVENTS,
    RESOURCE_MAX_CHARS,
    RunSubscriptions,
    events_jsonl,
    register_resources,
)
from .mcp_stdio import Activity, serve_stdio
from .mcp_text import INSTRUCTIONS, delegate_prompt
from .mcp_tools import (
    MAX_WAIT_SECONDS,
    AgentIdArg,
    RunIdArg,
    follow_hint,
    prose,
    register_tools,
)
from .mcp_watch import RunWatches


class RunsMcp:
    """The MCP server of od-runs over some RunsBackend."""

    def __init__(self, backend: RunsBackend | None = None) -> None:
        self.backend = backend
        self.bus = InMemorySubscriptionBus()
        self.server = MCPServer(
            name="od-runs",
            title="od-runs",
            instructions=INSTRUCTIONS,
            version=__version__,
            log_level="WARNING",
            subscriptions=self.bus,
        )
        self.watches = RunWatches(self._backend)
        self.activity = Activity()
        self.subscriptions = RunSubscriptions(self.watches, self.bus)
        self.server.middleware.append(self.activity.middleware)
        self.server.middleware.append(self.subscriptions.watch_listened_runs)
        register_tools(self.server, self._backend)
        register_resources(self.server, self._backend)
        self._register_prompt()
        self.subscriptions.install(self._lowlevel)

    @property
    def _lowlevel(self) -> Server[Any]:
        # resources/subscribe was removed from the 2026 protocol, so MCPServer has no
        # decorator for it; the SDK's advice is the low-level add_request_handler.
        return self.server._lowlevel_server

    def _backend(self) -> RunsBackend:
        if self.backend is None:
            raise ToolError("UNAVAILABLE: the run service is not ready")
        return self.backend

    # Prompt -------------------------------------------------------------------------------

    def _register_prompt(self) -> None:
        @self.server.prompt(
            name="delegate_run",
            title="Delegate a task to an od-runs run",
            description="Start a run for a task and follow it to the end with wait_run.",
        )
        def delegate_run(task: str, agent: str = "demo", project: str | None = None) -> str:
            return delegate_prompt(task, agent, project)

    # Serving ------------------------------------------------------------------------------

    def http_routes(self) -> list[BaseRoute]:
        """The Streamable HTTP route at /mcp, to add to the daemon's app.

        Host and Origin are checked by the daemon's own guard for every route, so the SDK's
        copy of that check is off rather than configured twice.
        """
        app = self.server.streamable_http_app(
            streamable_http_path=MCP_PATH,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        return list(app.routes)

    @asynccontextmanager
    async def serving(self, backend: RunsBackend) -> AsyncIterator[None]:
        """Serve HTTP sessions against backend for the daemon's lifetime."""
        self.backend = backend
        async with self.watches.running(), self.server.session_manager.run():
            yield

    async def serve_stdio(self, backend: RunsBackend, idle_exit: float | None = None) -> None:
        """Serve one client on stdin/stdout until stdin closes (or idle_exit seconds pass
        with no message, no request in flight and no watched run)."""
        self.backend = backend
        lowlevel = self._lowlevel

        async def run(read_stream: Any, write_stream: Any) -> None:
            await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())

        async with self.watches.running():
            await serve_stdio(
                run,
                idle_exit=idle_exit,
                activity=self.activity,
                busy=lambda: self.watches.active > 0,
            )


async def run_stdio(backend: RunsBackend, idle_exit: float | None = None) -> None:
    """Serve MCP on stdin/stdout until stdin closes (or the idle exit)."""
    await RunsMcp(backend).serve_stdio(backend, idle_exit)


__all__ = [
    "MAX_WAIT_SECONDS",
    "RESOURCE_EVENTS",
    "RESOURCE_MAX_CHARS",
    "AgentIdArg",
    "EventsPage",
    "RunIdArg",
    "RunListView",
    "RunView",
    "RunsBackend",
    "RunsMcp",
    "WaitResult",
    "events_jsonl",
    "follow_hint",
    "prose",
    "run_stdio",
]
