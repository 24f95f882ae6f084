"""The SQL of several daemons on one PostgreSQL: workers, the queue, leases, worker loss.

A daemon is a row in `workers` whose heartbeat it renews; its lease on the runs it executes
holds while that heartbeat is younger than the lease. Each claim (and each takeover) of a run
bumps the run's lease_epoch; the event and status writes of the executor carry the epoch they
were claimed with and are refused once it moved on (pg_events.py, pg_store.py: invariant 11).
Ending a run for someone else (a lost worker, a queued cancel, our own crash) happens in one
transaction that holds the run's row FOR UPDATE, so a concurrent fenced insert of the old
executor either commits before it (and the end follows its events) or is refused.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from .encoding import now_iso
from .eventlog import EventLog, LogLine, encode_lines, recover_tail
from .models import RunStatus, WorkerInfo
from .pg_events import _LAST, _TS_TAIL
from .pg_store import _COLUMNS, _row, unavailable
from .recovery import as_logged, failed_by_restart, restart_lines
from .session_turn import RECENT_EVENTS
from .store import RunRow

WORKER_LOST = "WORKER_LOST"

_ENQUEUE = """
WITH queued AS (
    INSERT INTO runs (id, project_id, conversation_id, agent_id, status, created_at,
                      client_request_id, request_hash, body, request)
    VALUES (%s, %s, %s, %s, 'queued', %s, %s, %s, %s, %s)
    ON CONFLICT (client_request_id) DO NOTHING
    RETURNING id
)
SELECT id, pg_notify('od_runs', 'q ' || id) FROM queued
"""

# Runs without a conversation: oldest first. A conversation's run: only the oldest unfinished
# one of its lane, and not while the conversation's live session is on another live daemon.
_CLAIM = """
WITH picked AS (
    SELECT q.id FROM runs q
    WHERE q.status = 'queued' AND q.worker_id IS NULL AND {lane}
    ORDER BY q.seq
    LIMIT %(n)s
    FOR UPDATE OF q SKIP LOCKED
)
UPDATE runs r SET worker_id = %(me)s, lease_epoch = r.lease_epoch + 1
FROM picked WHERE r.id = picked.id
RETURNING r.seq, r.lease_epoch, r.request, {columns}
"""
_PLAIN = "q.conversation_id IS NULL"
_IN_TURN = """q.conversation_id IS NOT NULL
    AND NOT EXISTS (
        SELECT 1 FROM runs o
        WHERE o.conversation_id = q.conversation_id AND o.agent_id = q.agent_id
            AND o.status IN ('queued', 'running') AND o.seq < q.seq)
    AND NOT EXISTS (
        SELECT 1 FROM sessions s JOIN workers w ON w.id = s.worker_id
        WHERE s.conversation_id = q.conversation_id AND s.agent_id = q.agent_id
            AND s.status IN ('active', 'idle') AND s.worker_id <> %(me)s
            AND w.stopped IS NULL AND w.heartbeat > now() - make_interval(secs => %(lease)s))"""

# A session retired for a lost worker: its body as _retire() in sessions.py leaves one (a
# `retired` recent event, RECENT_EVENTS kept), and its process group in lost_sessions.
_RETIRE_LOST = """
WITH retired AS (
    UPDATE sessions SET status = 'retired', updated_at = now(), body = (
        body::jsonb || jsonb_build_object(
            'status', 'retired', 'pid', null, 'retiredReason', 'worker lost',
            'updatedAt', %(ts)s::text,
            'recentEvents', (
                SELECT coalesce(jsonb_agg(k.e ORDER BY k.n), '[]'::jsonb) FROM (
                    SELECT a.e, a.n FROM jsonb_array_elements(
                        coalesce(body::jsonb -> 'recentEvents', '[]'::jsonb)
                        || jsonb_build_array(jsonb_build_object(
                            'ts', %(ts)s::text, 'type', 'retired', 'data', jsonb_build_object(
                                'reason', 'worker lost', 'pid', body::jsonb -> 'pid')))
                    ) WITH ORDINALITY AS a(e, n)
                    ORDER BY a.n DESC LIMIT %(keep)s
                ) k
            )
        )
    )::json
    WHERE worker_id = %(worker)s AND status IN ('active', 'idle')
    RETURNING id, pid, pid_start_time
)
INSERT INTO lost_sessions (worker_id, session_id, pid, pid_start_time)
SELECT %(worker)s, id, pid, pid_start_time FROM retired WHERE pid IS NOT NULL
ON CONFLICT DO NOTHING
"""

_INSERT_LINES = """
INSERT INTO events (run_id, id, event, data, ts)
SELECT %s, i, e, d::json, t::timestamptz
FROM unnest(%s::int8[], %s::text[], %s::text[], %s::text[]) AS u(i, e, d, t)
"""


@dataclass(slots=True)
class Claim:
    """A queued run this daemon now executes: its row, request and lease epoch."""

    row: RunRow
    request: str | None
    epoch: int


def iso(moment: datetime) -> str:
    """A database timestamp the way status bodies write them."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _columns(lines: Sequence[LogLine]) -> tuple[list[int], list[str], list[str], list[str]]:
    """The events table's columns of encoded lines (their data and ts cut from the bytes)."""
    ids, names, datas, stamps = [], [], [], []
    for line in lines:
        text = line.line.decode()
        ids.append(line.id)
        names.append(line.event)
        datas.append(text[text.index('"data":', 6) + 7 : -_TS_TAIL])
        stamps.append(text[-_TS_TAIL + 7 : -2])
    return ids, names, datas, stamps


