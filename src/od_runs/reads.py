"""Reads: status bodies, lists, waits, and replay of a run's events from any cursor.

A run held in memory answers from memory; any other run from the run store and its log
(invariant 7: a finished run stays readable after it left memory). attach() registers a live
subscriber and notes the head id in one step, with no await between them (invariant 5).
"""

from __future__ import annotations

import builtins
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

import anyio

from .errors import BadRequest, NotFound
from .eventlog import LogLine
from .lifecycle import Lifecycle
from .live_run import Attachment, Run
from .models import RUN_ID_PATTERN, TERMINAL_STATES, Event, RunStatus
from .replay_turns import thread_limiter, turns
from .storage import RunLog
from .store import RunRow

_RUN_ID_RE = re.compile(RUN_ID_PATTERN)
_T = TypeVar("_T")
# The statuses `status=` may filter by; "active" means not terminal.
_LISTED = ("queued", "running", *TERMINAL_STATES)


async def _off_loop(items: Iterator[_T], limiter: bool = False) -> AsyncIterator[_T]:
    """Iterate a blocking iterator in a worker thread, one item per hop.

    limiter: share replay's few threads and wait a replay turn per item (replay_turns.py).
    """
    done = object()
    while True:
        if limiter:
            await turns.turn()
        item = await anyio.to_thread.run_sync(
            next, items, done, limiter=thread_limiter() if limiter else None
        )
        if item is done:
            return
        started = time.perf_counter()
        yield item  # type: ignore[misc]  # `done` was ruled out just above
        if limiter:
            turns.charge(time.perf_counter() - started)


