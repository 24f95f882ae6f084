"""Fan-out of one run's live events to its readers: shared batches, bounded backlogs.

A published batch is encoded to SSE bytes once and the same bytes go to every reader, never
work per event. A reader parked at the head with a direct sink (sse_sink.py) costs one
socket write per batch, made by the publisher; any other reader a wake-up and a write
through ASGI. With many readers, events are published in short windows: the first event
after a quiet spell goes out at once, and a burst behind it goes out together once the
window has passed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

from .eventlog import LogLine
from .sse_sink import DirectSink

# Bytes of events a live reader may have pending before it is dropped (it resumes from the
# log with its cursor): bounds memory per reader, and sets how far behind a reader may fall.
SUBSCRIBER_LIMIT = int(os.environ.get("OD_RUNS_SUBSCRIBER_BUFFER", 8 * 1024 * 1024))
# The window between publishes grows with the live readers, so that fan-out cannot take the
# whole loop. A publish costs each reader one socket write (about 8 us on loopback, most of
# it the kernel's), so at 50 us per reader fan-out takes at most a sixth of the loop. With 500
# readers joining a run at 2,000 events/s, a window of 20 us (up to 10 ms) let fan-out take
# half the loop, and the last viewer took 4.4 s to catch up instead of 2.0 s; the fan-out
# p99 of 500 readers was 20-56 ms with it and 40 ms with this one (bench/join.py,
# bench/fanout.py, same hour, before accept.py)...
WINDOW_PER_READER = 50e-6
# ...up to this bound on the delay it adds to an event (reached at 800 readers). At 1,000
# readers on 2 cores the clients' own reads are the larger cost: 25 ms gave them a read per
# reader 40 times a second and a steady p99 of 90-100 ms; 40 ms gives 67-73 ms.
MAX_WINDOW = 0.040


class Batch:
    """Events published together, with their SSE frames encoded once for every reader."""

    __slots__ = ("_chunk", "at", "frames", "lines")

    def __init__(self, lines: list[LogLine], at: float = 0.0) -> None:
        self.lines = lines
        self.frames = b"".join([line.frame for line in lines])
        self.at = at  # monotonic time of the publish
        self._chunk: bytes | None = None

    @property
    def chunk(self) -> bytes:
        """The frames as one HTTP/1.1 chunk, framed once for every direct reader."""
        if self._chunk is None:
            self._chunk = b"%x\r\n%b\r\n" % (len(self.frames), self.frames)
        return self._chunk

    @property
    def first_id(self) -> int:
        """The id of the batch's first event."""
        return self.lines[0].id

    @property
    def last(self) -> LogLine:
        """The batch's last event."""
        return self.lines[-1]


class Subscriber:
    """One live reader of a run: a bounded backlog of batches and a wake-up."""

    def __init__(self, limit: int, hub: Fanout | None = None) -> None:
        self._hub = hub
        self.taking = False  # past its replay: it waits in take() for each publish
        self._batches: list[Batch] = []
        self._pending = 0
        self._limit = limit
        # asyncio's Event, not anyio's: this wait runs per reader per batch, and anyio looks up
        # the running backend on every Event it creates.
        self._wake = asyncio.Event()
        self.dropped = False
        self.closed = False
        # Called once on drop: a reader stuck writing to a full socket never calls take().
        self.on_drop: Callable[[], None] | None = None
        # The reader's socket, written by push() itself while the reader is parked in take()
        # with nothing pending: a write then cannot overtake one of the reader's own.
        self.sink: DirectSink | None = None
        self._parked = False
        self.sent = 0  # the last event id the reader (or push on its behalf) has sent
        self.ended = False  # push wrote the `end` event directly
        self.direct_writes = 0  # batches push wrote itself, for tests

    def push(self, batch: Batch) -> None:
        """Write a batch to a parked reader's socket, queue it, or drop the subscriber if it
        is too far behind."""
        if self.dropped:
            return
        sink = self.sink
        if (
            sink is not None
            and self._parked
            and not self._batches
            and batch.lines[0].id > self.sent
            and sink.writable()
        ):
            sink.write(batch.chunk, batch.frames, batch.at)
            self.direct_writes += 1
            self.sent = batch.lines[-1].id
            if batch.lines[-1].event == "end":
                self.ended = True
                self.close()
            return
        size = len(batch.frames)
        if self._pending + size > self._limit:
            self.drop()
            return
        self._batches.append(batch)
        self._pending += size
        self._wake.set()

    def drop(self) -> None:
        """Disconnect this reader; it resumes from the log with its cursor."""
        if self.dropped:
            return
        self.dropped = True
        self._batches, self._pending = [], 0
        self._wake.set()
        if self.on_drop is not None:
            self.on_drop()

    def close(self) -> None:
        """End the live part: take() returns empty and the reader goes to the run's end."""
        self.closed = True
        self._wake.set()

    async def take(self, sent: int = 0) -> list[Batch]:
        """Everything pending, in order; waits if nothing is. Empty once dropped or closed.

        sent is the last event id the reader has sent; while it waits, batches past it may
        be written straight to its sink, and `sent` then says how far they went.
        """
        if not self.taking:
            self.taking = True
            if self._hub is not None and self in self._hub.subscribers:
                self._hub.taking += 1
        self.sent = max(self.sent, sent)
        if not self._batches and not self.closed:
            self._parked = True
            try:
                await self._wake.wait()
            finally:
                self._parked = False
        self._wake.clear()
        batches, self._batches, self._pending = self._batches, [], 0
        return [] if self.dropped else batches


class Fanout:
    """The live readers of one run and the events waiting for the next publish."""

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        # Subscribers that are live (waiting in take()); one still replaying costs a publish
        # only an append, so it does not widen the window.
        self.taking = 0
        self._outbox: list[LogLine] = []
        self._timer: asyncio.TimerHandle | None = None
        self._last_publish = float("-inf")

    def subscribe(self, limit: int | None = None) -> Subscriber:
        """A new reader; it gets every batch published from now on."""
        subscriber = Subscriber(SUBSCRIBER_LIMIT if limit is None else limit, self)
        self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Forget a reader."""
        if subscriber in self.subscribers:
            self.subscribers.discard(subscriber)
            if subscriber.taking:
                self.taking -= 1

    def offer(self, lines: list[LogLine]) -> None:
        """Events just logged: publish now, or with the window's batch if one is open."""
        if not self.subscribers:
            return  # a reader that comes later replays these from the log
        self._outbox.extend(lines)
        if lines[-1].event == "end":
            self.flush()  # nothing follows the end, so nothing is worth waiting for
            return
        if self._timer is not None:
            return
        window = min(MAX_WINDOW, self.taking * WINDOW_PER_READER)
        delay = self._last_publish + window - time.monotonic()
        if delay <= 0:
            self.flush()
        else:
            # A timer, not a task: a task per run would cost a wake-up of its own per batch.
            self._timer = asyncio.get_running_loop().call_later(delay, self.flush)

    def flush(self) -> None:
        """Publish the waiting events to every reader now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._outbox:
            return
        self._last_publish = now = time.monotonic()
        batch = Batch(self._outbox, now)
        self._outbox = []
        for subscriber in list(self.subscribers):
            subscriber.push(batch)

    def close(self) -> None:
        """No more events: publish what waits, then end every reader's live part."""
        self.flush()
        for subscriber in list(self.subscribers):
            subscriber.close()


__all__ = ["SUBSCRIBER_LIMIT", "Batch", "Fanout", "Subscriber"]
