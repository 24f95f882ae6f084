"""Sessions: one long-lived agent process per conversation, each run a turn on it.

A session belongs to a conversation (conversationId and agent) and outlives its runs and
its processes: it is `active` while a turn runs, `idle` while its process waits for the
next run, and `retired` when it has no process. A session is retired when its process
dies, answers garbage, or hit a watchdog, when a cancel could not stop a turn without
signals, on request, and when the daemon stops; the next run of the conversation spawns a
new process and resumes the same thread (a failing resume is SESSION_RESUME_FAILED, never
a new thread). A run without a conversation gets a session of its own, retired after it.

Every process is a managed_process (agents/process.py): its own process group, with
OD_RUNS_SESSION_ID in its environment, owned by one task (_serve) from spawn to reap. Its pid
and start time are stored before the handshake, so a daemon that crashed can kill what its
sessions left behind (recover()) without ever killing a reused pid. With several daemons
(cluster.py), a session whose row another daemon retired or took over is `moved`: its process
stops at once and this daemon writes its row no more (session_moves.py).
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup, TaskStatus

from .agents.base import SessionAdapter
from .agents.jsonrpc import JsonRpcPeer, Notification, PeerClosed, RpcError
from .agents.process import (
    DRAIN_TIMEOUT,
    child_env,
    kill_marked,
    kill_recorded_group,
    managed_process,
)
from .encoding import now_iso
from .errors import Conflict, NotFound
from .failures import AgentFailure, failure
from .models import RunCreate, SessionDetail, SessionStatus
from .session_moves import MOVED, MovedSessions
from .session_turn import (
    EXIT_WAIT,
    STDERR_TAIL_LINES,
    Live,
    Session,
    Turn,
    TurnCanceled,
    death_reason,
    note,
    startup_error,
    stop_process,
    unless_canceled,
)

if TYPE_CHECKING:
    from .storage import RunStore

log = logging.getLogger("od_runs.sessions")

# The marker every session process inherits, so recovery finds them after a crash.
SESSION_ENV = "OD_RUNS_SESSION_ID"
SESSION_ID_RE = re.compile(r"^ses-[0-9a-f]{16}$")
# Idle processes kept warm at most; beyond this the least recently used are retired.
MAX_LIVE_SESSIONS = 16
# An idle process unused this long is retired (its thread resumes on the next run).
IDLE_TTL = 30 * 60.0


class SessionManager(MovedSessions):
    """Keeps each conversation's session and its process; the runs borrow them."""

    def __init__(self, store: RunStore, task_group: TaskGroup, grace: float) -> None:
        self.store = store
        self.grace = grace
        self._tg = task_group
        self._sessions: dict[str, Session] = {}
        self._by_conversation: dict[tuple[str, str], Session] = {}
        self._closing = False

    # Runs ---------------------------------------------------------------------------------

    @asynccontextmanager
    async def turn(
        self,
        run_id: str,
        request: RunCreate,
        adapter: SessionAdapter,
        canceled: anyio.Event | None = None,
    ) -> AsyncIterator[Turn]:
        """The run's turn on its conversation's session, spawning and resuming as needed.

        canceled, once set while the process is still being readied (spawn, handshake), stops
        the readying at once and raises TurnCanceled: nobody waits out a handshake timeout.
        """
        session = await self._session_for(request, adapter)
        async with session.lock:
            turn: Turn | None = None
            try:
                live = await unless_canceled(
                    canceled, lambda: self._ready(session, request, adapter), session.id
                )
                turn = Turn(session, live, adapter, run_id)
                session.turn = turn
                session.body.status = "active"
                session.body.lastRunId = run_id
                note(session, "turn.started", runId=run_id)
                await self._save(session)
                yield turn
            finally:
                with anyio.CancelScope(shield=True):
                    await self._after_turn(session, turn, request)
        self._forget_if_retired(session)

    async def _session_for(self, request: RunCreate, adapter: SessionAdapter) -> Session:
        if request.conversationId is None:
            return self._remember(self._new_session(None, adapter.agent_id))
        key = (request.conversationId, adapter.agent_id)
        session = self._by_conversation.get(key)
        if session is not None and not session.moved:
            return session
        stored = await self.store.session_of(*key)
        if stored is not None:
            return self._remember(Session(stored))
        return self._remember(self._new_session(request.conversationId, adapter.agent_id))

    def _new_session(self, conversation_id: str | None, agent_id: str) -> Session:
        now = now_iso()
        body = SessionDetail(
            id=f"ses-{secrets.token_hex(8)}",
            conversationId=conversation_id,
            agentId=agent_id,
            status="retired",
            createdAt=now,
            updatedAt=now,
        )
        return Session(body)

    def _remember(self, session: Session) -> Session:
        self._sessions[session.id] = session
        if session.body.conversationId is not None:
            self._by_conversation[(session.body.conversationId, session.body.agentId)] = session
        return session

    def _forget_if_retired(self, session: Session) -> None:
        if session.body.status == "retired" and not session.lock.locked():
            if self._sessions.get(session.id) is session:
                del self._sessions[session.id]
            key = (session.body.conversationId or "", session.body.agentId)
            if self._by_conversation.get(key) is session:
                del self._by_conversation[key]

    async def _ready(self, session: Session, request: RunCreate, adapter: SessionAdapter) -> Live:
        """The session's process, alive and on its thread: reused, or spawned and resumed."""
        wanted = adapter.wanted_thread()
        body = session.body
        if (
            request.sessionRef is not None
            and wanted is not None
            and body.threadId is not None
            and wanted.lower() != body.threadId.lower()
        ):
            raise AgentFailure(
                failure(
                    "SESSION_RESUME_FAILED",
                    f"Conversation {body.conversationId!r} continues thread {body.threadId}; a "
                    f"run cannot switch it to thread {wanted}. Use a new conversationId.",
                )
            )
        env = adapter.env()
        # The digest covers what the child would really get, allowlisted variables included.
        setup = repr((sorted(child_env(env).items()), adapter.process_config()))
        digest = hashlib.sha256(setup.encode()).hexdigest()
        if session.live is not None:
            reason = await self._unfit(session, adapter, digest)
            if reason is None:
                session.live.last_used = anyio.current_time()
                return session.live
            await self._retire(session, reason)
        return await self._spawn(session, adapter, request, env, digest, body.threadId or wanted)

    async def _unfit(self, session: Session, adapter: SessionAdapter, digest: str) -> str | None:
        """Why the session's process cannot take the next turn, or None if it can."""
        live = session.live
        assert live is not None
        if not session.alive():
            return "its process died"
        if live.env_digest != digest:
            return "the run's environment or tool bundle changed"
        try:
            # A process killed a moment ago may not look dead yet; it can no longer answer.
            await adapter.ping(live.peer)
        except RpcError:
            pass  # an answer, even a refusal, proves it is there
        except (PeerClosed, TimeoutError):
            return "its process died" if live.peer.closed.is_set() else "it stopped answering"
        return None

    async def _spawn(
        self,
        session: Session,
        adapter: SessionAdapter,
        request: RunCreate,
        env: dict[str, str],
        digest: str,
        thread: str | None,
    ) -> Live:
        live: Live = await self._tg.start(self._serve, session, adapter, request, env, digest)
        process = live.child
        session.live = live
        session.body.pid = live.child.pid
        session.body.status = "idle"
        session.body.retiredReason = None
        note(session, "spawned", pid=live.child.pid)
        # Durable before the handshake: crash recovery kills by this pid and start time.
        await self._save(session)
        try:
            found = await adapter.open_session(live.peer, thread)
        except anyio.get_cancelled_exc_class():
            # A half-open process is no use to the next run: stop it (shielded) and say why.
            await self._retire(session, "its start was canceled")
            raise
        except AgentFailure:
            await self._retire(session, "its thread could not be resumed")
            raise
        except (RpcError, PeerClosed, TimeoutError) as exc:
            with anyio.move_on_after(EXIT_WAIT):
                await process.wait()
            stderr = list(live.stderr_tail)
            log.warning("session %s: handshake failed: %s; stderr: %s", session.id, exc, stderr)
            await self._retire(session, "its process failed to start")
            raise AgentFailure(startup_error(exc, process.returncode, adapter, stderr)) from None
        resumed = thread is not None
        live.thread_opened = "resumed" if resumed else "started"
        session.body.threadId = found
        note(session, "thread.resumed" if resumed else "thread.started", threadId=found)
        await self._save(session)
        return live

    async def _after_turn(self, session: Session, turn: Turn | None, request: RunCreate) -> None:
        session.turn = None
        live = session.live
        if live is not None:
            live.peer.on_notifications = _ignore_batch
            live.peer.on_request = None
            live.last_used = anyio.current_time()
        if turn is None:
            if session.body.status == "active":
                session.body.status = "idle" if session.alive() else "retired"
                await self._save(session)
            return
        adapter = turn.adapter
        if turn.accepted and not turn.ended() and turn.must_retire is None:
            # od-runs itself failed (or was cancelled) mid-turn: the turn may still be running.
            turn.must_retire = "its turn was abandoned"
        status = adapter.turn_status() or ("failed" if turn.must_retire else None)
        session.body.lastTurnStatus = status
        note(session, "turn.ended", runId=turn.run_id, status=status)
        if turn.must_retire is not None:
            await self._retire(session, turn.must_retire)
        elif session.moved:
            await self._retire(session, MOVED)
        elif request.conversationId is None:
            await self._retire(session, "its run had no conversation to continue")
        elif not session.alive():
            await self._retire(session, "its process died")
        else:
            session.body.status = "idle"
            await self._save(session)
            self._tg.start_soon(self._trim)

    # Processes ----------------------------------------------------------------------------

    async def _serve(
        self,
        session: Session,
        adapter: SessionAdapter,
        request: RunCreate,
        env: dict[str, str],
        digest: str,
        *,
        task_status: TaskStatus[Live],
    ) -> None:
        """Own the session's process from spawn to reap: read its messages until it ends,
        then retire the session if it died while idle."""
        stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)

        def keep_stderr(lines: list[tuple[str, bool]]) -> None:
            stderr_tail.extend(text for text, partial in lines if not partial)

        turn: Turn | None = None
        live: Live | None = None
        try:
            async with managed_process(
                adapter.argv(),
                env=env,
                cwd=request.cwd,
                stdin=True,
                marker=(SESSION_ENV, session.id),
                stderr=keep_stderr,
                grace=self.grace,
                abort=_close_stdin_of(lambda: live),
            ) as child:
                assert child.process.stdin is not None and child.process.stdout is not None
                live = Live(
                    child=child,
                    peer=JsonRpcPeer(child.process.stdin),
                    env_digest=digest,
                    stderr_tail=stderr_tail,
                    last_used=anyio.current_time(),
                )
                task_status.started(live)
                await live.peer.serve(child.process.stdout)
                current = session.turn
                turn = current if current is not None and current.live is live else None
                if turn is not None:
                    turn.done.set()  # the turn cannot end normally any more: let it say why
                with anyio.move_on_after(DRAIN_TIMEOUT):
                    await child.wait()
        finally:
            if live is not None:
                live.gone.set()
        assert live is not None
        if turn is not None:
            return  # the turn's end retires the session
        if session.live is live and not self._closing and not session.lock.locked():
            try:
                async with session.lock:
                    if session.live is live:
                        await self._retire(session, death_reason(live))
            except Exception:
                # A background task: failing here must not take the daemon down with it.
                log.exception("session %s: could not retire its dead process", session.id)
            self._forget_if_retired(session)

    async def _retire(self, session: Session, reason: str) -> None:
        """Stop the session's process group (if any) and mark it retired; idempotent."""
        live, session.live = session.live, None
        pid = live.child.pid if live is not None else session.body.pid
        if live is not None:
            with anyio.CancelScope(shield=True):
                await stop_process(live, self.grace)
                # _serve reaps the group and kills marked escapees, then says it is gone.
                with anyio.move_on_after(EXIT_WAIT + DRAIN_TIMEOUT):
                    await live.gone.wait()
        if session.body.status == "retired" and live is None:
            return
        session.body.status = "retired"
        session.body.pid = None
        session.body.retiredReason = reason
        note(session, "retired", reason=reason, pid=pid)
        await self._save(session)
        log.info("session %s retired: %s", session.id, reason)

    async def _kill_marked(self, session_id: str) -> None:
        for pid in await kill_marked(f"{SESSION_ENV}={session_id}"):
            log.info("session %s: killed process %d that had left its group", session_id, pid)

    async def _trim(self) -> None:
        """Retire idle sessions beyond MAX_LIVE_SESSIONS or IDLE_TTL, least recently used first."""
        try:
            await self._trim_now()
        except Exception:
            # A background task: failing here must not take the daemon down with it.
            log.exception("trimming idle sessions failed")

    async def _trim_now(self) -> None:
        now = anyio.current_time()
        idle = sorted(
            (s for s in self._sessions.values() if s.live is not None and not s.lock.locked()),
            key=lambda s: s.live.last_used if s.live else 0.0,
        )
        excess = len([s for s in self._sessions.values() if s.live is not None])
        for session in idle:
            live = session.live
            if live is None:
                continue
            if excess > MAX_LIVE_SESSIONS:
                reason = f"more than {MAX_LIVE_SESSIONS} sessions were live"
            elif now - live.last_used >= IDLE_TTL:
                reason = f"it was idle for {IDLE_TTL / 60:g} minutes"
            else:
                continue
            async with session.lock:
                if session.live is live:
                    await self._retire(session, reason)
                    excess -= 1
            self._forget_if_retired(session)

    async def janitor(self) -> None:
        """Retire idle sessions past their TTL, forever (the service's task group runs it)."""
        while True:
            await anyio.sleep(min(IDLE_TTL, 60.0))
            await self._trim()

    async def _save(self, session: Session) -> None:
        if session.moved:
            return  # the row is another daemon's now (fencing, as for runs: invariant 11)
        session.body.updatedAt = now_iso()
        start = session.live.child.start_time if session.live is not None else None
        session.saving += 1
        try:
            await self.store.save_session(session.body, start)
        finally:
            session.saving -= 1
            session.saved += 1

    # API ----------------------------------------------------------------------------------

    async def get(self, session_id: str) -> SessionDetail:
        """A session with its recent events; 404 for an unknown id."""
        if not SESSION_ID_RE.match(session_id):
            raise NotFound(f"no session with id {session_id[:80]!r}")
        found = await self.store.get_session(session_id)
        if found is None:
            raise NotFound(f"no session with id {session_id!r}")
        return found

    async def list(
        self,
        conversation_id: str | None = None,
        status: str | None = None,
        limit: int = 200,
    ) -> list[SessionStatus]:
        """Sessions, most recently updated first."""
        return await self.store.list_sessions(
            conversation_id=conversation_id, status=status, limit=limit
        )

    async def retire(self, session_id: str, reason: str = "retired on request") -> SessionDetail:
        """Retire a session now (its next run starts a new process on the same thread)."""
        await self.get(session_id)
        session = self._sessions.get(session_id)
        if session is not None:
            if session.turn is not None:
                raise Conflict(
                    f"session {session_id} is running run {session.turn.run_id}; cancel the run "
                    "first",
                    code="SESSION_BUSY",
                )
            async with session.lock:
                await self._retire(session, reason)
            self._forget_if_retired(session)
        return await self.get(session_id)

    # Start and stop -----------------------------------------------------------------------

    async def recover(self) -> int:
        """After a crash: kill the processes sessions left behind, mark them retired."""
        rows = await self.store.live_sessions()
        for body, started in rows:
            if body.pid is not None:
                await anyio.to_thread.run_sync(kill_recorded_group, body.pid, started)
            await self._kill_marked(body.id)
            session = Session(body)
            session.body.status = "retired"
            session.body.pid = None
            session.body.retiredReason = "the daemon restarted"
            note(session, "retired", reason="the daemon restarted", pid=body.pid)
            await self._save(session)
        return len(rows)

    async def close(self) -> None:
        """Retire every live session (the daemon is stopping); threads resume next time."""
        self._closing = True
        live = [s for s in self._sessions.values() if s.live is not None]

        async def one(session: Session) -> None:
            async with session.lock:
                await self._retire(session, "the daemon stopped")

        async with anyio.create_task_group() as tg:
            for session in live:
                tg.start_soon(one, session)


# Helpers ----------------------------------------------------------------------------------


def _close_stdin_of(get: Callable[[], Live | None]) -> Callable[[], Awaitable[None]]:
    """The abort step of a session process: close its stdin (Codex exits on it)."""

    async def close() -> None:
        live = get()
        if live is not None:
            await live.child.close_stdin()

    return close


def _ignore_batch(batch: list[Notification]) -> None:
    pass


__all__ = ["SESSION_ENV", "SessionManager", "Turn", "TurnCanceled"]
