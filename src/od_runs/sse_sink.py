"""Direct writes of live SSE frames to a client's socket, past the ASGI send chain.

A published batch reaches every live reader of a run. Through ASGI that is, per reader, a
task wake-up, a resumed generator, four middleware `send` wrappers and uvicorn's own send:
about 20 us, which at 500 readers and a batch every 10 ms is the whole of one core. A
reader parked at the run's head instead has its batch written by the publisher itself, the
HTTP chunk framed once for every reader: one `transport.write` each. The reader's task
wakes only when something else must happen (its socket filled up, it was dropped, the run
ended), and then writes through ASGI as before, so back-pressure and stalled clients are
handled by the one path that always handled them (invariant 10).

Only uvicorn's httptools protocol is recognised (the daemon's own server); under any other
server the sink is None and every frame goes through ASGI.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from starlette.types import Scope

# Where the app's outermost layer leaves the server's own send for the response to find.
RAW_SEND = "od_runs.raw_send"


class _Flow(Protocol):
    write_paused: bool


class _Cycle(Protocol):
    """What the sink reads of uvicorn's httptools RequestResponseCycle."""

    transport: Any
    flow: _Flow
    disconnected: bool
    response_started: bool
    response_complete: bool
    chunked_encoding: bool | None


class DirectSink:
    """One response's socket, writable by a publisher while its reader is parked."""

    __slots__ = ("_cycle", "chunked", "open", "written_at")

    def __init__(self, cycle: _Cycle) -> None:
        self._cycle = cycle
        self.chunked = bool(cycle.chunked_encoding)
        self.open = True  # cleared before the response ends: nothing may follow its last chunk
        self.written_at = float("-inf")  # monotonic time of the last direct write

    def writable(self) -> bool:
        """True if a write now goes straight out: open, connected and not back-pressured."""
        cycle = self._cycle
        return (
            self.open
            and not cycle.disconnected
            and not cycle.response_complete
            and not cycle.flow.write_paused
        )

    def write(self, chunk: bytes, raw: bytes, at: float) -> None:
        """Write one batch: `chunk` framed for chunked encoding, `raw` as it is otherwise."""
        self._cycle.transport.write(chunk if self.chunked else raw)
        self.written_at = at

    def write_chunk(self, body: bytes) -> None:
        """Write one body chunk, framed here without copying it (a vectored write)."""
        if self.chunked:
            self._cycle.transport.writelines((b"%x\r\n" % len(body), body, b"\r\n"))
        else:
            self._cycle.transport.write(body)


def sink_for(scope: Scope) -> DirectSink | None:
    """The direct sink of this response, if its server is one the sink knows."""
    raw = scope.get(RAW_SEND)
    cycle = getattr(raw, "__self__", None)
    needed = ("transport", "flow", "disconnected", "response_started", "chunked_encoding")
    if cycle is None or not all(hasattr(cycle, name) for name in needed):
        return None
    if not cycle.response_started:
        return None
    return DirectSink(cycle)


class Outlet:
    """What a frame source may use of its response: cancel it, and its direct sink."""

    __slots__ = ("cancel", "sink")

    def __init__(self, cancel: Callable[[], None], sink: DirectSink | None) -> None:
        self.cancel = cancel
        self.sink = sink


__all__ = ["RAW_SEND", "DirectSink", "Outlet", "sink_for"]
