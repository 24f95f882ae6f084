"""Sessions of a daemon that another daemon concluded as lost (issue 11 item 7, invariants 9
and 12), step by step on a real PostgreSQL: the retirement leaves its trace in the session's
recent events, a daemon back from a kill -9 reaps the app-server its old session left, and a
daemon back from a pause stops its app-server at once, writing nothing over the new owner's row.
Stand-in app-servers are real processes in their own process groups."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from od_runs.agents.base import SessionAdapter
from od_runs.agents.jsonrpc import JsonRpcPeer
from od_runs.agents.process import start_time
from od_runs.cluster import ClusterSettings
from od_runs.models import RunCreate, SessionDetail, SessionEvent
from od_runs.pg_cluster import ClusterDb
from od_runs.pg_store import PgRunStore, open_pool
from od_runs.runs import open_service
from od_runs.session_turn import RECENT_EVENTS

from .conftest import apoll

pytestmark = pytest.mark.anyio

# A stand-in app-server: waits, exits on no signal of its own accord, stdin or not.
IDLE_FOREVER = "import time; time.sleep(600)"


class StandIn(SessionAdapter):
    """A session adapter whose process is IDLE_FOREVER (its handshake asks nothing)."""

    agent_id = "stand-in"
    has_sessions = True

    def argv(self) -> list[str]:
        return [sys.executable, "-c", IDLE_FOREVER]

    def env(self) -> dict[str, str]:
        return {}

    async def open_session(self, peer: JsonRpcPeer, thread_id: str | None) -> str:
        return thread_id or "thread-1"


@pytest.fixture
def spawn() -> Iterator[Any]:
    """Start stand-ins in their own process groups (as an A daemon that died left them)."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        child = subprocess.Popen([sys.executable, "-c", IDLE_FOREVER], start_new_session=True)
        started.append(child)
        return child

    yield start
    for child in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def _gone(child: subprocess.Popen[bytes]) -> bool:
    """True once the child and its whole process group are gone."""
    if child.poll() is None:
        return False
    try:
        os.killpg(child.pid, 0)
    except ProcessLookupError:
        return True
    return False


def _session(conversation: str, pid: int, events: int = 0) -> SessionDetail:
    now = "2024-01-01T00:00:00.000Z"
    return SessionDetail(
        id=f"ses-{conversation.encode().hex():0>16}"[:20],
        conversationId=conversation,
        agentId="stand-in",
        status="idle",
        pid=pid,
        threadId="thread-1",
        createdAt=now,
        updatedAt=now,
        recentEvents=[
            SessionEvent(ts=now, type="turn.ended", data={"n": k}) for k in range(events)
        ],
    )


