"""The MCP tools of od-runs: start, follow, list and cancel runs, and read sessions."""

from __future__ import annotations

import inspect
import shlex
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import Field, ValidationError

from . import mcp_budget as budgeting
from .agents import agent_help, agent_ids
from .errors import Invalid, OdRunsError
from .mcp_backend import EventsPage, GetBackend, RunListView, RunsBackend, RunView, WaitResult
from .mcp_watch import PROGRESS_LOOKBACK, assistant_text, report_progress
from .models import (
    ID_PATTERN,
    MAX_TIMEOUT_MS,
    TERMINAL_STATES,
    ApprovalPolicy,
    DemoOptions,
    DiffPage,
    RunCreate,
    RunStatus,
    SessionDetail,
    SessionList,
    WorkspaceSpec,
)

# The registered agents, as an enum the calling model can see in the tool's schema. The
# Literal is built from the registry at import time, which a type checker cannot evaluate: to
# it the argument is the plain string it is at run time.
if TYPE_CHECKING:
    AgentIdArg = str
else:
    AgentIdArg = Literal[tuple(agent_ids())]


# wait_run never holds a tool call longer than this: clients time out around 60 s.
MAX_WAIT_SECONDS = 50.0

# get_run_diff pages: small enough for a model's context, at most the REST bound.
DIFF_PAGE = 32_000
MAX_DIFF_PAGE = 200_000

RunIdArg = Annotated[str, Field(description="The run id, as returned by start_run.")]
# Events get_run looks back through for the final answer it quotes.
ANSWER_LOOKBACK = 20


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


def prose(docstring: str) -> str:
    """A docstring as a model should read it: paragraphs, no source line breaks or indent."""
    paragraphs = inspect.cleandoc(docstring).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())


@contextmanager
def _tool_errors() -> Iterator[None]:
    """Turn an od-runs error raised inside into the tool error a client shows (CODE: message)."""
    try:
        yield
    except OdRunsError as exc:
        raise _tool_error(exc) from None


def _tool_error(exc: OdRunsError) -> ToolError:
    return ToolError(f"{exc.code}: {exc.message}")


def _wants_progress(ctx: Context) -> bool:
    meta = ctx.request_context.meta or {}
    return meta.get("progress_token") is not None


async def _recent(backend: RunsBackend, status: RunStatus, count: int) -> list[Any]:
    """The run's last count events, or none if they cannot be read."""
    try:
        items, _ = await backend.events(status.id, max(0, status.lastEventId - count), count)
    except OdRunsError:
        return []
    return items


async def run_result(backend: RunsBackend, status: RunStatus) -> CallToolResult:
    """A RunView within the budget, led by a sentence quoting the answer or latest text."""
    recent = await _recent(backend, status, ANSWER_LOOKBACK)
    done = status.status in TERMINAL_STATES
    answer = budgeting.final_answer(recent) if done else None
    latest = None if done else assistant_text(recent)
    summary = budgeting.lead_sentence(status, answer, latest=latest)
    return budgeting.run_view(status, follow_hint(status), summary, budgeting.result_budget())


def _ref(status: RunStatus) -> budgeting.RunRef:
    return budgeting.RunRef(status.id, status.eventsLogPath)


