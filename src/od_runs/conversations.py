"""Conversations: runs with the same conversationId and agent continue one agent session.

Runs of one conversation execute one at a time, in the order they were created; the later
ones wait as `queued` (and may be canceled there). Runs of different conversations run in
parallel, at most `limit` at once. Runs without a conversationId are not scheduled here.

Each conversation is a lane that exists only while it has live runs, so memory follows the
number of active runs. A lane remembers the session its last finished run reported; the
next run resumes it. A fresh lane (after the last run finished long ago, or after a
restart) finds the session in the store instead.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio

from .config import CONVERSATION_LIMIT
from .models import RunCreate, RunStatus, SessionRef

# Conversations that may run at the same time unless the daemon is told otherwise.
DEFAULT_LIMIT = CONVERSATION_LIMIT
LaneKey = tuple[str, str]
# conversationId -> that conversation's status bodies, newest first.
History = Callable[[str], Awaitable[list[RunStatus]]]


@dataclass(eq=False)
class _Lane:
    """The live runs of one conversation, in creation order; the head is the one running."""

    queue: deque[Ticket] = field(default_factory=deque)
    changed: anyio.Event = field(default_factory=anyio.Event)
    session: SessionRef | None = None


@dataclass(eq=False)
class Ticket:
    """A run's place in its conversation (key None: the run has no conversation)."""

    key: LaneKey | None
    run_id: str
    created_at: str
    lane: _Lane | None = None


class Conversations:
    """Orders runs within a conversation and bounds how many conversations run at once."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        if limit < 1:
            raise ValueError("the conversation limit must be at least 1")
        self._lanes: dict[LaneKey, _Lane] = {}
        self._limiter = anyio.CapacityLimiter(limit)

    @property
    def limit(self) -> int:
        """How many conversations may run at once."""
        return int(self._limiter.total_tokens)

    def enqueue(self, run_id: str, request: RunCreate, created_at: str) -> Ticket:
        """Take a place in the run's conversation; call in creation order, without awaiting."""
        if request.conversationId is None:
            return Ticket(None, run_id, created_at)
        key = (request.conversationId, request.agentId)
        lane = self._lanes.setdefault(key, _Lane())
        ticket = Ticket(key, run_id, created_at, lane)
        lane.queue.append(ticket)
        return ticket

    @asynccontextmanager
    async def turn(
        self,
        ticket: Ticket,
        canceled: anyio.Event,
        session: Callable[[], SessionRef | None],
    ) -> AsyncIterator[bool]:
        """Wait for the run's turn; yields False if it was canceled while waiting.

        On exit the lane records `session()` for the next run and lets it go.
        """
        if ticket.key is None or ticket.lane is None:
            yield True
            return
        lane = ticket.lane
        acquired = False
        try:
            async with anyio.create_task_group() as tg:

                async def stop_waiting() -> None:
                    await canceled.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(stop_waiting)
                while lane.queue[0] is not ticket:
                    await lane.changed.wait()
                await self._limiter.acquire_on_behalf_of(ticket)
                acquired = True
                tg.cancel_scope.cancel()
            yield acquired
        finally:
            if acquired:
                self._limiter.release_on_behalf_of(ticket)
                current = session()
                if current is not None and current.threadId:
                    lane.session = current
            self._leave(ticket)

    def abandon(self, ticket: Ticket) -> None:
        """Give up the place of a run that finished without ever being driven."""
        if ticket.lane is not None and ticket in ticket.lane.queue:
            self._leave(ticket)

    def _leave(self, ticket: Ticket) -> None:
        lane = ticket.lane
        assert lane is not None and ticket.key is not None
        lane.queue.remove(ticket)
        lane.changed.set()
        lane.changed = anyio.Event()
        if not lane.queue and self._lanes.get(ticket.key) is lane:
            del self._lanes[ticket.key]

    async def session_to_resume(self, ticket: Ticket, history: History) -> SessionRef | None:
        """The session the run's conversation left off in, if any."""
        if ticket.key is None:
            return None
        assert ticket.lane is not None
        if ticket.lane.session is not None:
            return ticket.lane.session
        conversation_id, agent_id = ticket.key
        for body in await history(conversation_id):
            if (
                body.id != ticket.run_id
                and body.agentId == agent_id
                and body.createdAt <= ticket.created_at
                and body.sessionRef is not None
                and body.sessionRef.threadId
            ):
                return body.sessionRef
        return None