class RunReads:
    """Answers questions about runs, wherever they are kept."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        # Several daemons (cluster.py): the mirror of an active run another daemon executes.
        self.remote: Callable[[str], Awaitable[Run | None]] | None = None

    async def _held(self, run_id: str) -> Run | None:
        """The run in memory: executed here, or followed here for another daemon."""
        run = self.lifecycle.runs.get(run_id)
        if run is None and self.remote is not None and _RUN_ID_RE.match(run_id):
            run = await self.remote(run_id)
        return run

    async def get(self, run_id: str) -> RunStatus:
        """The status body of a run, from memory or the run store; 404 if unknown."""
        run = self.lifecycle.runs.get(run_id)
        if run is not None:
            return run.status_body()
        return (await self._stored(run_id)).body

    async def _stored(self, run_id: str) -> RunRow:
        if not _RUN_ID_RE.match(run_id):
            raise NotFound(f"no run with id {run_id[:80]!r}")
        row = await self.lifecycle.store.get(run_id)
        if row is None:
            raise NotFound(f"no run with id {run_id!r}")
        return row

    async def list(
        self,
        project_id: str | None = None,
        conversation_id: str | None = None,
        status: str | None = None,
        limit: int = 200,
    ) -> builtins.list[RunStatus]:
        """Status bodies, newest first; status 'active' means not terminal."""
        statuses: builtins.list[str] | None
        if status is None:
            statuses = None
        elif status == "active":
            statuses = ["queued", "running"]
        elif status in _LISTED:
            statuses = [status]
        else:
            raise BadRequest(
                "status must be one of queued, running, succeeded, failed, canceled, active"
            )
        store = self.lifecycle.store
        await store.flush()
        return await store.list(
            project_id=project_id, conversation_id=conversation_id, statuses=statuses, limit=limit
        )

    async def wait(self, run_id: str, timeout: float | None = None) -> RunStatus:
        """The status body once the run is terminal (or as it is when timeout passes)."""
        run = await self._held(run_id)
        if run is None:
            return await self.get(run_id)
        with anyio.move_on_after(timeout):
            await run.done.wait()
        return await self._now(run)

    async def _now(self, run: Run) -> RunStatus:
        """A held run's status, or the stored one if it left memory meanwhile (concluded by
        another daemon: its own view is not the run's any more)."""
        if run.terminal and run.remote_body is None and run.id not in self.lifecycle.runs:
            return await self.get(run.id)
        return run.status_body()

    async def wait_for_events(self, run_id: str, after: int, timeout: float) -> RunStatus:
        """Return when the run has events after `after`, is terminal, or timeout passes."""
        run = await self._held(run_id)
        if run is None:
            return await self.get(run_id)
        with anyio.move_on_after(timeout):
            while run.last_event_id <= after and not run.terminal:
                await run.changed.wait()
        return await self._now(run)

    async def watch(self, run_id: str, on_change: Callable[[RunStatus], Awaitable[None]]) -> None:
        """Call on_change with the status now and after each change, until it is terminal.

        Changes that happen while on_change runs are folded into the next call.
        """
        run = await self._held(run_id)
        if run is None:
            await on_change(await self.get(run_id))
            return
        while True:
            changed = run.changed
            status = run.status_body()
            await on_change(status)
            if status.status in TERMINAL_STATES:
                return
            await changed.wait()

    async def attach(self, run_id: str) -> Attachment:
        """Register a live subscriber and note the head id in one step (invariant 5)."""
        run = await self._held(run_id)
        if run is not None:
            if run.terminal or run.log_error is not None:
                return Attachment(run.log, run.last_event_id, None, run)
            return Attachment(run.log, run.last_event_id, run.fanout.subscribe(), run)
        row = await self._stored(run_id)
        location = row.body.eventsLogPath
        run_log = self.lifecycle.events.open(run_id, location)
        # No log location: nothing was ever written, so there is nothing past event 0.
        return Attachment(run_log, None if location is not None else 0, None, None)

    def detach(self, attachment: Attachment) -> None:
        """Forget a subscriber."""
        if attachment.run is not None and attachment.subscriber is not None:
            attachment.run.fanout.unsubscribe(attachment.subscriber)

    async def replay(
        self, run_log: RunLog, after: int, upto: int | None
    ) -> AsyncIterator[builtins.list[LogLine]]:
        """Batches of logged events with after < id <= upto, read off the event loop."""
        async for batch in _off_loop(run_log.read_after(after, upto)):
            yield batch

    async def replay_frames(
        self, run_log: RunLog, after: int, upto: int | None
    ) -> AsyncIterator[tuple[bytes, int, str]]:
        """SSE frames of logged events with after < id <= upto: (bytes, last id, last event).

        A log this process writes serves bounded slices of frames built once for all its
        readers, one slice per replay turn, on the loop; any other log is read off the loop,
        a turn per chunk. Either way a crowd catching up leaves room for live delivery.
        """
        slicer = getattr(run_log, "frame_slice", None)
        if slicer is not None and upto is not None:
            while after < upto:
                await turns.turn()
                started = time.perf_counter()
                piece: tuple[bytes, int, str] | None = slicer(after, upto)
                if piece is None:
                    break  # not servable from spans: the rest comes off the loop
                yield piece  # the stream sends it before asking for the next
                turns.charge(time.perf_counter() - started)
                after = piece[1]
            if after >= upto:
                return
        async for chunk in _off_loop(run_log.read_frames_after(after, upto), limiter=True):
            yield chunk

    async def events(
        self, run_id: str, after: int = 0, limit: int = 100
    ) -> tuple[builtins.list[Event], bool]:
        """Up to limit events after a cursor, and whether more exist."""
        if after < 0:
            raise BadRequest("cursor must be a non-negative integer")
        attachment = await self.attach(run_id)
        self.detach(attachment)
        items: builtins.list[Event] = []
        more = False
        async for batch in self.replay(attachment.log, after, None):
            for line in batch:
                if len(items) == limit:
                    more = True
                    break
                items.append(Event.model_validate(json.loads(line.line)))
            if more:
                break
        return items, more

    def final_line(self, attachment: Attachment) -> LogLine | None:
        """The end event of a finished run."""
        if attachment.run is not None and attachment.run.tail:
            return attachment.run.tail[-1]
        return attachment.log.last()


__all__ = ["RunReads"]
