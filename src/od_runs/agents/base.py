"""The adapter interface: how to start an agent and how to read what it prints."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Literal

from ..models import RunCreate, RunError

Stream = Literal["stdout", "stderr"]
# (event name, data): data is JSON-able, or RawJSON text that is already serialised.
EventItem = tuple[str, Any]


class Adapter:
    """Base adapter: runs argv, turns every output line into a stdout/stderr event.

    Subclasses override the small steps: argv(), env(), translate(), outcome().
    """

    agent_id: ClassVar[str]
    # Set by adapters that can ask their agent to stop before any signal (ACP, app-server).
    abort: Callable[[], Awaitable[None]] | None = None

    def __init__(self, request: RunCreate) -> None:
        self.request = request

    def argv(self) -> list[str]:
        """The command line of the child."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """Variables the child gets on top of the daemon's allowlist."""
        return dict(self.request.env)

    def stdin(self) -> bytes | None:
        """What to write to the child's stdin before closing it; None for /dev/null."""
        return self.request.prompt.encode()

    def translate(self, stream: Stream, lines: list[tuple[str, bool]]) -> list[EventItem]:
        """Turn a batch of output lines into events."""
        return [
            (stream, {"text": text, "partial": True} if partial else {"text": text})
            for text, partial in lines
        ]

    def outcome(self, returncode: int) -> RunError | None:
        """The error of a run whose child exited by itself with returncode, or None."""
        if returncode == 0:
            return None
        if returncode < 0:
            return RunError(
                code="AGENT_EXITED",
                message=f"The agent was killed by signal {-returncode}.",
                retryable=True,
            )
        return RunError(
            code="AGENT_EXITED",
            message=f"The agent exited with code {returncode}.",
            retryable=False,
        )
