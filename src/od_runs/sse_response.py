"""The HTTP side of an SSE stream: headers, keep-alive pings, stalled and gone clients.

A live run may have hundreds of readers, each taking a write per published batch, so the
write path is one `send` with no lock, task or cancel scope around it. Everything slow (a
stalled socket, a vanished client, a shutting-down server) is watched by one companion
task per stream that wakes only on the client's disconnect, and one timer for pings.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import AsyncGenerator, Callable

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .sse_sink import DirectSink, Outlet, sink_for

# Browsers wait this long before reconnecting after the stream drops.
RETRY_MS = 1000
# A comment line this often keeps proxies and idle-timeouts from closing a quiet stream.
PING_SECONDS = float(os.environ.get("OD_RUNS_SSE_PING", "15"))
# A client that has not taken a frame for this long is treated as gone.
SEND_TIMEOUT = float(os.environ.get("OD_RUNS_SSE_SEND_TIMEOUT", "30"))
_PING = b": ping\n\n"
_PING_CHUNK = b"%x\r\n%b\r\n" % (len(_PING), _PING)

log = logging.getLogger("od_runs.sse")

FrameSource = Callable[[Outlet], AsyncGenerator[bytes, None]]


class EventStream(Response):
    """A `text/event-stream` response of the bytes an async iterator yields.

    frames gets an Outlet: a callback that tears the response down at once (a reader
    dropped for falling behind calls it, since a client that stopped reading leaves the
    response blocked in a socket write where no queue check runs: invariant 10), and the
    response's direct sink, if the server has one, for live batches (sse_sink.py).
    """

    media_type = "text/event-stream"

    def __init__(self, frames: FrameSource) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._source = frames
        self._scope: anyio.CancelScope | None = None
        self._cancelled = False
        self._send_started: float | None = None
        self._last_sent = float("-inf")
        self._sink: DirectSink | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._pinging: asyncio.Task[None] | None = None
        self._ended = False

    def cancel(self) -> None:
        """End the stream now, wherever it is."""
        self._cancelled = True
        if self._scope is not None:
            self._scope.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        self._sink = sink_for(scope)
        if scope.get("method") == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        # One task watches for the client leaving and a timer pings a quiet stream: a crowd
        # opening streams pays each one's setup on the loop that delivers the run, and task
        # groups (two per stream, as this was) cost more than everything else of the setup.
        loop = asyncio.get_running_loop()
        watcher = loop.create_task(self._watch(receive))
        self._arm(loop, send, PING_SECONDS * random.uniform(0.5, 1.0))
        _open_streams.add(self)
        try:
            with anyio.CancelScope() as cancel_scope:
                self._scope = cancel_scope
                if self._cancelled:
                    cancel_scope.cancel()
                await self._stream(send)
        finally:
            self._ended = True
            _open_streams.discard(self)
            watcher.cancel()
            if self._timer is not None:
                self._timer.cancel()
            if self._pinging is not None:
                self._pinging.cancel()
        if self._send_started is None:
            # Not stuck in a write: end the body cleanly. A reader cancelled mid-write is
            # not read from; returning unfinished makes uvicorn close its socket.
            with anyio.move_on_after(1, shield=True):
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _stream(self, send: Send) -> None:
        frames = self._source(Outlet(self.cancel, self._sink))
        try:
            sink = self._sink
            async for chunk in frames:
                if sink is not None and sink.writable():
                    # Straight to the socket (a replay slice is up to 256 KB): no ASGI chain,
                    # and no copy to frame it as a chunk. A socket that fills up pauses the
                    # sink, and the next write waits in send as any other would.
                    sink.write_chunk(chunk)
                    self._last_sent = time.monotonic()
                    continue
                self._send_started = time.monotonic()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                self._send_started = None
                self._last_sent = time.monotonic()
        finally:
            if self._sink is not None:
                self._sink.open = False  # the body's last chunk comes next: nothing after it
            # A cancel that lands in send leaves the generator at a yield: close it here so
            # its cleanup (detaching the reader) runs now, not whenever it is collected.
            with anyio.CancelScope(shield=True):
                await frames.aclose()

    async def _watch(self, receive: Receive) -> None:
        """Stop the stream when the client goes."""
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except Exception as exc:  # the server's receive failing is the client gone too
            log.debug("SSE receive failed: %r", exc)
        self.cancel()

    def _arm(self, loop: asyncio.AbstractEventLoop, send: Send, delay: float) -> None:
        if not self._ended:
            self._timer = loop.call_later(delay, self._ping_due, loop, send)

    def _ping_due(self, loop: asyncio.AbstractEventLoop, send: Send) -> None:
        """Ping a quiet stream, give up on a stalled one (the keep-alive timer's callback)."""
        # The first wait was drawn at random, so that streams opened together (a reconnect
        # storm) ping at spread-out moments rather than all in one pass of the loop: a ping
        # is a socket write, tens of microseconds each, and thousands at once stall the loop.
        self._timer = None
        now = time.monotonic()
        started = self._send_started
        if started is not None:  # a write is under way: is it stuck?
            if now - started > SEND_TIMEOUT:
                self.cancel()
            else:
                self._arm(loop, send, PING_SECONDS)
            return
        last = self._last_sent
        if self._sink is not None:
            last = max(last, self._sink.written_at)
        quiet = now - last
        if quiet < PING_SECONDS:  # frames went out lately: the stream is not idle
            self._arm(loop, send, PING_SECONDS - quiet)
        elif self._sink is not None and self._sink.writable():
            # No write of the stream's own is pending (the socket is not back-pressured)
            # and the loop is single-threaded: a whole chunk here lands between frames.
            self._sink.write(_PING_CHUNK, _PING, now)
            self._arm(loop, send, PING_SECONDS)
        else:  # a ping through send may block on the client: in a task of its own
            self._pinging = loop.create_task(self._ping(loop, send))

    async def _ping(self, loop: asyncio.AbstractEventLoop, send: Send) -> None:
        with anyio.move_on_after(SEND_TIMEOUT) as ping:
            await send({"type": "http.response.body", "body": _PING, "more_body": True})
        self._pinging = None
        if ping.cancelled_caught:  # the client stopped reading while the run was quiet
            self.cancel()
        else:
            self._arm(loop, send, PING_SECONDS)


class _OpenStreams:
    """Every stream this process serves, so a shutting-down server can end them.

    Uvicorn waits for open responses before it shuts the app down; a stream that follows a
    run to its end would hold shutdown up for the run's whole length.
    """

    def __init__(self) -> None:
        self._streams: set[EventStream] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closing = False

    def add(self, stream: EventStream) -> None:
        self._loop = asyncio.get_running_loop()
        self._streams.add(stream)
        if self.closing:
            stream.cancel()

    def discard(self, stream: EventStream) -> None:
        self._streams.discard(stream)

    def __len__(self) -> int:
        return len(self._streams)

    def close_all(self) -> None:
        """End every open stream; safe to call from a signal handler or another thread."""
        self.closing = True
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._cancel_all)

    def _cancel_all(self) -> None:
        for stream in list(self._streams):
            stream.cancel()


_open_streams = _OpenStreams()


def open_stream_count() -> int:
    """How many SSE streams this process is serving."""
    return len(_open_streams)


def close_open_streams() -> None:
    """End every SSE stream of this process (the server is shutting down)."""
    _open_streams.close_all()


__all__ = [
    "PING_SECONDS",
    "RETRY_MS",
    "SEND_TIMEOUT",
    "EventStream",
    "close_open_streams",
    "open_stream_count",
]
