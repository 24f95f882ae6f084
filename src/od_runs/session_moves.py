"""Sessions another daemon took: with several daemons on one database, a paused daemon may
wake to find that the conversation's session row was retired (its lease ran out) or resumed
elsewhere. Its process here must stop at once, and its row must not be written again
(fencing, as for runs: invariant 11). The heartbeat (cluster.py) asks the database which
rows moved; this mixin of SessionManager acts on the answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anyio.abc import TaskGroup

if TYPE_CHECKING:
    from .session_turn import Session

# Why a daemon stops a process whose session another daemon retired or resumed meanwhile.
MOVED = "another daemon retired or took over its session"


class MovedSessions:
    """What SessionManager does with sessions whose rows are no longer this daemon's."""

    _sessions: dict[str, Session]
    _tg: TaskGroup

    async def _retire(self, session: Session, reason: str) -> None:
        raise NotImplementedError

    def _forget_if_retired(self, session: Session) -> None:
        raise NotImplementedError

    def held(self) -> dict[str, int]:
        """Sessions with a process here and no save under way, each with its saves so far."""
        return {
            s.id: s.saved
            for s in self._sessions.values()
            if s.live is not None and not s.moved and s.saving == 0
        }

    def moved_away(self, ids: set[str], held: dict[str, int]) -> list[str]:
        """Another daemon retired or took over these sessions' rows (as held() saw them):
        stop their processes here, in the background, and never write the rows again."""
        moved = []
        for session_id in ids:
            session = self._sessions.get(session_id)
            if session is None or session.saving or session.saved != held.get(session_id):
                continue  # written since the look: the look says nothing of it
            session.moved = True
            moved.append(session_id)
            if not session.lock.locked():  # else the turn's end retires it
                self._tg.start_soon(self._drop_moved, session)
        return moved

    async def _drop_moved(self, session: Session) -> None:
        async with session.lock:
            await self._retire(session, MOVED)
        self._forget_if_retired(session)


__all__ = ["MOVED", "MovedSessions"]
