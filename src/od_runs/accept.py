"""Accepting a burst of connections at once, not one per pass of the event loop.

uvloop's libuv takes one connection off a listening socket per pass of the loop. On a busy
daemon a pass lasts milliseconds (a live batch written to hundreds of readers, replay
slices), so a crowd of 500 browsers opening a run waited in the kernel's backlog for 500
passes: the last one saw its first byte seconds after it connected. A Drain watches a
duplicate of each listening socket and, each time it is readable, accepts everything
waiting (up to BURST) and hands each connection to the server's own protocol, exactly as
the server would have.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

# Connections one wake-up accepts at most: bounds a pass even under a connection flood.
BURST = 32


class Drain:
    """Accepts what waits on a listening socket and connects it to new protocols."""

    def __init__(self, listener: socket.socket, protocol: Callable[[], asyncio.Protocol]) -> None:
        # A duplicate descriptor: the loop's server keeps the original registered.
        self._sock = socket.socket(fileno=socket.dup(listener.fileno()))
        self._sock.setblocking(False)
        self._protocol = protocol
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[object]] = set()
        self.accepted = 0  # connections this drain took, for tests
        self._loop.add_reader(self._sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(BURST):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # the backlog is empty (or the loop's server took the last one)
            except OSError:
                return  # out of descriptors, aborted connection: the server's turn next
            conn.setblocking(False)
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.accepted += 1
            task = self._loop.create_task(self._connect(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._protocol, conn)
        except OSError:
            conn.close()  # the client left before its connection was set up

    def close(self) -> None:
        """Stop accepting; connections already handed over are the server's."""
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()


__all__ = ["BURST", "Drain"]