def register_tools(server: MCPServer, get_backend: GetBackend) -> None:
    """Add the tools to server, each asking get_backend for the runs it works on."""

    def tool(**options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            description = prose(fn.__doc__ or "")
            return server.tool(description=description, **options)(fn)

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
        command: Annotated[list[str] | None, Field(description="argv for agentId=command.")] = None,
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
        workspace: Annotated[
            WorkspaceSpec | None,
            Field(
                description="Run in a git worktree of repo on its own branch, so parallel "
                "runs do not see each other's edits; cwd is then relative to the worktree. "
                "Read what it changed with get_run_diff."
            ),
        ] = None,
    ) -> Annotated[CallToolResult, RunView]:
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
            ("workspace", workspace),
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
        backend = get_backend()
        with _tool_errors():
            status = await backend.start(request)
            if waitSeconds > 0 and status.status not in TERMINAL_STATES:
                status = await with_progress(
                    ctx, get_backend, status.id, backend.wait(status.id, waitSeconds)
                )
        return await run_result(backend, status)

    @tool(title="Get a run", annotations=read_only)
    async def get_run(runId: RunIdArg) -> Annotated[CallToolResult, RunView]:
        """A run's status, its error code and message if it failed, its log path, and
        how to follow it, led by one sentence (with the final answer once it is done).
        NOT_FOUND: no run has that id."""
        backend = get_backend()
        with _tool_errors():
            status = await backend.get(runId)
        return await run_result(backend, status)

    @tool(title="List runs", annotations=read_only)
    async def list_runs(
        projectId: str | None = None,
        conversationId: str | None = None,
        status: Annotated[
            Literal["queued", "running", "succeeded", "failed", "canceled", "active"] | None,
            Field(description="active = queued or running."),
        ] = None,
        limit: Annotated[int, Field(ge=1, le=200)] = 20,
    ) -> Annotated[CallToolResult, RunListView]:
        """Runs, newest first, filtered by project, conversation and status."""
        with _tool_errors():
            runs = await get_backend().list(projectId, conversationId, status, limit)
        return budgeting.fit_list(
            [r.model_dump(mode="json") for r in runs],
            _run_list,
            budgeting.compact_json,
            budgeting.result_budget(),
        )

    @tool(
        title="Cancel a run",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=True, idempotent_hint=True
        ),
    )
    async def cancel_run(runId: RunIdArg) -> Annotated[CallToolResult, RunView]:
        """Stop a run for good (SIGTERM, then SIGKILL); returns once its processes are
        gone. Only when the user asks: a slow or quiet run is still working. NOT_FOUND: no
        run has that id."""
        backend = get_backend()
        with _tool_errors():
            status = await backend.cancel(runId)
        return await run_result(backend, status)

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
    ) -> Annotated[CallToolResult, WaitResult]:
        """Wait until the run ends or timeoutSeconds pass, then return its latest events.

        The result leads with one sentence (running or done, the final answer or the error,
        what to call next) and holds what fits the result budget: the final answer, the
        newest events (one too big is cut, its `cut` says how to read the rest), and in
        `skipped` the count of the events after the cursor it left out. Call again with
        after=nextCursor until done is true. While waiting it reports progress: events so
        far, the status, and what the agent last said. Waiting never disturbs the run; do
        not cancel a run because it is slow. NOT_FOUND: no run has that id.
        """
        backend = get_backend()
        with _tool_errors():
            waiting = (
                backend.wait_for_events(runId, after, timeoutSeconds)
                if returnOnEvent
                else backend.wait(runId, timeoutSeconds)
            )
            status = await with_progress(ctx, get_backend, runId, waiting)
            start = max(after, status.lastEventId - limit)
            items, _ = await backend.events(runId, start, limit)
        latest = None
        if status.status not in TERMINAL_STATES:
            latest = assistant_text(items[-PROGRESS_LOOKBACK:])
        return budgeting.wait_result(
            _ref(status), status, items, after, budgeting.result_budget(), latest
        )

    @tool(title="Get run events", annotations=read_only)
    async def get_run_events(
        runId: RunIdArg,
        after: Annotated[int, Field(ge=0, description="Return events with id > after.")] = 0,
        limit: Annotated[int, Field(ge=1, le=500)] = 100,
        maxBytes: Annotated[
            int | None,
            Field(
                ge=budgeting.MIN_RESULT_BYTES,
                description="Keep this result under this many bytes (at most the server's "
                "budget, OD_RUNS_MCP_RESULT_BYTES, 40,000 by default).",
            ),
        ] = None,
        offset: Annotated[
            int,
            Field(
                ge=0,
                description="Read event after+1 from this byte of its data: the "
                "cut.nextOffset of a cut event, to read it all in parts.",
            ),
        ] = 0,
    ) -> Annotated[CallToolResult, EventsPage]:
        """A page of a run's events in order; page on with after=nextCursor while hasMore.

        A page holds as many whole events as fit the result budget. An event too big for
        it comes cut: its `cut` says how many bytes were left out, and calling again with
        after=<its id - 1>, limit=1 and offset=cut.nextOffset gives the next part, until
        cut.nextOffset is null.
        """
        budget = budgeting.result_budget()
        if maxBytes is not None:
            budget = min(budget, maxBytes)
        backend = get_backend()
        with _tool_errors():
            status = await backend.get(runId)
            items, more = await backend.events(runId, after, 1 if offset else limit)
        return budgeting.events_page(_ref(status), items, after, more, budget, offset)

    @tool(title="Get a run's diff", annotations=read_only)
    async def get_run_diff(
        runId: RunIdArg,
        path: Annotated[str | None, Field(description="Only this file (repo-relative).")] = None,
        offset: Annotated[int, Field(ge=0, description="Byte offset: a page's nextOffset.")] = 0,
        maxBytes: Annotated[int, Field(ge=1, le=MAX_DIFF_PAGE)] = DIFF_PAGE,
    ) -> Annotated[CallToolResult, DiffPage]:
        """The unified diff of a worktree run against its base, uncommitted and untracked
        files included, in pages: read on from nextOffset while hasMore."""
        budget = budgeting.result_budget()
        # The diff goes out twice (the text block, and escaped in the structure): a page
        # starts at under half the budget and halves until the whole result fits.
        size = min(maxBytes, budget * 2 // 5)
        while True:
            with _tool_errors():
                page = await get_backend().diff(runId, path, offset, size)
            text = page.diff
            if page.hasMore:
                text += f"\n[diff goes on: get_run_diff with offset={page.nextOffset}]"
            structured = page.model_dump(mode="json")
            if budgeting.tool_result_size(text, structured) <= budget or size <= 256:
                return budgeting.tool_result(text, structured)
            size //= 2

    @tool(title="List sessions", annotations=read_only)
    async def list_sessions(
        conversationId: str | None = None,
        status: Annotated[
            Literal["active", "idle", "retired"] | None,
            Field(description="active: a turn runs; idle: warm process; retired: none."),
        ] = None,
        limit: Annotated[int, Field(ge=1, le=200)] = 20,
    ) -> Annotated[CallToolResult, SessionList]:
        """Live agent sessions (codex-app-server keeps one process per conversation and
        runs each of its runs as a turn), most recently used first."""
        with _tool_errors():
            sessions = await get_backend().list_sessions(conversationId, status, limit)
        return budgeting.fit_list(
            [s.model_dump(mode="json") for s in sessions],
            lambda kept, _: {"sessions": kept},
            budgeting.compact_json,
            budgeting.result_budget(),
        )

    @tool(title="Get a session", annotations=read_only)
    async def get_session(
        sessionId: Annotated[str, Field(description="The session id (ses-…).")],
    ) -> Annotated[CallToolResult, SessionDetail]:
        """A session: its thread, process, status, last run and turn, and recent events
        (spawned, resumed, turns, retirements). NOT_FOUND: no session has that id."""
        with _tool_errors():
            detail = (await get_backend().get_session(sessionId)).model_dump(mode="json")
        recent = detail.pop("recentEvents")
        # Newest first into the fit, so the oldest session events give way.
        return budgeting.fit_list(
            recent[::-1],
            lambda kept, _: {**detail, "recentEvents": kept[::-1]},
            budgeting.compact_json,
            budgeting.result_budget(),
        )


def _run_list(kept: list[dict[str, Any]], left_out: int) -> dict[str, Any]:
    return {"runs": kept, **({"leftOut": left_out} if left_out else {})}


async def with_progress(
    ctx: Context, get_backend: GetBackend, run_id: str, waiting: Awaitable[RunStatus]
) -> RunStatus:
    """Await waiting; meanwhile report the run's progress if the client asked for it."""
    if not _wants_progress(ctx):
        return await waiting

    async def report(progress: float, message: str) -> None:
        await ctx.report_progress(progress, message=message)

    # Errors are carried out of the task group, so the tool catches OdRunsError itself.
    failure: OdRunsError | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(report_progress, get_backend(), run_id, report)
        try:
            status = await waiting
        except OdRunsError as exc:
            failure = exc
        tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return status
