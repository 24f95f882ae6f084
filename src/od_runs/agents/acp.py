"""The `acp` agent: any Agent Client Protocol agent over stdio (default: `codex-acp`).

The run's `command` is the agent's argv; without one, OD_RUNS_ACP_COMMAND (split like a
shell would) or `codex-acp` on PATH. The conversation, spoken with the `agent-client-protocol`
package over the child's stdin and stdout (owns_stdio; the framing and the
errors' failure kinds in acp_transport.py):

    initialize -> session/new {cwd, mcpServers: the run's tool bundle} -> session/prompt
    session/update notifications   -> events (acp_updates.py)
    session/request_permission     -> answered by the run's approvalPolicy
                                      (acp_permissions.py), logged as an `approval` event
    cancel, shutdown, watchdog     -> session/cancel first (abort()), then the signal ladder

The agent's answer to session/prompt decides the run: stopReason `end_turn` succeeds,
anything else fails with the most specific kind. An ACP agent need not exit when its stdin
closes (codex-acp does not), so once the turn is over the adapter closes stdin, waits a
moment, and ends the agent's process group with the generic ladder.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shlex
from typing import TYPE_CHECKING, Any, cast

import anyio

from .. import __version__
from ..failures import failure
from ..models import RunCreate, RunError
from .acp_permissions import Decision, decide
from .acp_transport import MAX_MESSAGE_BYTES, Emit, StdioTransport, rpc_failure
from .base import Adapter, EventItem
from .bundles import acp_servers, enabled_servers, skipped_warnings
from .events import warning_event
from .process import NETWORK_ENV, Child

if TYPE_CHECKING:
    # Imported for real only when an ACP run starts (see _load_protocol).
    from acp.client.connection import ClientSideConnection
    from acp.interfaces import Client
    from acp.schema import PermissionOption, RequestPermissionResponse, ToolCallUpdate

    from .acp_updates import UpdateMapper

COMMAND_ENV = "OD_RUNS_ACP_COMMAND"
DEFAULT_COMMAND = ("codex-acp",)
# What an ACP child inherits from the daemon besides the generic allowlist: the provider
# settings of the usual ACP agents (codex-acp, Claude Code's and Gemini's adapters).
INHERITED_ENV = (
    "CODEX_HOME",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "CODEX_API_KEY",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    *NETWORK_ENV,
)
# An agent says nothing while the model thinks or a tool runs; half an hour of total silence
# means it is wedged, not busy.
IDLE_TIMEOUT_MS = 30 * 60 * 1000
# How long an agent whose turn is over may take to exit on its own once stdin is closed
# (codex-acp never does: keep it short), and then its SIGTERM -> SIGKILL grace.
EXIT_WAIT = 0.5
HANGUP_GRACE = 3.0
# How often text of a message that is still growing is passed on (a `delta` event).
DELTA_INTERVAL = 0.5


class AcpAdapter(Adapter):
    """Drives one ACP turn: initialize, a new or resumed session, one session/prompt."""

    agent_id = "acp"
    description = (
        "any Agent Client Protocol agent over stdio (`command`; default `codex-acp`), with "
        "permission requests answered by approvalPolicy; resumable per conversation"
    )
    has_sessions = True
    install_hint = (
        "install one (e.g. `npm install -g @zed-industries/codex-acp`), pass its argv as "
        "`command`, or set OD_RUNS_ACP_COMMAND"
    )
    default_idle_timeout_ms = IDLE_TIMEOUT_MS
    owns_stdio = True

    def __init__(self, request: RunCreate) -> None:
        super().__init__(request)
        # ACP wants an absolute cwd; a run without one runs where the daemon does.
        self.cwd = os.path.abspath(request.cwd or os.getcwd())
        self.updates: UpdateMapper | None = None
        self.session_id: str | None = None
        self.agent_name: str | None = None
        self.stop_reason: str | None = None
        # Why the conversation failed, when the agent said so (a JSON-RPC error).
        self.error: RunError | None = None
        self.denied: list[str] = []
        self.initialized = False
        self._conn: ClientSideConnection | None = None
        self._in_turn = False
        # Made in converse(): adapters are built outside the event loop too.
        self._talking: anyio.CancelScope | None = None
        self._chunk: anyio.Event | None = None
        self._aborted = False
        self._emit: Emit = _ignore
        # The ACP session to continue: the run's sessionRef, else its conversation's last.
        self._resume = request.sessionRef.threadId if request.sessionRef else None
        # While session/load replays the old conversation, its updates are not this run's.
        self._replaying = False

    # Spawning -----------------------------------------------------------------------------

    def argv(self) -> list[str]:
        """The run's `command`, else OD_RUNS_ACP_COMMAND, else codex-acp."""
        if self.request.command:
            return list(self.request.command)
        configured = shlex.split(os.environ.get(COMMAND_ENV, ""))
        return configured or list(DEFAULT_COMMAND)

    def env(self) -> dict[str, str]:
        """The provider settings from the daemon, then the run's own env."""
        env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
        env.update(self.provider_env())  # the --pass-env variables
        env.update(self.request.env)
        return env

    def stdin(self) -> bytes | None:
        """Nothing: stdin carries the protocol, and the prompt goes in session/prompt."""
        return None

    def live_session(self) -> str | None:
        """The ACP session this run opened or resumed."""
        return self.session_id

    # Talking ------------------------------------------------------------------------------

    async def converse(self, child: Child, emit: Emit) -> None:
        """The whole conversation; then hang up (stdin closed, the group ended)."""
        process = child.process
        assert process.stdin is not None and process.stdout is not None
        await anyio.to_thread.run_sync(_load_protocol)
        from acp.client.connection import ClientSideConnection

        from .acp_updates import UpdateMapper

        self.updates = UpdateMapper(self.cwd)
        self._talking, self._chunk = anyio.CancelScope(), anyio.Event()
        if self._aborted:
            self._talking.cancel()  # canceled before it began: only hang up
        self._emit = emit
        transport = StdioTransport(process.stdin, process.stdout, emit, self._garbage)
        # Client is a Protocol of every client method, but the library looks each handler up
        # by name and answers method-not-found for those a client leaves out: ours has two.
        conn = ClientSideConnection(cast("Client", _Client(self)), transport)
        self._conn = conn
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._pass_deltas)
                with self._talking:
                    await self._talk(conn)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._hang_up(child)
                await conn.close()

    async def _talk(self, conn: ClientSideConnection) -> None:
        from acp import PROTOCOL_VERSION, RequestError, text_block
        from acp.schema import ClientCapabilities, FileSystemCapabilities, Implementation

        assert self.updates is not None
        step = "initialize"
        try:
            init = await conn.initialize(
                protocol_version=PROTOCOL_VERSION,
                client_capabilities=ClientCapabilities(
                    fs=FileSystemCapabilities(read_text_file=False, write_text_file=False),
                    terminal=False,
                ),
                client_info=Implementation(name="od-runs", title="od-runs", version=__version__),
            )
            self.initialized = True
            if init.protocol_version != PROTOCOL_VERSION:
                self.error = failure(
                    "AGENT_PROTOCOL_ERROR",
                    f"The agent speaks ACP version {init.protocol_version}; od-runs speaks "
                    f"version {PROTOCOL_VERSION}.",
                )
                return
            info = init.agent_info
            self.agent_name = f"{info.name} {info.version}" if info is not None else None
            mcp = init.agent_capabilities.mcp_capabilities if init.agent_capabilities else None
            servers, skipped = acp_servers(
                enabled_servers(self.request.toolBundle),
                http=bool(mcp and mcp.http),
                sse=bool(mcp and mcp.sse),
            )
            self._emit(skipped_warnings(skipped))
            step = self._session_step(init.agent_capabilities)
            self.session_id = await self._open_session(conn, step, servers)
            event: dict[str, Any] = {"type": "session", "sessionId": self.session_id}
            if self.agent_name:
                event["agent"] = self.agent_name
            if step != "session/new":
                event["resumed"] = True
            self._emit([("agent", event)])
            step = "session/prompt"
            self._in_turn = True
            try:
                result = await conn.prompt(
                    session_id=self.session_id, prompt=[text_block(self.request.prompt)]
                )
            finally:
                self._in_turn = False
            self.stop_reason = result.stop_reason
            status = {"type": "status", "text": f"Turn ended: {result.stop_reason}"}
            self._emit([("agent", {**status, "stopReason": result.stop_reason})])
            self._emit(self.updates.end_turn(result.stop_reason, result.usage))
        except RequestError as exc:
            self.error = rpc_failure(step, exc)
            if (
                step in ("session/resume", "session/load")
                and self.error.code == "AGENT_PROTOCOL_ERROR"
            ):
                self.error = failure(
                    "SESSION_RESUME_FAILED",
                    f"The agent could not continue session {self._resume} "
                    f"({self.error.message.split(': ', 1)[-1].rstrip('.')}). Start the run "
                    "without sessionRef, or in a new conversation, for a new session.",
                )
        except ConnectionError:
            pass  # the agent hung up: outcome() reads its exit code

    def _session_step(self, caps: Any) -> str:
        """How this run gets its session: session/new, session/resume or session/load."""
        if self._resume is None or caps is None:
            return "session/new"
        if caps.session_capabilities is not None and caps.session_capabilities.resume:
            return "session/resume"  # continues without replaying the past
        if caps.load_session:
            return "session/load"  # replays the past as updates first
        return "session/new"

    async def _open_session(self, conn: ClientSideConnection, step: str, servers: list[Any]) -> str:
        """The session id, opened by step; updates session/load replays are dropped, since
        they belong to earlier runs (and are in their logs)."""
        if step == "session/resume":
            assert self._resume is not None
            await conn.resume_session(session_id=self._resume, cwd=self.cwd, mcp_servers=servers)
            return self._resume
        if step == "session/load":
            assert self._resume is not None
            self._replaying = True
            try:
                await conn.load_session(cwd=self.cwd, session_id=self._resume, mcp_servers=servers)
            finally:
                self._replaying = False
            return self._resume
        if self._resume is not None:
            self._emit(
                [
                    warning_event(
                        "The agent cannot resume sessions, so this run starts a new one "
                        f"instead of continuing {self._resume}."
                    )
                ]
            )
        session = await conn.new_session(cwd=self.cwd, mcp_servers=servers)
        return str(session.session_id)

    async def _hang_up(self, child: Child) -> None:
        """Close the agent's stdin; if it does not exit by itself, end its group."""
        await child.close_stdin()
        with anyio.move_on_after(EXIT_WAIT):
            await child.wait()
        if child.returncode is None:
            await child.stop(HANGUP_GRACE)

    async def _pass_deltas(self) -> None:
        """Pass on a growing message's text every DELTA_INTERVAL, not once per chunk."""
        while True:
            assert self._chunk is not None
            await self._chunk.wait()
            await anyio.sleep(DELTA_INTERVAL)
            self._chunk = anyio.Event()
            assert self.updates is not None
            self._emit(self.updates.delta())

    async def abort(self) -> None:
        """session/cancel while a turn runs; otherwise stop talking and hang up."""
        conn, session = self._conn, self.session_id
        if not (self._in_turn and conn is not None and session is not None):
            self._aborted = True
            if self._talking is not None:
                self._talking.cancel()
            return
        from acp import RequestError

        self._emit(
            [
                (
                    "agent",
                    {"type": "status", "text": "Canceling the turn", "request": "session/cancel"},
                )
            ]
        )
        with contextlib.suppress(ConnectionError, RequestError):
            await conn.cancel(session_id=session)

    # What the agent sends -----------------------------------------------------------------

    def on_update(self, update: Any) -> None:
        """One session/update: its events now, a growing message's text a bit later."""
        assert self.updates is not None
        if self._replaying:
            return  # session/load retelling earlier runs: they are in their own logs
        self._emit(self.updates.update(update))
        if self.updates.growing and self._chunk is not None:
            self._chunk.set()

    async def on_permission(
        self, tool_call: ToolCallUpdate, options: list[PermissionOption]
    ) -> RequestPermissionResponse:
        """Answer a permission request by the run's approvalPolicy, and log the decision."""
        from acp.schema import (
            AllowedOutcome,
            DeniedOutcome,
            FileEditToolCallContent,
            RequestPermissionResponse,
        )

        assert self.updates is not None
        known = self.updates.call(tool_call.tool_call_id)
        kind = tool_call.kind or (known.kind if known is not None else None)
        paths = [loc.path for loc in tool_call.locations or []]
        diffs = [c.path for c in tool_call.content or [] if isinstance(c, FileEditToolCallContent)]
        raw = tool_call.raw_input if isinstance(tool_call.raw_input, dict) else {}
        if not raw and known is not None and isinstance(known.raw_input, dict):
            raw = known.raw_input
        workdir = raw.get("cwd") if isinstance(raw.get("cwd"), str) else None
        decision: Decision = await anyio.to_thread.run_sync(
            lambda: decide(
                self.request.approvalPolicy,
                self.cwd,
                kind,
                [*paths, *diffs],
                writes=bool(diffs),
                command=raw.get("command"),
                workdir=workdir,
            )
        )
        option = _pick(options, decision.allowed)
        title = tool_call.title or (known.summary if known is not None else None) or kind or ""
        # The app-server adapter's `approval` event, plus the tool kind and chosen option.
        event: dict[str, Any] = {
            "type": "approval",
            "method": "session/request_permission",
            "callId": tool_call.tool_call_id,
            "summary": title,
            "decision": "allow" if decision.allowed else "deny",
            "policy": self.request.approvalPolicy,
            "reason": decision.reason,
            "kind": kind,
            "option": option.option_id if option is not None else None,
        }
        self._emit([("agent", event)])
        if not decision.allowed:
            self.denied.append(f"{title}: {decision.reason}" if title else decision.reason)
        if option is None:
            return RequestPermissionResponse(outcome=DeniedOutcome(outcome="cancelled"))
        return RequestPermissionResponse(
            outcome=AllowedOutcome(outcome="selected", option_id=option.option_id)
        )

    def _garbage(self, text: str, fatal: bool = False) -> None:
        """A line on stdout that is not JSON-RPC: skipped; one too long to read ends the run."""
        if fatal:
            self.error = failure(
                "AGENT_PROTOCOL_ERROR",
                f"The agent sent a message longer than {MAX_MESSAGE_BYTES // 2**20} MiB; "
                "od-runs stopped reading it.",
            )
            return
        assert self.updates is not None
        self.updates.suppressed["not_json"] += 1
        if self.updates.suppressed["not_json"] == 1:
            warning = "The agent printed a line that is not JSON-RPC on stdout; it was skipped."
            self._emit([("agent", {"type": "warning", "text": warning, "line": text[:500]})])

    # Ending -------------------------------------------------------------------------------

    def finish_events(self) -> list[EventItem]:
        """One summary of what was left out, by kind (never the text itself)."""
        return self.updates.summary_event() if self.updates is not None else []

    def exit_error(self, returncode: int) -> RunError | None:
        """The turn's stopReason decides; without one, how the agent went away."""
        if self.error is not None:
            return self.error
        reason = self.stop_reason
        if reason == "end_turn":
            return None
        if reason is not None:
            if self.denied:
                return failure(
                    "PERMISSION_DENIED",
                    f"The agent stopped after approvalPolicy {self.request.approvalPolicy!r} "
                    f'denied it: {self.denied[-1]}. Allow it (approvalPolicy "allow") or '
                    "change the task.",
                )
            return failure("AGENT_INCOMPLETE", _INCOMPLETE.get(reason, f"stopReason {reason}."))
        if returncode == 127 and not self.initialized:
            return failure(
                "AGENT_NOT_FOUND",
                f"The ACP agent or its interpreter was not found (exit 127); {self.install_hint}.",
            )
        if returncode != 0:
            return super().exit_error(returncode)
        return failure("AGENT_PROTOCOL_ERROR", "The agent exited without answering session/prompt.")


