"""The raw HTTP/1.1 SSE reader every bench client builds on (asyncio only, starts fast).

A protocol, not a stream: the cheapest way for hundreds of readers to share a core. It
splits what arrives into whole frames (a TCP read can cut one, hence the carry), counts the
events, closes on `end`, and hands each read to on_frames to measure what it wants.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


class FrameReader(asyncio.Protocol):
    """Sends one GET, then counts the events of each read and stops at `end`."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.events = 0
        self.ended = False
        self.carry = b""
        self.done = asyncio.Event()

    def on_frames(self, whole: bytes, count: int, now: float) -> None:
        """A read of `count` whole frames at wall-clock time `now` (override to measure)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport  # uvloop's transports are not asyncio.Transport
        self.transport.write(self.request)

    def data_received(self, chunk: bytes) -> None:
        now = time.time()
        data = self.carry + chunk
        cut = data.rfind(b"\n\n")
        whole, self.carry = data[: cut + 2], data[cut + 2 :]
        count = whole.count(b"\nevent: ")
        if not count:
            return
        self.events += count
        self.on_frames(whole, count, now)
        if b"\nevent: end\n" in whole:
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

    def on_frames(self, whole: bytes, count: int, now: float) -> None:
        sent = self.stamp(whole) if self.measure_from[0] else None
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
        await loop.create_connection(lambda r=reader: r, "127.0.0.1", port)
        readers.append(reader)
    deadline = time.monotonic() + 30
    while sum(1 for r in readers if r.events) < count and time.monotonic() < deadline:  # noqa: ASYNC110 - a bench polls a count
        await asyncio.sleep(0.05)
    measure_from[0] = time.time() + 0.2
    return readers


__all__ = ["FrameReader", "LatencyReader", "connect_readers"]
