"""A child's stdout or stderr on the event loop: pulled with receive(), or pushed as it comes.

Reading a pipe through asyncio's StreamReader costs a task wake-up per read: the pipe's
callback fills a buffer and wakes the reading task, which copies the bytes out. A run that
prints a few lines at a time pays that for every few lines. `PipeReader.deliver_to` instead
hands each read to a plain callback right in the pipe's callback (lines.pump's LineSplitter
and the lifecycle's synchronous append), and the task that asked only waits for the end.
`receive()` stays for readers that need to await between reads (the JSON-RPC adapters).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import IO, cast

import anyio
from anyio.abc import ByteReceiveStream

# Bytes held for a receive() caller before the pipe stops being read (the child then blocks
# on a full pipe instead of the daemon holding its output).
HIGH_WATER = 256 * 1024

OnData = Callable[[bytes], None]


class _PipeProtocol(asyncio.Protocol):
    """Holds what the pipe gave until receive() takes it, or passes it to a push callback."""

    def __init__(self) -> None:
        self.transport: asyncio.ReadTransport | None = None
        self.chunks: deque[bytes] = deque()
        self.held = 0
        self.eof = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.push: OnData | None = None
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.ReadTransport, transport)

    def data_received(self, data: bytes) -> None:
        push = self.push
        if push is not None:
            try:
                push(data)
            except BaseException as exc:  # raised to deliver_to's caller, as a read would be
                self.push = None
                self.error = exc
                self._pause()
                self.wake()
            return
        self.chunks.append(data)
        self.held += len(data)
        if self.held > HIGH_WATER:
            self._pause()
        self.wake()

    def eof_received(self) -> bool:
        self.eof = True
        self.wake()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if exc is not None and self.error is None:
            self.error = exc
        self.wake()

    def _pause(self) -> None:
        if not self.paused and self.transport is not None and not self.transport.is_closing():
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        """Read the pipe again once the held bytes are taken."""
        if self.paused and self.held <= HIGH_WATER // 2 and self.transport is not None:
            self.paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    def wake(self) -> None:
        """Wake the reader waiting in wait(), if any."""
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Until something changes: data, the end, an error."""
        waiter = asyncio.get_running_loop().create_future()
        self.waiter = waiter
        try:
            await waiter
        finally:
            if self.waiter is waiter:
                self.waiter = None


class PipeReader(ByteReceiveStream):
    """A child's stdout or stderr as an anyio byte stream that can also push its reads."""

    def __init__(self, protocol: _PipeProtocol) -> None:
        self._protocol = protocol
        self._closed = False

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """The next bytes the child wrote; EndOfStream once it closed the pipe."""
        p = self._protocol
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            if p.chunks:
                chunk = p.chunks.popleft()
                if len(chunk) > max_bytes:
                    chunk, rest = chunk[:max_bytes], chunk[max_bytes:]
                    p.chunks.appendleft(rest)
                p.held -= len(chunk)
                p.resume()
                return chunk
            if p.error is not None:
                raise p.error
            if p.eof:
                raise anyio.EndOfStream
            await p.wait()

    async def deliver_to(self, on_data: OnData) -> None:
        """Call on_data with each read as it arrives, until the child closes the pipe.

        on_data runs in the pipe's callback and must not block; what it raises is raised
        here. Bytes already held are delivered first, in order.
        """
        p = self._protocol
        if self._closed:
            raise anyio.ClosedResourceError
        while p.chunks:
            chunk = p.chunks.popleft()
            p.held -= len(chunk)
            on_data(chunk)
        p.push = on_data
        p.resume()
        try:
            while p.error is None and not p.eof and not self._closed:
                await p.wait()
        finally:
            p.push = None
        if p.error is not None:
            raise p.error
        if self._closed:
            raise anyio.ClosedResourceError

    async def aclose(self) -> None:
        """Stop reading: later receives fail, and the pipe is closed."""
        self._closed = True
        p = self._protocol
        p.push = None
        p.wake()
        if p.transport is not None:
            p.transport.close()
        await anyio.lowlevel.checkpoint()


async def open_reader(loop: asyncio.AbstractEventLoop, pipe: IO[bytes]) -> PipeReader:
    """The read end of a pipe, watched by the running loop."""
    _, protocol = await loop.connect_read_pipe(_PipeProtocol, pipe)
    return PipeReader(protocol)


__all__ = ["HIGH_WATER", "PipeReader", "open_reader"]
