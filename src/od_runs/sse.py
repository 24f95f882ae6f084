"""Server-Sent Events for one run: cursor resolution, replay-then-live, slow-client policy.

Every frame is `id: N / event: NAME / data: <the whole log line>`, so a browser's
EventSource resumes with Last-Event-ID and a reader sees exactly what `tail -F` shows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio

from .errors import BadRequest
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


async def run_frames(service: RunService, run_id: str, cursor: int) -> AsyncIterator[bytes]:
    """SSE bytes for a run from cursor on: replay from the log, then live, then close.

    Invariant 5: events with id > cursor arrive once each, in order. Invariant 6: the
    `end` event always arrives, even if the cursor is at or past it.
    """
    attachment = await service.attach(run_id)
    try:
        yield b"retry: %d\n\n" % RETRY_MS
        sent = cursor
        ended = False
        async for batch in service.replay(attachment.log, cursor, attachment.head):
            yield b"".join(line.frame for line in batch)
            sent = batch[-1].id
            ended = batch[-1].event == "end"
        subscriber = attachment.subscriber
        if subscriber is not None:
            while not ended:
                batch = await subscriber.take()
                if not batch:
                    return  # dropped for falling behind: the client resumes from the log
                fresh = [line for line in batch if line.id > sent or line.event == "end"]
                if fresh:
                    yield b"".join(line.frame for line in fresh)
                    sent = max(sent, fresh[-1].id)
                ended = batch[-1].event == "end"
        if not ended:
            final = await _final(service, attachment)
            if final is not None:
                yield final
    finally:
        service.detach(attachment)


async def _final(service: RunService, attachment: Attachment) -> bytes | None:
    line = await anyio.to_thread.run_sync(service.final_line, attachment)
    if line is None or line.event != "end":
        return None
    return line.frame
