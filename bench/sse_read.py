"""The raw HTTP/1.1 SSE reader every bench client builds on (asyncio only, starts fast).

A protocol, not a stream: the cheapest way for hundreds of readers to share a core. It
splits what arrives into whole frames (a TCP read can cut one, hence the carry) without
copying the read, counts the events, closes on `end`, and hands each read to on_frames to
measure what it wants.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import TypeVar, cast

_EVENT = b"\nevent: "
_END = b"\nevent: end\n"
P = TypeVar("P", bound=asyncio.BaseProtocol)


class Read:
    """The whole frames of one read: `head` (a frame the previous read began, completed by
    this one; small) then body[start:end], a slice of the read itself that is never copied.

    On 2 cores the clients of a 1,000-viewer bench share the machine with the daemon: three
    copies of every catch-up read (joining the carry, cutting the frames, keeping the rest)
    were CPU the daemon did not get.
    """

    __slots__ = ("body", "end", "head", "start")

    def __init__(self, head: bytes, body: bytes, start: int, end: int) -> None:
        self.head, self.body, self.start, self.end = head, body, start, end

    def first(self, pattern: re.Pattern[bytes]) -> re.Match[bytes] | None:
        """The first match of pattern in the frames."""
        return pattern.search(self.head) or pattern.search(self.body, self.start, self.end)

    def last(self, pattern: re.Pattern[bytes], marker: bytes) -> re.Match[bytes] | None:
        """pattern matched at the last occurrence of marker (its first bytes) in the frames."""
        at = self.body.rfind(marker, self.start, self.end)
        if at >= 0:
            return pattern.match(self.body, at, self.end)
        at = self.head.rfind(marker)
        return pattern.match(self.head, at) if at >= 0 else None

    def opening(self, size: int = 4096) -> bytes:
        """The first `size` bytes or so of the frames (a small copy), to look at the first event."""
        return self.head + self.body[self.start : self.start + size]

    def __contains__(self, needle: bytes) -> bool:
        return needle in self.head or self.body.find(needle, self.start, self.end) >= 0


def factory(protocol: P) -> Callable[[], P]:
    """A protocol factory that returns this one protocol (create_connection wants one)."""
    return lambda: protocol


class FrameReader(asyncio.Protocol):
    """Sends one GET, then counts the events of each read and stops at `end`."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.events = 0
        self.ended = False
        self.carry = b""
        self.done = asyncio.Event()

    def on_frames(self, read: Read, count: int, now: float) -> None:
        """A read of `count` whole frames at wall-clock time `now` (override to measure)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport, but they write like one.
        self.transport = cast(asyncio.WriteTransport, transport)
        self.transport.write(self.request)

    def data_received(self, chunk: bytes) -> None:
        now = time.time()
        carry = self.carry
        # Where the first frame that ends in this read ends (a TCP read can cut one, and
        # even its closing blank line).
        if carry.endswith(b"\n") and chunk.startswith(b"\n"):
            first_end = 1
        else:
            found = chunk.find(b"\n\n")
            if found < 0:
                self.carry = carry + chunk
                return
            first_end = found + 2
        end = max(first_end, chunk.rfind(b"\n\n") + 2)
        head = carry + chunk[:first_end] if carry else b""
        start = first_end if carry else 0
        self.carry = chunk[end:]
        count = head.count(_EVENT) + chunk.count(_EVENT, start, end)
        if not count:
            return
        self.events += count
        read = Read(head, chunk, start, end)
        self.on_frames(read, count, now)
        if _END in read:
            self.ended = True
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.done.set()


class LatencyReader(FrameReader):
    """A reader that dates each read by the oldest stamp in it (stamp() of the read's bytes)
    and samples its latency once measure_from[0] is set."""

    def __init__(
        self,
        request: bytes,
        measure_from: list[float],
        done: asyncio.Event,
        stamp: Callable[[bytes], float | None],
    ) -> None:
        super().__init__(request)
        self.measure_from = measure_from
        self.done = done
        self.stamp = stamp
        self.samples: list[tuple[float, int]] = []  # (latency s, events it covers)

    def on_frames(self, read: Read, count: int, now: float) -> None:
        sent = self.stamp(read.opening()) if self.measure_from[0] else None
        # The oldest event of a read waited longest: charging its latency to every event of
        # the read over-states the tail, never under-states it.
        if sent is not None and sent >= self.measure_from[0]:
            self.samples.append((now - sent, count))


async def connect_readers(
    port: int, run_id: str, after: int, count: int, stamp: Callable[[bytes], float | None]
) -> list[LatencyReader]:
    """count readers of a run from `after`; once all stream (30 s at most), latency counts
    for events stamped from a beat later on."""
    loop = asyncio.get_running_loop()
    request = (
        f"GET /api/runs/{run_id}/events?after={after} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()
    measure_from = [0.0]
    readers = []
    for _ in range(count):
        reader = LatencyReader(request, measure_from, asyncio.Event(), stamp)
        await loop.create_connection(factory(reader), "127.0.0.1", port)
        readers.append(reader)
    deadline = time.monotonic() + 30
    while sum(1 for r in readers if r.events) < count and time.monotonic() < deadline:  # noqa: ASYNC110 - a bench polls a count
        await asyncio.sleep(0.05)
    measure_from[0] = time.time() + 0.2
    return readers


__all__ = ["FrameReader", "LatencyReader", "Read", "connect_readers"]
