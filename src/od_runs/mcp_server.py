"""MCP tools, written once against a small runs interface.

RunService implements that interface inside the daemon (served at /mcp over Streamable
HTTP); DaemonClient implements it over HTTP for `od-runs mcp` on stdio.
"""

from __future__ import annotations

import shlex
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, Protocol

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field
from starlette.routing import BaseRoute

from . import __version__
from .errors import OdRunsError
from .models import ID_PATTERN, TERMINAL_STATES, DemoOptions, Event, RunCreate, RunStatus

# wait_run never holds a tool call longer than this: clients time out around 60 s.
MAX_WAIT_SECONDS = 50.0
MCP_PATH = "/mcp"

INSTRUCTIONS = """\
od-runs runs coding agents (a built-in `demo` agent, or any `command`) and keeps every event.
Runs take seconds to hours. Start one with start_run, then follow it with wait_run in a loop
(pass the nextCursor you got back) until `done` is true; do not cancel a run because it is
quiet. get_run shows the status and, while it runs, a `tail -F` command for its log file.
Error codes: NOT_FOUND (no such run), AGENT_NOT_FOUND (agent binary missing), AGENT_EXITED
(non-zero exit), DAEMON_RESTARTED (the daemon stopped mid-run: start it again)."""

RunIdArg = Annotated[str, Field(description="The run id, as returned by start_run.")]


class RunsBackend(Protocol):
    """The runs interface both RunService and DaemonClient implement."""

    async def start(self, request: RunCreate) -> RunStatus: ...
    async def get(self, run_id: str) -> RunStatus: ...
    async def list(
        self,
        project_id: str | None = None,
        conversation_id: str | None = None,
        status: str | None = None,
        limit: int = 200,
    ) -> list[RunStatus]: ...
    async def cancel(self, run_id: str, grace: float | None = None) -> RunStatus: ...
    async def wait(self, run_id: str, timeout: float | None = None) -> RunStatus: ...
    async def wait_for_events(self, run_id: str, after: int, timeout: float) -> RunStatus: ...
    async def events(
        self, run_id: str, after: int = 0, limit: int = 100
    ) -> tuple[list[Event], bool]: ...


class RunView(BaseModel):
    """A run's status plus a hint on how to follow it."""

    run: RunStatus
    hint: str


class RunListView(BaseModel):
    """Runs, newest first."""

    runs: list[RunStatus]


class WaitResult(BaseModel):
    """What wait_run saw: the status, the latest events after the cursor, where to go on."""

    run: RunStatus
    done: bool = Field(description="True when the run has reached a terminal status.")
    events: list[Event] = Field(description="The most recent events after the cursor.")
    skipped: int = Field(description="Events after the cursor left out (see get_run_events).")
    nextCursor: int = Field(description="Pass as `after` to the next wait_run call.")


class EventsPage(BaseModel):
    """A page of events in order."""

    items: list[Event]
    nextCursor: int
    hasMore: bool


def follow_hint(status: RunStatus) -> str:
    """How to follow a run from here: wait_run, and tail -F while it is active."""
    if status.status in TERMINAL_STATES:
        outcome = f"Run {status.status}"
        if status.errorCode:
            outcome += f" with {status.errorCode}: {status.error}"
        return outcome + ". get_run_events pages through everything it emitted."
    hint = f"Run is {status.status}. Call wait_run with runId {status.id} until done is true."
    if status.eventsLogPath:
        hint += f" In a shell: tail -F {shlex.quote(status.eventsLogPath)}"
    return hint


def _tool_error(exc: OdRunsError) -> ToolError:
    return ToolError(f"{exc.code}: {exc.message}")


