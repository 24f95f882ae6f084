"""MCP tools, resources and a prompt, written once against a small runs interface.

RunService implements that interface inside the daemon (served at /mcp over Streamable
HTTP); DaemonClient implements it over HTTP for `od-runs mcp` on stdio.
"""

from __future__ import annotations

import builtins
import inspect
import json
import logging
import shlex
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

import anyio
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    EmptyResult,
    SubscribeRequestParams,
    SubscriptionsListenRequestParams,
    ToolAnnotations,
    UnsubscribeRequestParams,
)
from pydantic import BaseModel, Field, ValidationError
from starlette.routing import BaseRoute

from . import __version__
from .agents import agent_help, agent_ids
from .errors import Invalid, NotFound, OdRunsError
from .mcp_mount import MCP_PATH
from .mcp_stdio import Activity, serve_stdio
from .mcp_text import INSTRUCTIONS, delegate_prompt
from .mcp_watch import (
    NotARunResource,
    OnChange,
    RunWatches,
    is_run_id,
    report_progress,
)
from .models import (
    ID_PATTERN,
    MAX_TIMEOUT_MS,
    TERMINAL_STATES,
    ApprovalPolicy,
    DemoOptions,
    Event,
    RunCreate,
    RunStatus,
    SessionDetail,
    SessionList,
    SessionStatus,
)

# The registered agents, as an enum the calling model can see in the tool's schema. The
# Literal is built from the registry at import time, which a type checker cannot evaluate: to
# it the argument is the plain string it is at run time.
if TYPE_CHECKING:
    AgentIdArg = str
else:
    AgentIdArg = Literal[tuple(agent_ids())]

log = logging.getLogger("od_runs.mcp")

# wait_run never holds a tool call longer than this: clients time out around 60 s.
MAX_WAIT_SECONDS = 50.0
# runs://{runId}/events holds at most this many of the newest events ...
RESOURCE_EVENTS = 100
# ... and at most this much text: a resource lands whole in a model's context.
RESOURCE_MAX_CHARS = 100_000
# Where a connection keeps its resources/subscribe subscriptions (uri -> unsubscribe).
_SUBSCRIPTIONS_KEY = "od_runs.subscriptions"

RunIdArg = Annotated[str, Field(description="The run id, as returned by start_run.")]


class RunsBackend(Protocol):
    """The runs interface both RunService and DaemonClient implement."""

    # Below the `list` method, a bare `list[...]` in an annotation names that method, hence
    # `builtins.list`.

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
    ) -> tuple[builtins.list[Event], bool]: ...
    async def watch(self, run_id: str, on_change: OnChange) -> None: ...
    async def list_sessions(
        self, conversation_id: str | None = None, status: str | None = None, limit: int = 200
    ) -> builtins.list[SessionStatus]: ...
    async def get_session(self, session_id: str) -> SessionDetail: ...


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
    hint = (
        f"Run is {status.status}. Call wait_run with runId {status.id} until done is true; "
        "a quiet run is still working, so keep waiting rather than cancelling."
    )
    if status.eventsLogPath:
        hint += f" In a shell: tail -F {shlex.quote(status.eventsLogPath)}"
    return hint


def events_jsonl(events: list[Event], max_chars: int = RESOURCE_MAX_CHARS) -> str:
    """Events as JSONL, newest last, dropping the oldest lines beyond max_chars."""
    lines = [event.model_dump_json() + "\n" for event in events]
    size = sum(len(line) for line in lines)
    start = 0
    while size > max_chars and start < len(lines) - 1:
        size -= len(lines[start])
        start += 1
    return "".join(lines[start:])


def prose(docstring: str) -> str:
    """A docstring as a model should read it: paragraphs, no source line breaks or indent."""
    paragraphs = inspect.cleandoc(docstring).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())


def _tool_error(exc: OdRunsError) -> ToolError:
    return ToolError(f"{exc.code}: {exc.message}")


def _resource_error(exc: OdRunsError) -> ResourceError:
    # By code: over stdio a 404 arrives as the client's ApiError, not as NotFound.
    if exc.code == NotFound.code:
        return ResourceNotFoundError(f"{exc.code}: {exc.message}")
    return ResourceError(f"{exc.code}: {exc.message}")


def _wants_progress(ctx: Context) -> bool:
    meta = ctx.request_context.meta or {}
    return meta.get("progress_token") is not None


def _connection_of(ctx: ServerRequestContext[Any, Any]) -> Connection | None:
    # mcp 2.3 gives request handlers no public handle on their connection, yet its
    # exit_stack is where the SDK wants per-connection cleanup. Without it, watches still
    # end with their run.
    connection = getattr(ctx.session, "_connection", None)
    return connection if isinstance(connection, Connection) else None


