"""Turns for replay: readers catching up on a log take bounded steps within a loop budget.

Live delivery and replay share one event loop. A crowd joining a busy run at after=0 would
otherwise put hundreds of catch-up reads in every pass of the loop, and a published batch
would wait behind all of them. A replaying reader instead asks for a turn before each slice
(at most ~256 KB of frames) and reports what the slice cost. Each pass of the loop grants
as many turns as fit a budget: as much loop time as everything else took in the pass
before (so replay gets at most half the loop while live readers are busy), at least
MIN_BUDGET (so a quiet daemon replays at full speed), at most MAX_BUDGET (the most a live
event can wait behind replay in one pass). Reads that must leave the loop (a log this
process did not write) share a small thread limiter, so they cannot flood the GIL either.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import anyio

# Loop time replay may take in one pass, in seconds: the least and the most.
MIN_BUDGET = 0.001
MAX_BUDGET = 0.008
# A slice that seems to cost more than this waited on its client's socket: not loop time.
_MAX_CHARGE = 0.002
# Worker threads replay reads may use at once.
REPLAY_THREADS = 2


class ReplayTurns:
    """A queue of replay steps, oldest first, granted per pass of the loop within a budget."""

    def __init__(self, min_budget: float = MIN_BUDGET, max_budget: float = MAX_BUDGET) -> None:
        self.min_budget = min_budget
        self.max_budget = max(min_budget, max_budget)
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._granting = False
        self._last_pass = 0.0
        self._spent = 0.0  # replay's loop time since the last grant
        self._cost = 0.0005  # a slice's loop time, moving average (a cautious start)
        self.granted = 0  # turns handed out, for tests
        self.passes = 0  # passes that granted turns, for tests

    def charge(self, seconds: float) -> None:
        """A granted slice took this long on the loop (its read, framing and send)."""
        seconds = min(seconds, _MAX_CHARGE)
        self._spent += seconds
        self._cost += (seconds - self._cost) / 8

    async def turn(self) -> None:
        """Wait for this reader's next turn (never granted in the pass that asked)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new loop (tests, restarts): forget the old one's queue
            self._loop, self._waiting, self._granting = loop, deque(), False
        future: asyncio.Future[None] = loop.create_future()
        self._waiting.append(future)
        if not self._granting:
            self._granting = True
            self._last_pass, self._spent = time.perf_counter() - self.max_budget, 0.0
            loop.call_soon(self._grant)
        await future

    def budget(self) -> int:
        """Turns this pass may grant: the pass before's other work, bounded, over a slice."""
        now = time.perf_counter()
        other = now - self._last_pass - self._spent
        self._last_pass, self._spent = now, 0.0
        budget = min(self.max_budget, max(self.min_budget, other))
        return max(1, int(budget / max(self._cost, 1e-6)))

    def _grant(self) -> None:
        allowed = self.budget()
        granted = 0
        while self._waiting and granted < allowed:
            future = self._waiting.popleft()
            if not future.done():  # a cancelled reader's turn goes to the next one
                future.set_result(None)
                granted += 1
        self.granted += granted
        self.passes += 1
        if self._waiting and self._loop is not None:
            self._loop.call_soon(self._grant)  # the rest wait for the next pass
        else:
            self._granting = False

    @property
    def waiting(self) -> int:
        """Readers waiting for a turn now."""
        return sum(1 for future in self._waiting if not future.done())


turns = ReplayTurns()
_threads: dict[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = {}


def thread_limiter() -> anyio.CapacityLimiter:
    """The limiter that replay reads off the loop share (one per event loop)."""
    loop = asyncio.get_running_loop()
    limiter = _threads.get(loop)
    if limiter is None:
        for old in [o for o in _threads if o.is_closed()]:
            del _threads[old]
        limiter = _threads[loop] = anyio.CapacityLimiter(REPLAY_THREADS)
    return limiter


__all__ = ["MAX_BUDGET", "MIN_BUDGET", "ReplayTurns", "thread_limiter", "turns"]
