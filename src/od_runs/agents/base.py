"""The adapter contract: how to start an agent, read what it prints, and say how it ended.

An adapter is one object per run. Everything generic (spawning, the process group, the idle
watchdog, timeouts, the signal ladder, logging and publishing events) lives elsewhere
(supervision.py, agents/process.py, agents/watchdog.py); an adapter knows only its agent's
command line, its output format and what its output means.

Writing an adapter
------------------
Subclass `Adapter`, set `agent_id` (and `description`, `install_hint`), register the class in
agents/__init__.py, and override the steps you need. The supervisor calls, in this order:

1. `resume(ref)`: only for agents with sessions, when the run continues its conversation's
   previous session. Before `argv()`.
2. `argv()`, `env()`, `stdin()`: the child's command line, the variables it gets on top of the
   daemon's allowlist, and what to write to its stdin (None: /dev/null).
3. `translate(stream, lines)` for every batch of output lines (`(text, partial)` pairs; a
   partial line continues in the next piece): return the events to log, as
   `(event name, JSON-able data)` pairs. Never raise on odd output: log a warning event.
4. `progress()` after every batch: `Going()` while the run goes on, or `Failed(error)` when
   what the agent said means the run must stop now (a resumed session that is not the one
   asked for, say). The supervisor then stops the child and the run fails with that error.
   Report it from translate() with `self.fail_now(error)`.
5. Once the child is gone: `finish_events()` (summaries), then `outcome(returncode)`, which
   is `Succeeded()` or `Failed(error)`. Override `exit_error(returncode)` to classify how the
   agent ended (None for success); a `fail_now()` verdict always wins.
6. `cleanup()` however the run ended, spawn failures included.

Optional: `abort`, a coroutine that asks the agent to stop before any signal (ACP's
session/cancel); `owns_stdio = True` with `converse(child, emit)` for agents that speak a
protocol over stdin/stdout (the supervisor then reads only stderr as lines); `usage()` and
`live_session()` for the status body.

A `SessionAdapter` is the other flavour: its run is one turn on a long-lived agent process
that sessions.py keeps per conversation. Its `progress()` may also say `TurnEnded(status)`
(the agent said the turn is over) or `Going(after_tool=True)` (only chatter since a tool call
finished, for the post-tool watchdog).

Every adapter passes the shared contract test (tests/test_adapter_contract.py): clean exit,
failure exit, spawn failure, cancel, garbage output.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import anyio

from ..errors import BadRequest
from ..failures import failure
from ..models import RunCreate, RunError, SessionRef, TokenUsage
from .credentials import Credentials, generic_credentials
from .jsonrpc import JsonRpcPeer, Notification

if TYPE_CHECKING:
    from .process import Child

Stream = Literal["stdout", "stderr"]
# (event name, data): data is JSON-able, or RawJSON text that is already serialised.
EventItem = tuple[str, Any]


@dataclass(frozen=True, slots=True)
class Going:
    """The run goes on. after_tool: only chatter since a tool call finished (sessions)."""

    after_tool: bool = False


@dataclass(frozen=True, slots=True)
class Succeeded:
    """The agent finished its work."""


@dataclass(frozen=True, slots=True)
class Failed:
    """The run failed (or must stop now, when progress() says so) with this error."""

    error: RunError


@dataclass(frozen=True, slots=True)
class TurnEnded:
    """A session's turn is over: status is the agent's word for how (completed, failed…)."""

    status: str


GOING = Going()
SUCCEEDED = Succeeded()
# What an adapter says about its run: while it runs (progress) and once it is over (outcome).
Outcome = Going | Succeeded | Failed | TurnEnded


class Adapter:
    """Base adapter: runs argv, turns every output line into a stdout/stderr event.

    Subclasses override the small steps: argv(), env(), translate(), outcome().
    """

    agent_id: ClassVar[str]
    # One line for docs and tool descriptions.
    description: ClassVar[str] = ""
    # What to tell a user whose machine lacks the agent's program.
    install_hint: ClassVar[str] = ""
    # Idle watchdog (ms) of a run that does not set idleTimeoutMs; None: no watchdog.
    default_idle_timeout_ms: ClassVar[int | None] = None
    # Whether the run options `model` and `sessionRef` mean anything to this agent.
    takes_model: ClassVar[bool] = False
    has_sessions: ClassVar[bool] = False
    # Whether a run must give `command` (the argv), and whether sessionRef.threadId must be a
    # UUID (requested_thread()): the OpenAPI document (openapi.py) says so per agent.
    needs_command: ClassVar[bool] = False
    uuid_threads: ClassVar[bool] = False
    # Set by adapters that can ask their agent to stop before any signal (ACP, app-server).
    abort: Callable[[], Awaitable[None]] | None = None
    # Set by adapters that speak a protocol over the child's stdin and stdout (ACP): RunService
    # then hands both pipes to converse() instead of feeding stdin() and reading stdout as
    # lines. stderr is still read as lines (translate()); spawning, the watchdog, the abort
    # hook and the signal ladder stay generic.
    owns_stdio: ClassVar[bool] = False

    def __init__(self, request: RunCreate) -> None:
        if request.model is not None and not self.takes_model:
            raise BadRequest(f"agentId {self.agent_id!r} does not take a 'model'")
        if request.sessionRef is not None and not self.has_sessions:
            raise BadRequest(f"agentId {self.agent_id!r} has no sessions to continue")
        self.request = request
        # The verdict of fail_now(): the run must stop, and fails with this error.
        self._stop_error: RunError | None = None
        # The agent session to continue: the run's sessionRef (an adapter checks its form),
        # else its conversation's last, through resume(); None starts a new one.
        self._resume: str | None = None

    def argv(self) -> list[str]:
        """The command line of the child."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """Variables the child gets on top of the daemon's allowlist."""
        return {**self.provider_env(), **self.request.env}

    # Provider credentials (credentials.py) ------------------------------------------------
    # What load_credentials() found; env() adds its variables from the daemon.
    credentials: Credentials | None = None
    # Whether credential_env() reads files (then it runs in a worker thread).
    reads_config: ClassVar[bool] = False

    def credential_env(self) -> Credentials:
        """The daemon's variables this agent's provider needs: --pass-env only, by default."""
        return generic_credentials(self.request.env)

    async def load_credentials(self) -> None:
        """Resolve credential_env() once, off the event loop; RunService calls it at create."""
        if self.reads_config:
            self.credentials = await anyio.to_thread.run_sync(self.credential_env)
        else:
            self.credentials = self.credential_env()

    def provider_env(self) -> dict[str, str]:
        """The credential variables to pass; AgentFailure if a required one is unset."""
        if self.credentials is None:
            self.credentials = self.credential_env()
        self.credentials.check()
        return self.credentials.env

    def secret_values(self) -> list[str]:
        """Values of the passed credential variables: the run's scrubber hides them."""
        return list(self.credentials.secrets) if self.credentials is not None else []

    def stdin(self) -> bytes | None:
        """What to write to the child's stdin before closing it; None for /dev/null."""
        return self.request.prompt.encode()

    async def converse(self, child: Child, emit: Callable[[list[EventItem]], None]) -> None:
        """Talk to the child over its stdin and stdout until the conversation is over.

        Only for owns_stdio adapters. emit(items) logs events, and every call (even with no
        items) counts as output for the idle watchdog. Returns once stdout is closed.
        """
        raise NotImplementedError

    def requested_thread(self, what: str) -> str | None:
        """The agent thread the run's sessionRef names, checked to be a UUID (what it is)."""
        thread = self.request.sessionRef.threadId if self.request.sessionRef else None
        if thread is None:
            return None
        try:
            uuid.UUID(thread)
        except ValueError:
            raise BadRequest(f"sessionRef.threadId must be {what} (a UUID)") from None
        return thread

    def resume(self, ref: SessionRef) -> None:
        """Continue ref's session (a conversation's previous run) unless the run names one;
        before argv(). Only for agents with sessions."""
        if self.has_sessions and self._resume is None and ref.threadId is not None:
            self._resume = ref.threadId

    def live_session(self) -> str | None:
        """The session (thread) id the agent reported for this run, once it has."""
        return None

    def session_ref(self) -> SessionRef | None:
        """The session this run belongs to: the agent's, else the one it was to continue."""
        session = self.live_session() or self._resume
        return SessionRef(threadId=session) if session else None

    def translate(self, stream: Stream, lines: list[tuple[str, bool]]) -> list[EventItem]:
        """Turn a batch of output lines into events."""
        return [
            (stream, {"text": text, "partial": True} if partial else {"text": text})
            for text, partial in lines
        ]

    def fail_now(self, error: RunError) -> None:
        """Say the run must stop now and fail with error (the first verdict stands)."""
        if self._stop_error is None:
            self._stop_error = error

    def progress(self) -> Going | Failed | TurnEnded:
        """Where the run stands after the latest batch: Going, or Failed (stop it now)."""
        return GOING if self._stop_error is None else Failed(self._stop_error)

    def cleanup(self) -> None:
        """Remove what the adapter made for its child (private config files); idempotent.

        Called once the run is over however it ended, spawn failures included.
        """

    def usage(self) -> TokenUsage | None:
        """Tokens the run used so far, if the agent reports them (shown on the status body)."""
        return None

    def finish_events(self) -> list[EventItem]:
        """Events to log once the child is gone, before the run's outcome (summaries)."""
        return []

    def outcome(self, returncode: int) -> Succeeded | Failed:
        """How the run ended, once its child exited with returncode (negative: a signal)."""
        error = self._stop_error or self.exit_error(returncode)
        return SUCCEEDED if error is None else Failed(error)

    def exit_error(self, returncode: int) -> RunError | None:
        """The error of a run whose child exited by itself with returncode, or None."""
        if returncode == 0:
            return None
        if returncode < 0:
            return failure(
                "AGENT_EXITED", f"The agent was killed by signal {-returncode}.", retryable=True
            )
        return failure("AGENT_EXITED", f"The agent exited with code {returncode}.")


