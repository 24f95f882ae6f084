"""The adapter interface: how to start an agent and how to read what it prints.

An adapter is one object per run. RunService calls, in this order: resume() (only for a run
that continues an agent session), argv() / env() / stdin() to spawn the child, translate()
for every batch of output lines, and once the child is gone, finish_events() and outcome().
Spawning, the idle watchdog, timeouts and the signal ladder are generic (runs.py,
process.py, watchdog.py): an adapter only knows its agent's command line and output.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Literal

from ..errors import BadRequest
from ..failures import failure
from ..models import RunCreate, RunError, SessionRef

Stream = Literal["stdout", "stderr"]
# (event name, data): data is JSON-able, or RawJSON text that is already serialised.
EventItem = tuple[str, Any]


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
    # Set by adapters that can ask their agent to stop before any signal (ACP, app-server).
    abort: Callable[[], Awaitable[None]] | None = None

    def __init__(self, request: RunCreate) -> None:
        if request.model is not None and not self.takes_model:
            raise BadRequest(f"agentId {self.agent_id!r} does not take a 'model'")
        if request.sessionRef is not None and not self.has_sessions:
            raise BadRequest(f"agentId {self.agent_id!r} has no sessions to continue")
        self.request = request
        # Set by translate() when the run must stop now (the signal ladder follows).
        self.failure: RunError | None = None

    def argv(self) -> list[str]:
        """The command line of the child."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """Variables the child gets on top of the daemon's allowlist."""
        return dict(self.request.env)

    def stdin(self) -> bytes | None:
        """What to write to the child's stdin before closing it; None for /dev/null."""
        return self.request.prompt.encode()

    def resume(self, ref: SessionRef) -> None:
        """Continue this agent session instead of starting a new one (before argv())."""

    def session_ref(self) -> SessionRef | None:
        """The agent session this run belongs to, once known."""
        return None

    def translate(self, stream: Stream, lines: list[tuple[str, bool]]) -> list[EventItem]:
        """Turn a batch of output lines into events."""
        return [
            (stream, {"text": text, "partial": True} if partial else {"text": text})
            for text, partial in lines
        ]

    def finish_events(self) -> list[EventItem]:
        """Events to log once the child is gone, before the run's outcome (summaries)."""
        return []

    def outcome(self, returncode: int) -> RunError | None:
        """The error of a run whose child exited by itself with returncode, or None."""
        if returncode == 0:
            return None
        if returncode < 0:
            return failure(
                "AGENT_EXITED", f"The agent was killed by signal {-returncode}.", retryable=True
            )
        return failure("AGENT_EXITED", f"The agent exited with code {returncode}.")
