"""Server-Sent Events for one run: cursor resolution, replay-then-live, slow-client policy.

Every frame is `id: N / event: NAME / data: <the whole log line>`, so a browser's
EventSource resumes with Last-Event-ID and a reader sees exactly what `tail -F` shows.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator

import anyio

from .encoding import now_iso
from .errors import BadRequest, NotFound
from .models import TERMINAL_STATES
from .runs import Attachment, RunService
from .sse_response import RETRY_MS, EventStream
from .sse_sink import Outlet

# A cursor is an event id: ASCII digits, leading zeros allowed, at most 16 significant ones
# (event ids are dense per run, far below that), padded with spaces or tabs at most.
_CURSOR_RE = re.compile(r"[ \t]*0*([0-9]{1,16})[ \t]*")
# The same as a JSON Schema pattern for ?after= ("" means 0) and for Last-Event-ID, which
# HTTP cannot pad (an empty header is no header).
CURSOR_PATTERN = r"^([ \t]*0*[0-9]{1,16}[ \t]*)?$"
CURSOR_HEADER_PATTERN = r"^(0*[0-9]{1,16})?$"
# Events a reader may be behind the head when its replay ends and still take the rest from
# its live backlog; further behind, it replays again.
CATCH_UP = 512


def resolve_cursor(last_event_id: str | None, after: str | None) -> int:
    """The cursor from Last-Event-ID (wins) or ?after=; 0 if neither. Bad values: 400."""
    raw, source = (last_event_id, "Last-Event-ID") if last_event_id else (after, "after")
    if raw is None or raw == "":
        return 0
    match = _CURSOR_RE.fullmatch(raw)
    if match is None:
        raise BadRequest(
            f"{source} must be a non-negative integer event id of at most 16 digits, "
            f"got {raw[:40]!r}",
            code="INVALID_CURSOR",
        )
    return int(match.group(1))


def run_stream(service: RunService, run_id: str, cursor: int) -> EventStream:
    """The SSE response of one run from cursor on."""
    return EventStream(lambda outlet: run_frames(service, run_id, cursor, outlet))


async def run_frames(
    service: RunService, run_id: str, cursor: int, outlet: Outlet | None = None
) -> AsyncGenerator[bytes, None]:
    """SSE bytes for a run from cursor on: replay from the log, then live, then close.

    Invariant 5: events with id > cursor arrive once each, in order. Invariant 6: the
    `end` event always arrives, even if the cursor is at or past it.
    """
    attachment = await service.attach(run_id)
    if attachment.subscriber is not None and outlet is not None:
        attachment.subscriber.on_drop = outlet.cancel
        attachment.subscriber.sink = outlet.sink
    try:
        yield b"retry: %d\n\n" % RETRY_MS
        sent = cursor
        ended = False
        upto = attachment.head
        # A long replay of a busy run leaves the reader far behind its head: from a log
        # framed in shared slices it catches up again, in replay turns, rather than taking
        # everything published meanwhile in one write outside them. A log read off the loop
        # (another daemon's run, a database log) is not worth a second pass: the backlog is.
        again = getattr(attachment.log, "frame_slice", None) is not None
        while True:
            before = sent
            async for frames, last_id, last_event in service.replay_frames(
                attachment.log, sent, upto
            ):
                yield frames
                sent = last_id
                ended = last_event == "end"
            run = attachment.run
            if ended or not again or run is None or upto is None or sent == before:
                break
            if run.last_event_id - sent < CATCH_UP:
                break
            upto = run.last_event_id
        subscriber = attachment.subscriber
        if subscriber is not None:
            while not ended:
                batches = await subscriber.take(sent)
                # Batches the publisher wrote to the socket itself while this reader waited.
                sent, ended = subscriber.sent, subscriber.ended
                if not batches:
                    if subscriber.dropped:
                        return  # fell behind: the client resumes from the log
                    break  # closed: no more live events, only the run's end
                chunks = []
                for batch in batches:
                    if batch.first_id > sent:  # past the handoff: the shared bytes as they are
                        chunks.append(batch.frames)
                    elif batch.last.id <= sent and batch.last.event != "end":
                        continue  # replayed already (or before a cursor past the head)
                    else:  # overlaps the replay: only what it did not send
                        new = [x for x in batch.lines if x.id > sent or x.event == "end"]
                        chunks += [line.frame for line in new]
                    sent = max(sent, batch.last.id)
                if chunks:
                    yield chunks[0] if len(chunks) == 1 else b"".join(chunks)
                ended = batches[-1].last.event == "end"
        lost = attachment.run.log_error if attachment.run is not None else None
        if not ended and lost is not None and lost.code == "WORKER_LOST":
            # Another daemon concluded the run (invariant 12) and its log has that daemon's
            # error and end: the reader gets them as stored, not this daemon's own view.
            async for frames, last_id, last_event in service.replay_frames(
                attachment.log, sent, None
            ):
                yield frames
                sent = last_id
                ended = last_event == "end"
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
    try:
        status = await service.get(run_id)
    except NotFound:
        return None  # deleted while this reader was replaying it: the stream just ends
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