def _sql(url: str, query: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description is not None else []


def _group_gone(pgid: int) -> bool:
    """No process is left in the group (a zombie not yet reaped still counts)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


async def _store_of(url: str, worker: str) -> PgRunStore:
    store = await PgRunStore.open(url)
    store.worker_id = worker
    return store


@asynccontextmanager
async def _wa_holds(
    url: str, pid: int
) -> AsyncIterator[tuple[PgRunStore, PgRunStore, SessionDetail]]:
    """wA registered and holding conv-1's session on process pid; wB's store beside it."""
    store_a = await _store_of(url, "wA")
    store_b = await _store_of(url, "wB")
    try:
        await ClusterDb(store_a.pool, "wA", "here", lease=10).register(None)
        session = _session("conv-1", pid)
        await store_a.save_session(session, start_time(pid))
        yield store_a, store_b, session
    finally:
        await store_a.close()
        await store_b.close()


async def _conclude(url: str, lost: str) -> None:
    """Daemon wB finds `lost` past its lease and concludes it (as its heartbeat would)."""
    pool = await open_pool(url)
    try:
        b = ClusterDb(pool, "wB", "elsewhere", lease=10)
        await b.register(None)
        assert await b.lost_workers() == [lost]
        await b.conclude_lost(lost)
    finally:
        await pool.close()


async def test_worker_lost_retirement_is_a_recent_event_and_keeps_the_cap(
    pg_url: str, spawn: Any
) -> None:
    """Invariant 12: a session retired for a lost daemon says so in its recentEvents (type
    `retired`, reason `worker lost`, the pid), like any retirement, and keeps at most
    RECENT_EVENTS of them; its status and pid say retired, no process."""
    child = spawn()
    store = await _store_of(pg_url, "wA")
    try:
        await ClusterDb(store.pool, "wA", "here", lease=10).register(None)
        full = _session("conv-full", child.pid, events=RECENT_EVENTS)
        await store.save_session(full, start_time(child.pid))
        _sql(pg_url, "UPDATE workers SET heartbeat = now() - interval '1 hour'")
        await _conclude(pg_url, "wA")
        got = await store.get_session(full.id)
    finally:
        await store.close()
    assert got is not None
    assert (got.status, got.pid, got.retiredReason) == ("retired", None, "worker lost")
    assert len(got.recentEvents) == RECENT_EVENTS
    assert got.recentEvents[0].data == {"n": 1}  # the oldest made room
    last = got.recentEvents[-1]
    assert (last.type, last.data) == ("retired", {"reason": "worker lost", "pid": child.pid})
    assert got.updatedAt == last.ts


async def test_a_daemon_back_from_kill_9_reaps_the_app_server_its_retired_session_left(
    tmp_path: Path, pg_url: str, spawn: Any
) -> None:
    """Invariant 9 (no orphan processes): daemon wA was killed -9 with a session's app-server
    idle; wB concluded it, retired the session and resumed the conversation in its own
    process. When wA starts again it kills its old app-server's group, once, and nothing else:
    neither wB's process nor a process that reuses a recorded pid (its start time differs)."""
    old = spawn()  # what wA's app-server left running
    reused = spawn()  # a stranger holding a pid wA recorded for another session
    on_b = spawn()  # wB's app-server for the conversation, after the takeover
    async with _wa_holds(pg_url, old.pid) as (store_a, store_b, moved):
        stranger = _session("conv-2", reused.pid)
        await store_a.save_session(stranger, (start_time(reused.pid) or 0) - 5000)
        _sql(pg_url, "UPDATE workers SET heartbeat = now() - interval '1 hour'")
        await _conclude(pg_url, "wA")
        takeover = moved.model_copy(update={"pid": on_b.pid})
        await store_b.save_session(takeover, start_time(on_b.pid))
    assert not _gone(old)  # a kill -9 of the daemon leaves it (its own process group)

    settings = ClusterSettings(worker_id="wA", lease_seconds=3600)
    async with open_service(tmp_path / "wA", database_url=pg_url, cluster=settings) as a:
        await apoll("wA's old app-server to be reaped", lambda: _gone(old), deadline=10)
        after = await a.sessions.get(moved.id)
    assert not _gone(reused) and not _gone(on_b)
    assert (after.status, after.pid) == ("idle", on_b.pid)  # wB's row, untouched
    assert _sql(pg_url, "SELECT count(*) FROM lost_sessions") == [(0,)]  # reaped once


async def test_a_daemon_back_from_a_pause_stops_its_app_server_and_leaves_the_new_row(
    tmp_path: Path, pg_url: str, spawn: Any
) -> None:
    """Invariants 9 and 11: daemon wA holds a conversation's idle app-server; while it is
    paused past its lease wB concludes it and resumes the conversation in its own process.
    wA's next heartbeat stops its app-server's group at once (not after the idle TTL) and
    writes nothing over wB's row, which still names wB's process."""
    on_b = spawn()
    settings = ClusterSettings(worker_id="wA", lease_seconds=1.5)
    service = open_service(tmp_path / "wA", grace=0.5, database_url=pg_url, cluster=settings)
    async with service as a:
        request = RunCreate(conversationId="conv-1")
        async with a.sessions.turn("run-1", request, StandIn(request)) as turn:
            pid = turn.live.child.pid
        (summary,) = await a.sessions.list(conversation_id="conv-1")
        assert (summary.status, summary.pid) == ("idle", pid)

        # As if wA were paused: wB's heartbeat concludes it, the next run resumes on wB.
        pool = await open_pool(pg_url)
        try:
            await ClusterDb(pool, "wB", "elsewhere", lease=10).conclude_lost("wA")
        finally:
            await pool.close()
        store_b = await _store_of(pg_url, "wB")
        try:
            row = await store_b.get_session(summary.id)
            assert row is not None and row.status == "retired"
            takeover = row.model_copy(update={"status": "idle", "pid": on_b.pid})
            await store_b.save_session(takeover, start_time(on_b.pid))
        finally:
            await store_b.close()

        # Gone means reaped too: a leader that exited stays in its group as a zombie until
        # the daemon has waited for it.
        await apoll("wA's app-server group to be gone", lambda: _group_gone(pid), deadline=10)
        after = await a.sessions.get(summary.id)
    assert (after.status, after.pid) == ("idle", on_b.pid)
    assert not _gone(on_b)
    assert _sql(pg_url, "SELECT worker_id FROM sessions") == [("wB",)]


async def test_a_takeover_before_the_loss_is_concluded_still_leaves_the_old_group_to_reap(
    tmp_path: Path, pg_url: str, spawn: Any
) -> None:
    """Invariant 9: wB resumes a conversation whose session row still says idle on wA (wA's
    lease ran out, nobody concluded it yet): wA's recorded process group is kept for wA to
    reap when it starts again, and wB's process lives on."""
    old, on_b = spawn(), spawn()
    async with _wa_holds(pg_url, old.pid) as (_, store_b, session):
        await store_b.save_session(session.model_copy(update={"pid": on_b.pid}), None)
    assert _sql(pg_url, "SELECT worker_id, pid FROM lost_sessions") == [("wA", old.pid)]

    settings = ClusterSettings(worker_id="wA", lease_seconds=3600)
    async with open_service(tmp_path / "wA", database_url=pg_url, cluster=settings):
        await apoll("wA's old app-server to be reaped", lambda: _gone(old), deadline=10)
    assert not _gone(on_b)
    assert _sql(pg_url, "SELECT count(*) FROM lost_sessions") == [(0,)]