class ClusterDb:
    """One daemon's view of the shared tables."""

    def __init__(
        self, pool: AsyncConnectionPool[Any], worker_id: str, host: str, lease: float
    ) -> None:
        self.pool = pool
        self.worker_id = worker_id
        self.host = host
        self.lease = lease

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection; the database being away is a 503 (errors.Unavailable)."""
        try:
            async with self.pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:
            raise unavailable(exc) from None

    async def _all(self, query: str, params: Sequence[object] | dict[str, object] = ()) -> Any:
        async with self._connection() as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall() if cur.description is not None else []

    # Workers ------------------------------------------------------------------------------

    async def register(self, data_dir: Path | None) -> None:
        """Join the cluster (or come back under the same id) with a fresh heartbeat."""
        await self._all(
            "INSERT INTO workers (id, host) VALUES (%s, %s) ON CONFLICT (id) DO UPDATE"
            " SET host = excluded.host, started = now(), heartbeat = now(), stopped = NULL",
            (self.worker_id, self.host),
        )

    async def beat(self) -> None:
        """Renew this daemon's lease on everything it executes."""
        await self._all(
            "UPDATE workers SET heartbeat = now(), stopped = NULL WHERE id = %s",
            (self.worker_id,),
        )

    async def leave(self) -> None:
        """A clean stop: nobody need wait for the lease to know this daemon is gone."""
        await self._all("UPDATE workers SET stopped = now() WHERE id = %s", (self.worker_id,))

    async def workers(self) -> builtins.list[WorkerInfo]:
        """Every daemon that ever joined, with its heartbeat and the runs it holds."""
        records = await self._all(
            """
            SELECT w.id, w.host, w.started, w.heartbeat,
                   w.stopped IS NULL AND w.heartbeat > now() - make_interval(secs => %s),
                   (SELECT count(*) FROM runs r
                    WHERE r.worker_id = w.id AND r.status IN ('queued', 'running'))
            FROM workers w ORDER BY w.id
            """,
            (self.lease,),
        )
        return [
            WorkerInfo(
                id=r[0],
                host=r[1],
                started=iso(r[2]),
                heartbeat=iso(r[3]),
                alive=bool(r[4]),
                activeRuns=int(r[5]),
            )
            for r in records
        ]

    # The queue ----------------------------------------------------------------------------

    async def enqueue(self, row: RunRow, request: str) -> bool:
        """Insert a queued run for whoever claims it; False if its clientRequestId exists."""
        body = row.body
        records = await self._all(
            _ENQUEUE,
            (
                body.id,
                body.projectId,
                body.conversationId,
                body.agentId,
                body.createdAt,
                row.client_request_id,
                row.request_hash,
                body.model_dump_json(),
                request,
            ),
        )
        return bool(records)

    async def claim(self, plain: int, in_turn: int) -> builtins.list[Claim]:
        """Take up to `plain` runs without a conversation and `in_turn` conversation runs."""
        claims: builtins.list[tuple[int, Claim]] = []
        params: dict[str, object] = {"me": self.worker_id, "lease": self.lease}
        for lane, n in ((_PLAIN, plain), (_IN_TURN, in_turn)):
            if n <= 0:
                continue
            query = _CLAIM.format(lane=lane, columns=_prefixed(_COLUMNS))
            for r in await self._all(query, {**params, "n": n}):
                claims.append((r[0], Claim(_row(r[3:]), r[2], int(r[1]))))
        claims.sort(key=lambda c: c[0])
        return [c for _, c in claims]

    async def release(self, run_ids: Sequence[str]) -> builtins.list[str]:
        """Give claimed runs that never started back to the queue (a clean stop); the ids
        given back (a run made here has no stored request, and cannot go elsewhere)."""
        if not run_ids:
            return []
        records = await self._all(
            "WITH back AS (UPDATE runs SET worker_id = NULL, lease_epoch = lease_epoch + 1"
            " WHERE id = ANY(%s) AND worker_id = %s AND status = 'queued'"
            " AND request IS NOT NULL RETURNING id)"
            " SELECT id, pg_notify('od_runs', 'q ' || id) FROM back",
            (list(run_ids), self.worker_id),
        )
        return [r[0] for r in records]

    async def start(self, run_id: str, epoch: int) -> bool:
        """Before a claimed run starts its agent: drop its stored request, so that from now
        on a loss of this daemon fails the run instead of running it twice. False if the
        lease moved on."""
        records = await self._all(
            "UPDATE runs SET request = NULL WHERE id = %s AND worker_id = %s"
            " AND lease_epoch = %s RETURNING id",
            (run_id, self.worker_id, epoch),
        )
        return bool(records)

    # Leases and cancels -------------------------------------------------------------------

    async def check(self, held: dict[str, int]) -> tuple[set[str], set[str]]:
        """Of the runs this daemon executes: which it lost, and which someone canceled."""
        if not held:
            return set(), set()
        ids = list(held)
        records = await self._all(
            "SELECT f.id, r.worker_id IS NOT DISTINCT FROM %s AND r.lease_epoch = f.epoch,"
            " coalesce(r.cancel_requested, false)"
            " FROM unnest(%s::text[], %s::int8[]) AS f(id, epoch) LEFT JOIN runs r ON r.id = f.id",
            (self.worker_id, ids, [held[i] for i in ids]),
        )
        lost = {r[0] for r in records if not r[1]}
        canceled = {r[0] for r in records if r[1] and r[2]}
        return lost, canceled

    async def request_cancel(self, run_id: str) -> None:
        """Ask the executor of a run to cancel it (it also finds the flag by its heartbeat)."""
        await self._all(
            "WITH asked AS (UPDATE runs SET cancel_requested = true WHERE id = %s"
            " AND status IN ('queued', 'running') RETURNING id)"
            " SELECT pg_notify('od_runs', 'c ' || id) FROM asked",
            (run_id,),
        )

    async def cancel_queued(self, run_id: str) -> RunStatus | None:
        """End a queued run nobody claimed as canceled; None if it is claimed (or gone)."""
        async with self._connection() as conn, conn.transaction():
            cur = await conn.execute(
                f"SELECT {_COLUMNS} FROM runs WHERE id = %s AND status = 'queued'"
                " AND worker_id IS NULL FOR UPDATE SKIP LOCKED",
                (run_id,),
            )
            record = await cur.fetchone()
            if record is None:
                return None
            now = now_iso()
            end = {"status": "canceled", "code": None, "signal": None}
            _, lines, _ = encode_lines(1, [("end", end)], now, lambda s: s)
            body = _row(record).body.model_copy(
                update={
                    "status": "canceled",
                    "cancelRequested": True,
                    "updatedAt": now,
                    "finishedAt": now,
                    "lastEventId": 1,
                }
            )
            await self._end(conn, body, lines, lost=False)
            return body

    # Worker loss (invariant 12) -----------------------------------------------------------

    async def lost_workers(self) -> builtins.list[str]:
        """Other daemons whose lease ran out while they still hold runs or live sessions."""
        # An idle session counts too: else a daemon that died between turns leaves its
        # session `idle` on a dead pid until the conversation's next run.
        records = await self._all(
            "SELECT DISTINCT h.worker_id FROM ("
            " SELECT worker_id FROM runs WHERE status IN ('queued', 'running')"
            " UNION SELECT worker_id FROM sessions WHERE status IN ('active', 'idle')"
            ") h JOIN workers w ON w.id = h.worker_id WHERE w.id <> %s"
            " AND (w.stopped IS NOT NULL OR w.heartbeat < now() - make_interval(secs => %s))",
            (self.worker_id, self.lease),
        )
        return [r[0] for r in records]

    async def conclude_lost(self, worker: str) -> tuple[int, int]:
        """End a lost daemon's running runs WORKER_LOST and requeue its unstarted ones."""
        message = (
            f"The daemon executing this run ({worker}) stopped heartbeating for longer than "
            f"its lease ({self.lease:g} s), so {self.worker_id} ended the run; its agent "
            "process is stopped when that daemon returns. Start the run again."
        )
        ended = requeued = 0
        async with self._connection() as conn, conn.transaction():
            cur = await conn.execute(
                f"SELECT {_COLUMNS}, request FROM runs WHERE worker_id = %s"
                " AND status IN ('queued', 'running') FOR UPDATE SKIP LOCKED",
                (worker,),
            )
            for record in await cur.fetchall():
                row = _row(record[:6])
                if row.body.status == "queued" and record[6] is not None:
                    await _requeue(conn, row.body.id)
                    requeued += 1
                    continue
                await self._close(conn, row.body, WORKER_LOST, message, lost=True)
                ended += 1
            # Its live sessions are gone with it: the conversation resumes its thread elsewhere.
            # The body says no process, as every retired session does; the pid columns keep
            # what the lost daemon recorded, and lost_sessions what it must reap on return.
            await conn.execute(
                _RETIRE_LOST,
                {"worker": worker, "ts": now_iso(), "keep": RECENT_EVENTS},
            )
        return ended, requeued

    async def recover_own(self, kill: Callable[[RunRow], None], data_dir: Path | None) -> int:
        """At start: reap the processes of this worker's runs, end or requeue the runs."""
        count = 0
        async with self._connection() as conn, conn.transaction():
            cur = await conn.execute(
                f"SELECT {_COLUMNS}, request, lost FROM runs WHERE worker_id = %s"
                " AND (status IN ('queued', 'running') OR lost) FOR UPDATE",
                (self.worker_id,),
            )
            for record in await cur.fetchall():
                row = _row(record[:6])
                await anyio.to_thread.run_sync(kill, row)
                count += 1
                if record[7]:  # another daemon concluded it: only its processes were left
                    await conn.execute("UPDATE runs SET lost = false WHERE id = %s", (row.body.id,))
                elif row.body.status == "queued" and record[6] is not None:
                    await _requeue(conn, row.body.id)
                else:
                    await self._close(conn, row.body, None, None, lost=False, local=data_dir)
        return count

    async def reap_lost_sessions(self, kill: Callable[[int, int | None], bool]) -> int:
        """At start: kill the process groups of sessions others retired for this worker
        while it was gone (kill(pid, start time) spares a reused pid); each one once."""
        async with self._connection() as conn, conn.transaction():
            cur = await conn.execute(
                "DELETE FROM lost_sessions WHERE worker_id = %s RETURNING pid, pid_start_time",
                (self.worker_id,),
            )
            records = await cur.fetchall()
            # Killed before the commit: a crash here leaves the rows for the next start.
            for pid, started in records:
                await anyio.to_thread.run_sync(kill, int(pid), started)
        return len(records)

    async def sessions_moved(self, ids: Sequence[str]) -> builtins.set[str]:
        """Of sessions live here: those whose row another daemon retired or took over."""
        if not ids:
            return set()
        records = await self._all(
            "SELECT f.id FROM unnest(%s::text[]) AS f(id) LEFT JOIN sessions s ON s.id = f.id"
            " WHERE s.id IS NULL OR s.worker_id IS DISTINCT FROM %s"
            " OR s.status NOT IN ('active', 'idle')",
            (list(ids), self.worker_id),
        )
        return {r[0] for r in records}

    # Ending a run for someone else --------------------------------------------------------

    async def _close(
        self,
        conn: AsyncConnection[Any],
        body: RunStatus,
        code: str | None,
        message: str | None,
        *,
        lost: bool,
        local: Path | None = None,
    ) -> None:
        """Append error + end (unless the log already ends) and store the failed body."""
        cur = await conn.execute(_LAST, (body.id,))
        last_record = await cur.fetchone()
        last = (
            LogLine(last_record[0], last_record[1], last_record[2].encode())
            if last_record
            else None
        )
        now = now_iso()
        logged = as_logged(body, last, now)
        if logged is not None:
            await self._end(conn, logged, [], lost=lost)
            return
        first = (last.id if last is not None else 0) + 1
        if code is None or message is None:
            raw, lines, lengths = restart_lines(first, now)
            new = failed_by_restart(body, now, first + 1)
        else:
            raw, lines, lengths = restart_lines(first, now, code, message)
            new = failed_by_restart(body, now, first + 1, code, message)
        await self._end(conn, new, lines, lost=lost)
        if local is not None and body.eventsLogPath is not None:
            _append_local(Path(body.eventsLogPath), first, raw, lengths)

    async def _end(
        self, conn: AsyncConnection[Any], body: RunStatus, lines: Sequence[LogLine], *, lost: bool
    ) -> None:
        if lines:
            await conn.execute(_INSERT_LINES, (body.id, *_columns(lines)))
        await conn.execute(
            "UPDATE runs SET status = %s, body = %s, lease_epoch = lease_epoch + 1, lost = %s"
            " WHERE id = %s",
            (body.status, body.model_dump_json(), lost, body.id),
        )
        await conn.execute(
            "SELECT pg_notify('od_runs', 'e ' || %s || ' ' || %s),"
            " pg_notify('od_runs', 's ' || %s || ' ' || %s || ' ' || %s)",
            (body.id, body.lastEventId, body.id, body.status, body.conversationId or ""),
        )


async def _requeue(conn: AsyncConnection[Any], run_id: str) -> None:
    """A claimed run that never started goes back to the queue, under a new epoch."""
    await conn.execute(
        "UPDATE runs SET worker_id = NULL, lease_epoch = lease_epoch + 1 WHERE id = %s",
        (run_id,),
    )
    await conn.execute("SELECT pg_notify('od_runs', 'q ' || %s)", (run_id,))


def _prefixed(columns: str) -> str:
    return ", ".join(f"r.{c.strip()}" for c in columns.split(","))


def _append_local(path: Path, first: int, raw: bytes, lengths: list[int]) -> None:
    """The local events.jsonl follows when it holds what the database holds."""
    tail = recover_tail(path)
    if (tail.id if tail is not None else 0) == first - 1:
        file = EventLog.create(path.parent)
        try:
            file.append(first, raw, lengths)
        finally:
            file.close()


__all__ = ["WORKER_LOST", "Claim", "ClusterDb", "iso"]
