"""The idle watchdog and the wall-clock limit: generic, so every adapter gets them.

Any output at all (stdout or stderr, a tool's progress included) resets the idle clock;
a run is never stopped for its total duration unless it asked for a `timeoutMs`.
Adapters that can tell when a tool call finished (app-server) also get a shorter quiet
limit for the silence right after it, so a wedged agent cannot hold a turn for the whole
idle timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal

import anyio

from ..models import RunCreate

Expiry = Literal["stalled", "quiet", "timeout"]


def _loop_clock() -> Callable[[], float]:
    """The event loop's clock, the one anyio's deadlines use, read without anyio's lookup.

    touch() runs for every batch of output; anyio.current_time() finds the backend each time.
    """
    try:
        return asyncio.get_running_loop().time
    except RuntimeError:
        return anyio.current_time


class Watchdog:
    """Says when a child has been silent for `idle` seconds or alive for `timeout` seconds."""

    def __init__(
        self, idle: float | None, timeout: float | None, post_tool: float | None = None
    ) -> None:
        self.idle = idle
        self.timeout = timeout
        self.post_tool = post_tool
        self._clock = _loop_clock()
        self._started = self._last = self._clock()
        self._after_tool = False
        self._sooner = anyio.Event()

    @classmethod
    def for_run(cls, request: RunCreate, default_idle_ms: int | None) -> Watchdog:
        """The run's own limits; idleTimeoutMs null takes the adapter's default, 0 none."""
        idle_ms = default_idle_ms if request.idleTimeoutMs is None else request.idleTimeoutMs
        return cls(
            idle_ms / 1000 if idle_ms else None,
            request.timeoutMs / 1000 if request.timeoutMs else None,
        )

    @classmethod
    def for_turn(
        cls, request: RunCreate, default_idle_ms: int | None, default_post_tool_ms: int | None
    ) -> Watchdog:
        """for_run plus the post-tool quiet limit (postToolIdleTimeoutMs, same rules)."""
        watchdog = cls.for_run(request, default_idle_ms)
        ms = (
            default_post_tool_ms
            if request.postToolIdleTimeoutMs is None
            else request.postToolIdleTimeoutMs
        )
        watchdog.post_tool = ms / 1000 if ms else None
        return watchdog

    def touch(self, after_tool: bool = False) -> None:
        """The child printed something: restart the idle clock.

        after_tool: a tool call has finished and nothing has happened since but chatter,
        so the post-tool quiet limit applies until the agent shows progress again.
        """
        self._last = self._clock()
        if after_tool and not self._after_tool and self.post_tool is not None:
            self._sooner.set()  # the deadline moved earlier: wake expired() to see it
        self._after_tool = after_tool

    async def expired(self) -> Expiry:
        """Return when a limit is reached (never, if the run has none)."""
        if self.idle is None and self.timeout is None and self.post_tool is None:
            await anyio.sleep_forever()
        while True:
            now = self._clock()
            deadlines: list[float] = []
            if self.timeout is not None:
                if now >= self._started + self.timeout:
                    return "timeout"
                deadlines.append(self._started + self.timeout)
            if self.idle is not None:
                if now >= self._last + self.idle:
                    return "stalled"
                deadlines.append(self._last + self.idle)
            if self._after_tool and self.post_tool is not None:
                if now >= self._last + self.post_tool:
                    return "quiet"
                deadlines.append(self._last + self.post_tool)
            # touch() only moves a deadline later, unless it starts the post-tool limit:
            # then it sets _sooner, so waking at the earliest known deadline is enough.
            self._sooner = anyio.Event()
            with anyio.move_on_after(min(deadlines, default=now + 3600.0) - now):
                await self._sooner.wait()
