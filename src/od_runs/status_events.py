"""The daemon-wide stream of run status changes (`GET /api/events`).

One connection tells a page about every run: a browser holds six HTTP/1.1 connections per
host, so a list of runs must not open one stream per run. Each status body is serialised
once into an SSE frame that every subscriber shares; a subscriber that falls behind is
dropped and, like a run stream, starts over (a fresh snapshot) when it reconnects.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable

import anyio

from .models import RunStatus
from .sse_response import RETRY_MS

# Status changes a subscriber may have pending before it is dropped (it reconnects).
STATUS_SUBSCRIBER_LIMIT = 1024


def status_frame(body: RunStatus) -> bytes:
    """`event: run` with the status body as data."""
    return b"event: run\ndata: %s\n\n" % body.model_dump_json().encode()


def deleted_frame(run_id: str) -> bytes:
    """`event: deleted` with `{"id": run_id}`: the run is gone, drop it from the list."""
    return b'event: deleted\ndata: {"id":"%s"}\n\n' % run_id.encode()


def snapshot_frame(bodies: list[RunStatus]) -> bytes:
    """`event: snapshot` with `{"runs": [status...]}`, the state a client starts from."""
    runs = ",".join(body.model_dump_json() for body in bodies)
    return b'event: snapshot\ndata: {"runs":[%s]}\n\n' % runs.encode()


class StatusSubscriber:
    """One reader of status changes: a bounded backlog of frames and a wake-up."""

    def __init__(
        self,
        limit: int,
        project_id: str | None = None,
        conversation_id: str | None = None,
    ) -> None:
        self.project_id = project_id
        self.conversation_id = conversation_id
        self._frames: list[bytes] = []
        self._limit = limit
        self._wake = anyio.Event()
        self.closed = False
        # Called once on drop: a reader stuck writing to a full socket never calls take().
        self.on_drop: Callable[[], None] | None = None

    def wants(self, body: RunStatus) -> bool:
        """True if this subscriber follows runs like this one."""
        return (self.project_id is None or body.projectId == self.project_id) and (
            self.conversation_id is None or body.conversationId == self.conversation_id
        )

    def push(self, frame: bytes) -> None:
        """Queue a frame, or drop the subscriber if it is too far behind."""
        if self.closed:
            return
        if len(self._frames) >= self._limit:
            self.close()
            if self.on_drop is not None:
                self.on_drop()
            return
        self._frames.append(frame)
        self._wake.set()

    def close(self) -> None:
        """End this subscriber's stream after what it already took."""
        self.closed = True
        self._frames = []
        self._wake.set()

    async def take(self) -> bytes:
        """Every pending frame as one chunk; waits if none is. Empty once closed."""
        await self._wake.wait()
        self._wake = anyio.Event()
        frames, self._frames = self._frames, []
        return b"" if self.closed else b"".join(frames)


class StatusHub:
    """Fans status bodies out to every subscriber; RunService publishes on each change."""

    def __init__(self, limit: int = STATUS_SUBSCRIBER_LIMIT) -> None:
        self.limit = limit
        self._subscribers: set[StatusSubscriber] = set()

    def subscribe(
        self, project_id: str | None = None, conversation_id: str | None = None
    ) -> StatusSubscriber:
        """A new subscriber; it sees every change published from now on."""
        subscriber = StatusSubscriber(self.limit, project_id, conversation_id)
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: StatusSubscriber) -> None:
        """Forget a subscriber."""
        self._subscribers.discard(subscriber)

    def publish(self, body: RunStatus) -> None:
        """Send a run's new status body to everyone who follows it."""
        if not self._subscribers:
            return
        frame = status_frame(body)
        for subscriber in list(self._subscribers):
            if subscriber.wants(body):
                subscriber.push(frame)

    def publish_deleted(self, body: RunStatus) -> None:
        """Tell everyone who followed a run (its last status body) that it was deleted."""
        frame = deleted_frame(body.id)
        for subscriber in list(self._subscribers):
            if subscriber.wants(body):
                subscriber.push(frame)

    def close(self) -> None:
        """End every stream (daemon shutdown)."""
        for subscriber in self._subscribers:
            subscriber.close()

    def __len__(self) -> int:
        return len(self._subscribers)


# How the stream lists runs for its snapshot: RunService.list.
ListRuns = Callable[[str | None, str | None, str | None, int], Awaitable[list[RunStatus]]]


async def status_frames(
    hub: StatusHub,
    list_runs: ListRuns,
    *,
    project_id: str | None,
    conversation_id: str | None,
    status: str | None,
    limit: int,
    on_drop: Callable[[], None] | None = None,
) -> AsyncGenerator[bytes, None]:
    """A snapshot of the matching runs, then every status change of runs in the same
    project and conversation (the status filter is the client's, since a run moves
    in and out of it)."""
    subscriber = hub.subscribe(project_id, conversation_id)
    subscriber.on_drop = on_drop
    try:
        yield b"retry: %d\n\n" % RETRY_MS
        # Subscribed first, listed second: a change in between arrives after the snapshot.
        bodies = await list_runs(project_id, conversation_id, status, limit)
        yield snapshot_frame(bodies)
        while True:
            chunk = await subscriber.take()
            if not chunk:
                return
            yield chunk
    finally:
        hub.unsubscribe(subscriber)


__all__ = ["StatusHub", "StatusSubscriber", "status_frames"]