def _listen_uris(params: Mapping[str, Any] | None) -> list[str]:
    try:
        parsed = SubscriptionsListenRequestParams.model_validate(params or {}, by_name=False)
    except ValidationError:
        return []
    return list(parsed.notifications.resource_subscriptions or ())


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
        self.server.middleware.append(self.activity.middleware)
        self.server.middleware.append(self._watch_listened_runs)
        self._register_tools()
        self._register_resources()
        self._register_prompt()
        self._register_subscriptions()

    @property
    def _lowlevel(self) -> Server[Any]:
        # resources/subscribe was removed from the 2026 protocol, so MCPServer has no
        # decorator for it; the SDK's advice is the low-level add_request_handler.
        return self.server._lowlevel_server

    def _backend(self) -> RunsBackend:
        if self.backend is None:
            raise ToolError("UNAVAILABLE: the run service is not ready")
        return self.backend

    # Tools --------------------------------------------------------------------------------

    def _register_tools(self) -> None:
        def tool(**options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
            def register(fn: Callable[..., Any]) -> Callable[..., Any]:
                description = prose(fn.__doc__ or "")
                return self.server.tool(description=description, **options)(fn)

            return register

        read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

        @tool(
            title="Start a run",
            annotations=ToolAnnotations(
                read_only_hint=False, destructive_hint=False, open_world_hint=True
            ),
        )
        async def start_run(
            ctx: Context,
            prompt: Annotated[str, Field(description="What the agent should do.")] = "",
            agentId: Annotated[
                AgentIdArg,
                Field(description=f"Which agent runs: {agent_help()}."),
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
            model: Annotated[
                str | None,
                Field(
                    min_length=1,
                    max_length=200,
                    description="Model the agent should use (codex, claude); omitted, the "
                    "agent's own config decides.",
                ),
            ] = None,
            idleTimeoutMs: Annotated[
                int | None,
                Field(
                    ge=0,
                    le=MAX_TIMEOUT_MS,
                    description="Fail AGENT_STALLED after this long without any output; 0: "
                    "never; omitted: the agent's default (30 min for codex and claude).",
                ),
            ] = None,
            timeoutMs: Annotated[
                int | None,
                Field(
                    ge=1,
                    le=MAX_TIMEOUT_MS,
                    description="Fail AGENT_TIMEOUT after this long in total; omitted: no limit.",
                ),
            ] = None,
            postToolIdleTimeoutMs: Annotated[
                int | None,
                Field(
                    ge=0,
                    le=MAX_TIMEOUT_MS,
                    description="Fail AGENT_STALLED after this long without any output once a "
                    "tool call has finished (codex-app-server); usually shorter than "
                    "idleTimeoutMs, so a wedged agent is caught early. 0: never; omitted: the "
                    "agent's default.",
                ),
            ] = None,
            approvalPolicy: Annotated[
                ApprovalPolicy,
                Field(
                    description="How the agent's requests for approval (commands, file changes, "
                    "permissions) are answered: allow, deny, or default (allow what stays "
                    "inside cwd, deny the rest). Choose allow only if the user agreed.",
                ),
            ] = "default",
            waitSeconds: Annotated[
                float,
                Field(
                    ge=0,
                    le=MAX_WAIT_SECONDS,
                    description="Wait up to this long (at most 50 s) for the run to finish "
                    "before returning, reporting progress meanwhile. 0: return at once.",
                ),
            ] = 0,
        ) -> RunView:
            """Start a coding-agent run in the background and return its id at once.

            Runs take seconds to hours: follow one with wait_run until done is true (or
            pass waitSeconds to wait here first, with progress notifications).

            Errors: INVALID_REQUEST (fix the arguments), IDEMPOTENCY_CONFLICT (that
            clientRequestId came with other arguments before), DAEMON_UNAVAILABLE (start the
            daemon: od-runs serve).
            """
            fields: dict[str, Any] = {"agentId": agentId, "prompt": prompt}
            for key, value in (
                ("command", command),
                ("projectId", projectId),
                ("conversationId", conversationId),
                ("cwd", cwd),
                ("clientRequestId", clientRequestId),
                ("demo", demo),
                ("model", model),
                ("idleTimeoutMs", idleTimeoutMs),
                ("timeoutMs", timeoutMs),
                ("postToolIdleTimeoutMs", postToolIdleTimeoutMs),
                ("approvalPolicy", approvalPolicy),
            ):
                if value is not None:
                    fields[key] = value
            try:
                request = RunCreate(**fields)
            except ValidationError as exc:
                # Checks the tool schema cannot express (a model name that looks like a flag).
                problems = "; ".join(
                    f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
                )
                raise _tool_error(Invalid(problems)) from None
            backend = self._backend()
            try:
                status = await backend.start(request)
                if waitSeconds > 0 and status.status not in TERMINAL_STATES:
                    status = await self._with_progress(
                        ctx, status.id, backend.wait(status.id, waitSeconds)
                    )
            except OdRunsError as exc:
                raise _tool_error(exc) from None
            return RunView(run=status, hint=follow_hint(status))

        @tool(title="Get a run", annotations=read_only)
        async def get_run(runId: RunIdArg) -> RunView:
            """A run's status, its error code and message if it failed, its log path, and
            how to follow it. NOT_FOUND: no run has that id."""
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
            """Stop a run for good (SIGTERM, then SIGKILL); returns once its processes are
            gone. Only when the user asks: a slow or quiet run is still working. NOT_FOUND: no
            run has that id."""
            try:
                status = await self._backend().cancel(runId)
            except OdRunsError as exc:
                raise _tool_error(exc) from None
            return RunView(run=status, hint=follow_hint(status))

        @tool(title="Wait for a run", annotations=read_only)
        async def wait_run(
            ctx: Context,
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
            """Wait until the run ends or timeoutSeconds pass, then return its latest events.

            Call again with after=nextCursor until done is true. While waiting it reports
            progress: events so far, the status, and what the agent last said. Waiting never
            disturbs the run; do not cancel a run because it is slow. NOT_FOUND: no run has
            that id.
            """
            backend = self._backend()
            try:
                waiting = (
                    backend.wait_for_events(runId, after, timeoutSeconds)
                    if returnOnEvent
                    else backend.wait(runId, timeoutSeconds)
                )
                status = await self._with_progress(ctx, runId, waiting)
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

        @tool(title="List sessions", annotations=read_only)
        async def list_sessions(
            conversationId: str | None = None,
            status: Annotated[
                Literal["active", "idle", "retired"] | None,
                Field(description="active: a turn runs; idle: warm process; retired: none."),
            ] = None,
            limit: Annotated[int, Field(ge=1, le=200)] = 20,
        ) -> SessionList:
            """Live agent sessions (codex-app-server keeps one process per conversation and
            runs each of its runs as a turn), most recently used first."""
            try:
                sessions = await self._backend().list_sessions(conversationId, status, limit)
            except OdRunsError as exc:
                raise _tool_error(exc) from None
            return SessionList(sessions=sessions)

        @tool(title="Get a session", annotations=read_only)
        async def get_session(
            sessionId: Annotated[str, Field(description="The session id (ses-…).")],
        ) -> SessionDetail:
            """A session: its thread, process, status, last run and turn, and recent events
            (spawned, resumed, turns, retirements). NOT_FOUND: no session has that id."""
            try:
                return await self._backend().get_session(sessionId)
            except OdRunsError as exc:
                raise _tool_error(exc) from None

    async def _with_progress(
        self, ctx: Context, run_id: str, waiting: Awaitable[RunStatus]
    ) -> RunStatus:
        """Await waiting; meanwhile report the run's progress if the client asked for it."""
        if not _wants_progress(ctx):
            return await waiting

        async def report(progress: float, message: str) -> None:
            await ctx.report_progress(progress, message=message)

        # Errors are carried out of the task group, so the tool catches OdRunsError itself.
        failure: OdRunsError | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(report_progress, self._backend(), run_id, report)
            try:
                status = await waiting
            except OdRunsError as exc:
                failure = exc
            tg.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return status

    # Resources ----------------------------------------------------------------------------

    def _register_resources(self) -> None:
        resource = self.server.resource

        @resource(
            "runs://active",
            name="active_runs",
            title="Active runs",
            description="Runs that are queued or running, newest first, as JSON {runs: [...]}.",
            mime_type="application/json",
        )
        async def active_runs() -> str:
            try:
                runs = await self._backend().list(status="active")
            except OdRunsError as exc:
                raise _resource_error(exc) from None
            return RunListView(runs=runs).model_dump_json(indent=1)

        # Registered before runs://{runId} so that template never sees an /events URI.
        @resource(
            "runs://{runId}/events",
            name="run_events",
            title="Recent run events",
            description=f"The run's most recent events (at most {RESOURCE_EVENTS}), one JSON "
            "object per line, newest last: the tail of its events.jsonl.",
            mime_type="application/jsonl",
        )
        async def run_events(runId: str) -> str:
            status = await self._read_status(runId)
            start = max(0, status.lastEventId - RESOURCE_EVENTS)
            try:
                items, _ = await self._backend().events(runId, start, RESOURCE_EVENTS)
            except OdRunsError as exc:
                raise _resource_error(exc) from None
            return events_jsonl(items)

        @resource(
            "runs://{runId}",
            name="run",
            title="Run status",
            description="The run's status body as JSON: status, error and errorCode, "
            "eventsLogPath, lastEventId. Subscribe to hear about every change.",
            mime_type="application/json",
        )
        async def run_status(runId: str) -> str:
            status = await self._read_status(runId)
            return json.dumps(status.model_dump(mode="json"), indent=1)

    async def _read_status(self, run_id: str) -> RunStatus:
        if not is_run_id(run_id):
            raise ResourceNotFoundError(f"NOT_FOUND: no run with id {run_id[:80]!r}")
        try:
            return await self._backend().get(run_id)
        except OdRunsError as exc:
            raise _resource_error(exc) from None

    # Prompt -------------------------------------------------------------------------------

    def _register_prompt(self) -> None:
        @self.server.prompt(
            name="delegate_run",
            title="Delegate a task to an od-runs run",
            description="Start a run for a task and follow it to the end with wait_run.",
        )
        def delegate_run(task: str, agent: str = "demo", project: str | None = None) -> str:
            return delegate_prompt(task, agent, project)

    # Subscriptions ------------------------------------------------------------------------

    def _register_subscriptions(self) -> None:
        """resources/subscribe and unsubscribe, for clients on the 2025 protocol revision."""
        self._lowlevel.add_request_handler(
            "resources/subscribe", SubscribeRequestParams, self._subscribe
        )
        self._lowlevel.add_request_handler(
            "resources/unsubscribe", UnsubscribeRequestParams, self._unsubscribe
        )

    def _subscriptions_of(
        self, ctx: ServerRequestContext[Any, Any]
    ) -> dict[str, Callable[[], None]]:
        connection = _connection_of(ctx)
        if connection is None:
            return {}
        # Connection.state is untyped scratch space; only this method writes this key.
        subscriptions: dict[str, Callable[[], None]] | None = connection.state.get(
            _SUBSCRIPTIONS_KEY
        )
        if subscriptions is None:
            subscriptions = connection.state[_SUBSCRIPTIONS_KEY] = {}

            def end_all() -> None:
                for unsubscribe in subscriptions.values():
                    unsubscribe()
                subscriptions.clear()

            connection.exit_stack.callback(end_all)
        return subscriptions

    async def _subscribe(
        self, ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams
    ) -> EmptyResult:
        subscriptions = self._subscriptions_of(ctx)
        if params.uri in subscriptions:
            return EmptyResult()
        sink = ctx.session.send_resource_updated
        data = {"uri": params.uri}
        try:
            unsubscribe = await self.watches.subscribe(params.uri, sink)
        except NotARunResource as exc:
            raise MCPError(INVALID_PARAMS, str(exc), data) from None
        except OdRunsError as exc:
            code = INVALID_PARAMS if exc.code == NotFound.code else INTERNAL_ERROR
            raise MCPError(code, f"{exc.code}: {exc.message}", data) from None
        subscriptions[params.uri] = unsubscribe
        return EmptyResult()

    async def _unsubscribe(
        self, ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams
    ) -> EmptyResult:
        unsubscribe = self._subscriptions_of(ctx).pop(params.uri, None)
        if unsubscribe is not None:
            unsubscribe()
        return EmptyResult()

    async def _watch_listened_runs(
        self,
        ctx: ServerRequestContext[Any, Any],
        call_next: Callable[[ServerRequestContext[Any, Any]], Awaitable[Any]],
    ) -> Any:
        """Middleware: while a 2026 `subscriptions/listen` stream is open, watch its runs."""
        if ctx.method != "subscriptions/listen" or ctx.request_id is None:
            return await call_next(ctx)
        unsubscribes: list[Callable[[], None]] = []
        try:
            for uri in _listen_uris(ctx.params):
                try:
                    unsubscribes.append(await self.watches.subscribe(uri, self._publish_updated))
                except (NotARunResource, OdRunsError) as exc:
                    # Honored but never fires, as the protocol has it for unknown URIs.
                    log.debug("listen: not watching %s: %s", uri, exc)
            return await call_next(ctx)
        finally:
            for unsubscribe in unsubscribes:
                unsubscribe()

    async def _publish_updated(self, uri: str) -> None:
        await self.bus.publish(ResourceUpdated(uri=uri))

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
