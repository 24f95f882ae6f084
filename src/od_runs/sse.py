"""Server-Sent Events for one run: cursor resolution, replay-then-live, slow-client policy.

Every frame is `id: N / event: NAME / data: <the whole log line>`, so a browser's
EventSource resumes with Last-Event-ID and a reader sees exactly what `tail -F` shows.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import anyio
from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send

from .errors import BadRequest
from .eventlog import now_iso
from .models import TERMINAL_STATES
from .runs import Attachment, RunService

# Browsers wait this long before reconnecting after the stream drops.
RETRY_MS = 1000
# A comment line this often keeps proxies and idle-timeouts from closing a quiet stream.
PING_SECONDS = 15.0
# A client that has not taken a frame for this long is treated as gone.
SEND_TIMEOUT = 30.0
_MAX_CURSOR = 2**53


def resolve_cursor(last_event_id: str | None, after: str | None) -> int:
    """The cursor from Last-Event-ID (wins) or ?after=; 0 if neither. Bad values: 400."""
    raw, source = (last_event_id, "Last-Event-ID") if last_event_id else (after, "after")
    if raw is None or raw == "":
        return 0
    text = raw.strip()
    if not text.isdigit() or len(text) > 16:
        raise BadRequest(
            f"{source} must be a non-negative integer event id, got {raw[:40]!r}",
            code="INVALID_CURSOR",
        )
    value = int(text)
    if value > _MAX_CURSOR:
        raise BadRequest(f"{source} is out of range: {value}", code="INVALID_CURSOR")
    return value


class DroppableStream(EventSourceResponse):
    """An SSE response torn down at once when its reader is dropped for falling behind.

    A client that stopped reading leaves the response blocked in a socket write, where no
    queue check runs; cancelling the response is what frees it (invariant 10). frames gets
    the callback that does it.
    """

    def __init__(self, frames: Callable[[Callable[[], None]], AsyncIterator[bytes]]) -> None:
        self._scope: anyio.CancelScope | None = None
        super().__init__(
            frames(self._drop),
            ping=PING_SECONDS,
            send_timeout=SEND_TIMEOUT,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    def _drop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with anyio.CancelScope() as self._scope:
            await super().__call__(scope, receive, send)


def run_stream(service: RunService, run_id: str, cursor: int) -> DroppableStream:
    """The SSE response of one run from cursor on."""
    return DroppableStream(lambda on_drop: run_frames(service, run_id, cursor, on_drop))


async def run_frames(
    service: RunService, run_id: str, cursor: int, on_drop: Callable[[], None] | None = None
) -> AsyncIterator[bytes]:
    """SSE bytes for a run from cursor on: replay from the log, then live, then close.

    Invariant 5: events with id > cursor arrive once each, in order. Invariant 6: the
    `end` event always arrives, even if the cursor is at or past it.
    """
    attachment = await service.attach(run_id)
    if attachment.subscriber is not None:
        attachment.subscriber.on_drop = on_drop
    try:
        yield b"retry: %d\n\n" % RETRY_MS
        sent = cursor
        ended = False
        async for frames, last_id, last_event in service.replay_frames(
            attachment.log, cursor, attachment.head
        ):
            yield frames
            sent = last_id
            ended = last_event == "end"
        subscriber = attachment.subscriber
        if subscriber is not None:
            while not ended:
                batch = await subscriber.take()
                if not batch:
                    if subscriber.dropped:
                        return  # fell behind: the client resumes from the log
                    break  # closed: no more live events, only the run's end
                if batch[0].id > sent:  # past the handoff: everything is new
                    fresh = batch
                else:
                    fresh = [line for line in batch if line.id > sent or line.event == "end"]
                if fresh:
                    yield b"".join([line.frame for line in fresh])
                    sent = max(sent, fresh[-1].id)
                ended = batch[-1].event == "end"
        if not ended:
            final = await _final(service, run_id, attachment)
            if final is not None:
                yield final
    finally:
        service.detach(attachment)


async def _final(service: RunService, run_id: str, attachment: Attachment) -> bytes | None:
    """The run's `end` frame for a reader that is past the live part of the stream."""
    line = await anyio.to_thread.run_sync(service.final_line, attachment)
    if line is not None and line.event == "end":
        return line.frame
    if attachment.run is not None:
        await attachment.run.done.wait()  # a broken log closes the stream before the end
    status = await service.get(run_id)
    if status.status not in TERMINAL_STATES:
        return None
    # A log the disk stopped taking has no `end` line; invariant 6 still owes the reader
    # one, so it is built from the status, with the id the line would have had.
    end = {"status": status.status, "code": status.exitCode, "signal": status.signal}
    if status.errorCode is not None:
        end |= {"errorCode": status.errorCode, "error": status.error}
    event_id = (line.id if line is not None else 0) + 1
    data = json.dumps({"id": event_id, "event": "end", "data": end, "ts": now_iso()})
    return f"id: {event_id}\nevent: end\ndata: {data}\n\n".encode()