class RunsMcp:
    """The MCP server of od-runs over some RunsBackend."""

    def __init__(self, backend: RunsBackend | None = None) -> None:
        self.backend = backend
        self.server = MCPServer(
            name="od-runs",
            title="od-runs",
            instructions=INSTRUCTIONS,
            version=__version__,
            log_level="WARNING",
        )
        self._register()

    def _backend(self) -> RunsBackend:
        if self.backend is None:
            raise ToolError("UNAVAILABLE: the run service is not ready")
        return self.backend

    def _register(self) -> None:
        tool = self.server.tool
        read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

        @tool(
            title="Start a run",
            annotations=ToolAnnotations(
                read_only_hint=False, destructive_hint=False, open_world_hint=True
            ),
        )
        async def start_run(
            prompt: Annotated[str, Field(description="What the agent should do.")] = "",
            agentId: Annotated[
                Literal["demo", "command"],
                Field(description="demo: built-in agent; command: run `command` as argv."),
            ] = "demo",
            command: Annotated[
                list[str] | None, Field(description="argv for agentId=command.")
            ] = None,
            projectId: Annotated[str | None, Field(pattern=ID_PATTERN)] = None,
            conversationId: Annotated[str | None, Field(pattern=ID_PATTERN)] = None,
            cwd: Annotated[str | None, Field(description="Working directory.")] = None,
            clientRequestId: Annotated[
                str | None,
                Field(pattern=ID_PATTERN, description="Makes a retried start idempotent."),
            ] = None,
            demo: Annotated[
                DemoOptions | None, Field(description="Events and duration of the demo agent.")
            ] = None,
        ) -> RunView:
            """Start a coding-agent run and return at once; follow it with wait_run."""
            fields: dict[str, Any] = {"agentId": agentId, "prompt": prompt}
            for key, value in (
                ("command", command),
                ("projectId", projectId),
                ("conversationId", conversationId),
                ("cwd", cwd),
                ("clientRequestId", clientRequestId),
                ("demo", demo),
            ):
                if value is not None:
                    fields[key] = value
            try:
                status = await self._backend().start(RunCreate(**fields))
            except OdRunsError as exc:
                raise _tool_error(exc) from None
            return RunView(run=status, hint=follow_hint(status))

        @tool(title="Get a run", annotations=read_only)
        async def get_run(runId: RunIdArg) -> RunView:
            """A run's status, error if any, log path, and how to follow it."""
            try:
                status = await self._backend().get(runId)
            except OdRunsError as exc:
                raise _tool_error(exc) from None
            return RunView(run=status, hint=follow_hint(status))

        @tool(title="List runs", annotations=read_only)
        async def list_runs(
            projectId: str | None = None,
            conversationId: str | None = None,
            status: Annotated[
                Literal["queued", "running", "succeeded", "failed", "canceled", "active"] | None,
                Field(description="active = queued or running."),
            ] = None,
            limit: Annotated[int, Field(ge=1, le=200)] = 20,
        ) -> RunListView:
            """Runs, newest first, filtered by project, conversation and status."""
            try:
                runs = await self._backend().list(projectId, conversationId, status, limit)
            except OdRunsError as exc:
                raise _tool_error(exc) from None
            return RunListView(runs=runs)

        @tool(
            title="Cancel a run",
            annotations=ToolAnnotations(
                read_only_hint=False, destructive_hint=True, idempotent_hint=True
            ),
        )
        async def cancel_run(runId: RunIdArg) -> RunView:
            """Stop a run (SIGTERM, then SIGKILL); returns once its processes are gone."""
            try:
                status = await self._backend().cancel(runId)
            except OdRunsError as exc:
                raise _tool_error(exc) from None
            return RunView(run=status, hint=follow_hint(status))

        @tool(title="Wait for a run", annotations=read_only)
        async def wait_run(
            runId: RunIdArg,
            after: Annotated[
                int, Field(ge=0, description="Event cursor: the nextCursor of the last call.")
            ] = 0,
            timeoutSeconds: Annotated[
                float, Field(gt=0, le=MAX_WAIT_SECONDS, description="At most 50 s.")
            ] = 30.0,
            returnOnEvent: Annotated[
                bool, Field(description="Return as soon as any new event arrives.")
            ] = False,
            limit: Annotated[int, Field(ge=1, le=200)] = 20,
        ) -> WaitResult:
            """Wait until the run ends (or timeoutSeconds pass); return its latest events."""
            backend = self._backend()
            try:
                if returnOnEvent:
                    status = await backend.wait_for_events(runId, after, timeoutSeconds)
                else:
                    status = await backend.wait(runId, timeoutSeconds)
                start = max(after, status.lastEventId - limit)
                items, _ = await backend.events(runId, start, limit)
            except OdRunsError as exc:
                raise _tool_error(exc) from None
            return WaitResult(
                run=status,
                done=status.status in TERMINAL_STATES,
                events=items,
                skipped=start - after,
                nextCursor=items[-1].id if items else max(after, start),
            )

        @tool(title="Get run events", annotations=read_only)
        async def get_run_events(
            runId: RunIdArg,
            after: Annotated[int, Field(ge=0, description="Return events with id > after.")] = 0,
            limit: Annotated[int, Field(ge=1, le=500)] = 100,
        ) -> EventsPage:
            """A page of a run's events in order; page on with nextCursor while hasMore."""
            try:
                items, more = await self._backend().events(runId, after, limit)
            except OdRunsError as exc:
                raise _tool_error(exc) from None
            return EventsPage(
                items=items, nextCursor=items[-1].id if items else after, hasMore=more
            )

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
        async with self.server.session_manager.run():
            yield


async def run_stdio(backend: RunsBackend) -> None:
    """Serve MCP on stdin/stdout until stdin closes."""
    await RunsMcp(backend).server.run_stdio_async()