class SessionAdapter(Adapter):
    """An adapter whose run is one turn on a live session (a long-lived agent process).

    sessions.py spawns argv() with env() once per session and calls open_session(); each
    run then calls start_turn(), feeds every notification batch to translate_batch() and
    every request of the agent to answer(), until progress() says TurnEnded. abort_turn()
    asks the agent to end the turn early (cancel and the watchdogs call it before any signal).
    """

    # The shorter silence allowed right after a tool call finished (ms); None: no such limit.
    default_post_tool_timeout_ms: ClassVar[int | None] = None
    # The agent's id of the turn under way, once it has one (shown in interrupt events).
    turn_id: str | None = None

    def turn_status(self) -> str | None:
        """How the turn ended, once progress() says TurnEnded; None before."""
        state = self.progress()
        return state.status if isinstance(state, TurnEnded) else None

    def wanted_thread(self) -> str | None:
        """The agent thread this run asked to continue, for a session that has none yet."""
        return None

    def process_config(self) -> object:
        """What a session's process is set up with besides its env (a tool bundle, say): a
        run that wants something else gets a fresh process on the same thread."""
        return None

    def notes(self) -> list[EventItem]:
        """Events to log as the turn opens (warnings about the run's options)."""
        return []

    def stdin(self) -> bytes | None:
        """The prompt goes over the protocol, not stdin."""
        return None

    async def open_session(self, peer: JsonRpcPeer, thread_id: str | None) -> str:
        """Handshake on a fresh process; resume thread_id (or start a thread); its id."""
        raise NotImplementedError

    async def ping(self, peer: JsonRpcPeer) -> None:
        """Prove a reused process still answers before a turn is sent to it."""

    async def start_turn(self, peer: JsonRpcPeer, thread_id: str) -> None:
        """Send the run's prompt as a new turn of the thread."""
        raise NotImplementedError

    def translate_batch(self, batch: list[Notification]) -> list[EventItem]:
        """Turn a batch of the agent's notifications into events."""
        raise NotImplementedError

    async def answer(self, method: str, params: Any) -> tuple[Any, list[EventItem]]:
        """The result for a request the agent sent (a jsonrpc.RpcError to refuse it), and
        the events that record the decision."""
        raise NotImplementedError

    async def abort_turn(self, peer: JsonRpcPeer, thread_id: str) -> None:
        """Ask the agent to end the current turn now."""
        raise NotImplementedError

    def session_lost(self, garbage: str | None, returncode: int | None, stderr: str = "") -> None:
        """The session's process died (returncode, stderr tail) or spoke garbage first."""
