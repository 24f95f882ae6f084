"""The idle watchdog and the wall-clock limit: generic, so every adapter gets them.

Any output at all (stdout or stderr, a tool's progress included) resets the idle clock;
a run is never stopped for its total duration unless it asked for a `timeoutMs`.
"""

from __future__ import annotations

from typing import Literal

import anyio

from ..models import RunCreate

Expiry = Literal["stalled", "timeout"]


class Watchdog:
    """Says when a child has been silent for `idle` seconds or alive for `timeout` seconds."""

    def __init__(self, idle: float | None, timeout: float | None) -> None:
        self.idle = idle
        self.timeout = timeout
        self._started = self._last = anyio.current_time()

    @classmethod
    def for_run(cls, request: RunCreate, default_idle_ms: int | None) -> Watchdog:
        """The run's own limits; idleTimeoutMs null takes the adapter's default, 0 none."""
        idle_ms = default_idle_ms if request.idleTimeoutMs is None else request.idleTimeoutMs
        return cls(
            idle_ms / 1000 if idle_ms else None,
            request.timeoutMs / 1000 if request.timeoutMs else None,
        )

    def touch(self) -> None:
        """The child printed something: restart the idle clock."""
        self._last = anyio.current_time()

    async def expired(self) -> Expiry:
        """Return when a limit is reached (never, if the run has none)."""
        if self.idle is None and self.timeout is None:
            await anyio.sleep_forever()
        while True:
            now = anyio.current_time()
            deadlines: list[float] = []
            if self.timeout is not None:
                if now >= self._started + self.timeout:
                    return "timeout"
                deadlines.append(self._started + self.timeout)
            if self.idle is not None:
                if now >= self._last + self.idle:
                    return "stalled"
                deadlines.append(self._last + self.idle)
            # touch() only moves the idle deadline later, so waking at the earliest is enough.
            await anyio.sleep(min(deadlines) - now)
