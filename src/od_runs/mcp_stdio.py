"""`od-runs mcp` on stdin/stdout: nothing but protocol on stdout, exit on EOF or when idle.

The SDK's stdio transport reads stdin in a worker thread, which a cancel cannot interrupt:
an idle exit would wait for the next line that never comes. Reading a pipe through the event
loop instead makes the exit immediate. The SDK still owns stdout (it points fd 1 at stderr
while serving, so stray output never reaches the wire).
"""

from __future__ import annotations

import logging
import os
import selectors
import stat
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from mcp.server.context import ServerRequestContext
from mcp.server.stdio import stdio_server

log = logging.getLogger("od_runs.mcp")

# Bytes read from stdin at once.
READ_CHUNK = 1 << 16
# A JSON-RPC message longer than this is refused rather than buffered without end.
MAX_LINE = 64 << 20


class LineTooLong(ValueError):
    """A stdin line exceeded MAX_LINE bytes."""


class FdLines:
    """Lines from a pipe, socket or terminal, read on the event loop (cancellable)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = bytearray()
        self._scanned = 0

    @staticmethod
    def pollable(fd: int) -> bool:
        """True if fd can be watched by the event loop (not a regular file)."""
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            return False
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
            return False
        # Some character devices cannot be watched (epoll refuses /dev/null with EPERM): ask
        # the same kind of selector the event loop uses rather than guess from the mode.
        with selectors.DefaultSelector() as selector:
            try:
                selector.register(fd, selectors.EVENT_READ)
            except (OSError, ValueError):
                return False
        return True

    def __aiter__(self) -> FdLines:
        return self

    async def __anext__(self) -> str:
        while True:
            end = self._buffer.find(b"\n", self._scanned)
            if end >= 0:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                self._scanned = 0
                return line.decode("utf-8", errors="replace")
            self._scanned = len(self._buffer)
            if self._scanned > MAX_LINE:
                raise LineTooLong(f"a stdin line is longer than {MAX_LINE} bytes")
            await anyio.wait_readable(self._fd)
            chunk = os.read(self._fd, READ_CHUNK)
            if not chunk:
                if self._buffer:
                    rest = bytes(self._buffer)
                    self._buffer.clear()
                    return rest.decode("utf-8", errors="replace")
                raise StopAsyncIteration
            self._buffer += chunk


class Activity:
    """When the client last did anything, and how many of its requests are in flight."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.in_flight = 0

    async def middleware(
        self,
        ctx: ServerRequestContext[Any, Any],
        call_next: Callable[[ServerRequestContext[Any, Any]], Awaitable[Any]],
    ) -> Any:
        """Server middleware: count every inbound message as activity."""
        self.in_flight += 1
        try:
            return await call_next(ctx)
        finally:
            self.in_flight -= 1
            self.last = time.monotonic()


async def exit_when_idle(
    seconds: float, activity: Activity, busy: Callable[[], bool], scope: anyio.CancelScope
) -> None:
    """Cancel scope once nothing happened for `seconds`: no message, no request, no watch."""
    while True:
        quiet = time.monotonic() - activity.last
        if activity.in_flight or busy():
            await anyio.sleep(seconds)
        elif quiet >= seconds:
            log.warning("no MCP activity for %g s: exiting (--idle-exit)", seconds)
            scope.cancel()
            return
        else:
            await anyio.sleep(seconds - quiet)


async def serve_stdio(
    run: Callable[[Any, Any], Awaitable[None]],
    *,
    idle_exit: float | None,
    activity: Activity,
    busy: Callable[[], bool],
) -> None:
    """Serve run(read_stream, write_stream) on stdio until stdin closes or the idle exit."""
    stdin: Any = FdLines(0) if FdLines.pollable(0) else None
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            if idle_exit:
                tg.start_soon(exit_when_idle, idle_exit, activity, busy, scope)
            async with stdio_server(stdin=stdin) as (read_stream, write_stream):
                await run(read_stream, write_stream)
            tg.cancel_scope.cancel()