_INCOMPLETE = {
    "max_tokens": "The agent hit its token limit before finishing the turn.",
    "max_turn_requests": "The agent hit its limit of model requests for one turn.",
    "refusal": "The agent refused to carry out the prompt.",
    "cancelled": "The agent canceled its turn by itself.",
}


class _Client:
    """The client side the ACP library calls: updates and permission requests."""

    def __init__(self, adapter: AcpAdapter) -> None:
        self._adapter = adapter

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        """A session/update notification."""
        self._adapter.on_update(update)

    async def request_permission(
        self,
        session_id: str,
        tool_call: ToolCallUpdate,
        options: list[PermissionOption],
        **kwargs: Any,
    ) -> RequestPermissionResponse:
        """A session/request_permission request."""
        return await self._adapter.on_permission(tool_call, options)


def _pick(options: list[PermissionOption], allow: bool) -> PermissionOption | None:
    """The once-only option of the wanted kind, else the always one, else None."""
    kinds = ("allow_once", "allow_always") if allow else ("reject_once", "reject_always")
    for kind in kinds:
        for option in options:
            if option.kind == kind:
                return option
    return None


def _ignore(items: list[EventItem]) -> None:
    pass


def _load_protocol() -> None:
    """Import the ACP library: its schema builds hundreds of pydantic models (most of a
    second of CPU), so the daemon loads it off the event loop, and only for ACP runs."""
    importlib.import_module("acp.client.connection")
    importlib.import_module("od_runs.agents.acp_updates")


__all__ = ["AcpAdapter"]
