"""PostgreSQL run store: schema, numbered migrations under an advisory lock, a coalescing writer.

`od-runs serve --database-url postgresql://...` keeps runs, sessions and events in one
database (pg_events.py has the events), so that several daemons can share it later. Today one
daemon uses it; the workers table and the runs' worker column are there for placement.

The same shape as store.py: creation is written at once, status updates are coalesced by one
writer task (never once per event). Connections come from psycopg's async pool.
"""

from __future__ import annotations

import builtins
import logging
import re
from collections.abc import Sequence
from typing import Any

import anyio
import psycopg
from psycopg_pool import AsyncConnectionPool

from .errors import Unavailable
from .models import SessionDetail
from .row_writer import CoalescingWriter
from .sql_reads import SqlReads
from .storage import DuplicateRequest
from .store import RunRow, row_from_record, row_params

log = logging.getLogger("od_runs.pg_store")

# pg_advisory_lock key of the migrations ("od-runs" in ASCII): concurrent start-ups take turns.
MIGRATION_LOCK = 0x6F642D72756E73
CONNECT_TIMEOUT = 5
# A pool retries a lost connection with a doubling delay for this long, then tries afresh on
# the next request: so a database back from an outage is used again within seconds.
RECONNECT_TIMEOUT = 3.0
# The pool's own line per failed attempt says what our one warning says.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

MIGRATIONS: Sequence[str] = (
    # 1: runs (status body + the columns we filter or recover by), events, sessions, workers.
    # runs.worker_id and workers are unused yet: the daemon that executes a run will hold a
    # lease on it (issue 11, next step).
    """
    CREATE TABLE workers (
        id text PRIMARY KEY,
        host text NOT NULL,
        started timestamptz NOT NULL DEFAULT now(),
        heartbeat timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE runs (
        id text PRIMARY KEY,
        project_id text,
        conversation_id text,
        status text NOT NULL,
        created_at timestamptz NOT NULL,
        client_request_id text UNIQUE,
        request_hash text,
        child_pid integer,
        child_start_time bigint,
        worker_id text REFERENCES workers (id) ON DELETE SET NULL,
        body json NOT NULL
    );
    CREATE INDEX runs_by_project ON runs (project_id, created_at);
    CREATE INDEX runs_by_conversation ON runs (conversation_id, created_at);
    CREATE INDEX runs_by_status ON runs (status, created_at);
    CREATE TABLE events (
        run_id text NOT NULL,
        id bigint NOT NULL,
        event text NOT NULL,
        data json NOT NULL,
        ts timestamptz NOT NULL,
        PRIMARY KEY (run_id, id)
    );
    CREATE TABLE sessions (
        id text PRIMARY KEY,
        conversation_id text,
        agent_id text NOT NULL,
        status text NOT NULL,
        pid integer,
        pid_start_time bigint,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        body json NOT NULL
    );
    CREATE UNIQUE INDEX sessions_by_conversation ON sessions (conversation_id, agent_id);
    CREATE INDEX sessions_by_status ON sessions (status, updated_at);
    """,
    # 2: several daemons. A queued run keeps its request for whichever daemon claims it; seq
    # orders the queue (and a conversation's runs); lease_epoch fences writes (invariant 11);
    # lost marks runs concluded for a dead worker whose processes it must reap on return.
    """
    ALTER TABLE runs ADD COLUMN seq bigserial;
    ALTER TABLE runs ADD COLUMN agent_id text;
    ALTER TABLE runs ADD COLUMN request text;
    ALTER TABLE runs ADD COLUMN lease_epoch bigint NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false;
    ALTER TABLE runs ADD COLUMN lost boolean NOT NULL DEFAULT false;
    UPDATE runs SET agent_id = body->>'agentId';
    CREATE INDEX runs_queue ON runs (seq) WHERE status = 'queued' AND worker_id IS NULL;
    CREATE INDEX runs_by_worker ON runs (worker_id) WHERE status IN ('queued', 'running') OR lost;
    CREATE INDEX runs_by_lane ON runs (conversation_id, agent_id, seq)
        WHERE status IN ('queued', 'running');
    ALTER TABLE workers ADD COLUMN stopped timestamptz;
    ALTER TABLE sessions ADD COLUMN worker_id text;
    """,
    # 3: the process groups of sessions another daemon retired for a lost worker, which that
    # worker reaps (once) when it comes back: a kill -9 leaves the app-server running.
    """
    CREATE TABLE lost_sessions (
        worker_id text NOT NULL,
        session_id text NOT NULL,
        pid integer NOT NULL,
        pid_start_time bigint,
        PRIMARY KEY (worker_id, session_id, pid)
    );
    """,
)

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS od_runs_schema (
    version integer PRIMARY KEY,
    applied timestamptz NOT NULL DEFAULT now()
)
"""


class DatabaseUnavailable(Exception):
    """The database cannot be used: unreachable, refused, or of a newer schema."""


def redact_url(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].strip()


def unavailable(exc: BaseException) -> Unavailable:
    """The 503 a request gets while the database is unreachable."""
    return Unavailable(
        f"the database is unreachable ({_first_line(exc)}); runs already executing go "
        "on, retry this request once it is back",
        code="DATABASE_UNAVAILABLE",
    )


async def connect(url: str) -> psycopg.AsyncConnection[Any]:
    """One autocommit connection, or DatabaseUnavailable saying why in one line."""
    try:
        return await psycopg.AsyncConnection.connect(
            url, autocommit=True, connect_timeout=CONNECT_TIMEOUT
        )
    except (psycopg.Error, ValueError) as exc:
        raise DatabaseUnavailable(
            f"cannot connect to the database {redact_url(url)}: {_first_line(exc)}"
        ) from None


async def migrate(url: str) -> int:
    """Bring the schema to this version (once, whoever else starts at the same time)."""
    conn = await connect(url)
    try:
        # Session-level lock: a second daemon starting now waits here, then finds it done.
        await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            await conn.execute(_VERSION_TABLE)
            cur = await conn.execute("SELECT coalesce(max(version), 0) FROM od_runs_schema")
            record = await cur.fetchone()
            version = int(record[0]) if record else 0
            if version > len(MIGRATIONS):
                raise DatabaseUnavailable(
                    f"the database {redact_url(url)} has schema version {version}, newer than "
                    f"this od-runs knows ({len(MIGRATIONS)}): upgrade od-runs"
                )
            for number, script in enumerate(MIGRATIONS, start=1):
                if number <= version:
                    continue
                async with conn.transaction():
                    await conn.execute(script)
                    await conn.execute(
                        "INSERT INTO od_runs_schema (version) VALUES (%s)", (number,)
                    )
            return len(MIGRATIONS)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    except psycopg.Error as exc:
        raise DatabaseUnavailable(
            f"cannot migrate the database {redact_url(url)}: {_first_line(exc)}"
        ) from None
    finally:
        await conn.close()


async def open_pool(url: str, max_size: int = 4) -> AsyncConnectionPool[Any]:
    """An open pool of autocommit connections."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
        open=False,
        # A request waits this long for a connection, not the pool's 30 s: then it is a 503.
        timeout=CONNECT_TIMEOUT,
        # No check per checkout (a round trip per query): a connection the server dropped
        # fails its one request with a 503, and the pool replaces it.
        reconnect_timeout=RECONNECT_TIMEOUT,
    )
    try:
        await pool.open(wait=True, timeout=CONNECT_TIMEOUT * 2)
    except Exception as exc:
        await pool.close()
        raise DatabaseUnavailable(
            f"cannot connect to the database {redact_url(url)}: {_first_line(exc)}"
        ) from None
    return pool


# A status write lands only while the writer still holds the run's lease (invariant 11): a
# daemon whose lease moved on (another concluded the run) changes nothing.
_UPSERT = """
INSERT INTO runs (id, project_id, conversation_id, status, created_at, client_request_id,
                  request_hash, child_pid, child_start_time, body, worker_id, lease_epoch)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET
    status = excluded.status,
    child_pid = excluded.child_pid,
    child_start_time = excluded.child_start_time,
    body = excluded.body
WHERE runs.lease_epoch = excluded.lease_epoch
    AND runs.worker_id IS NOT DISTINCT FROM excluded.worker_id
"""
_COLUMNS = "body::text, client_request_id, request_hash, child_start_time, worker_id, lease_epoch"
# Every daemon LISTENs here; payloads carry ids only (cluster.py says which).
CHANNEL = "od_runs"
_NOTIFY_STATUS = """
SELECT pg_notify('od_runs', 's ' || r || ' ' || s || ' ' || c)
FROM unnest(%s::text[], %s::text[], %s::text[]) AS u(r, s, c)
"""

# A daemon taking over a session still live on another (whose lease ran out before anyone
# concluded it) leaves the other's process group in lost_sessions, for it to reap on return.
_SESSION_UPSERT = """
WITH orphaned AS (
    INSERT INTO lost_sessions (worker_id, session_id, pid, pid_start_time)
    SELECT worker_id, id, pid, pid_start_time FROM sessions
    WHERE id = %s AND worker_id <> %s AND status IN ('active', 'idle') AND pid IS NOT NULL
    ON CONFLICT DO NOTHING
)
INSERT INTO sessions (id, conversation_id, agent_id, status, pid, pid_start_time, created_at,
                      updated_at, body, worker_id)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET
    status = excluded.status,
    worker_id = excluded.worker_id,
    pid = excluded.pid,
    pid_start_time = excluded.pid_start_time,
    updated_at = excluded.updated_at,
    body = excluded.body
"""


def _params(row: RunRow) -> tuple[object, ...]:
    return (*row_params(row), row.worker_id, row.lease_epoch)


def _row(record: Sequence[Any]) -> RunRow:
    row = row_from_record((record[0], record[1], record[2], record[3]))
    row.worker_id, row.lease_epoch = record[4], int(record[5])
    return row


class PgRunStore(SqlReads, CoalescingWriter):
    """storage.RunStore on PostgreSQL: the runs and sessions tables (most reads are
    sql_reads.SqlReads')."""

    PLACEHOLDER = "%s"
    BODY = "body::text"
    ROW_COLUMNS = _COLUMNS

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        super().__init__()
        self.pool = pool
        # The daemon's worker id (cluster.py sets it): sessions record where they live.
        self.worker_id: str | None = None

    @classmethod
    async def open(cls, url: str) -> PgRunStore:
        """Migrate the database at url and open a pool on it."""
        await migrate(url)
        return cls(await open_pool(url))

    async def close(self) -> None:
        """Write what is pending and close the pool; idempotent."""
        if self._closed:
            return
        try:
            with anyio.move_on_after(CONNECT_TIMEOUT * 2):
                await self._write_pending()
        except psycopg.Error as exc:
            log.error("run statuses not written at shutdown: %s", exc)
        self._closed = True
        await self.pool.close()

    async def _fetch(self, query: str, params: Sequence[object] = ()) -> builtins.list[Any]:
        return await self._execute(query, params)

    def _to_row(self, record: Sequence[Any]) -> RunRow:
        return _row(record)

    async def _execute(self, query: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(query, params)
                return await cur.fetchall() if cur.description is not None else []
        except psycopg.OperationalError as exc:
            raise unavailable(exc) from None

    # Writing ------------------------------------------------------------------------------

    async def insert(self, row: RunRow) -> None:
        """Write a run's row now, fenced by its lease like every status write."""
        try:
            await self._execute(_UPSERT, _params(row))
        except psycopg.errors.UniqueViolation:
            # Another daemon created a run with this clientRequestId a moment before.
            raise DuplicateRequest(row.client_request_id) from None

    async def _commit_rows(self, rows: builtins.list[RunRow]) -> None:
        # One pipeline: BEGIN, the upserts, the notifications and COMMIT in one round trip.
        async with self.pool.connection() as conn, conn.pipeline(), conn.transaction():
            await conn.cursor().executemany(_UPSERT, [_params(r) for r in rows])
            # Other daemons following these runs refresh their status (committed with it).
            await conn.execute(
                _NOTIFY_STATUS,
                (
                    [r.body.id for r in rows],
                    [r.body.status for r in rows],
                    [r.body.conversationId or "" for r in rows],
                ),
            )

    # Reading ------------------------------------------------------------------------------

    async def delete(self, run_id: str) -> bool:
        """Remove a finished run's row (and any update still queued for it); False if none."""
        self._pending.pop(run_id, None)
        # Every daemon hears of it: the web monitors drop the row, the host of the run's local
        # events.jsonl removes it (cluster.py).
        records = await self._execute(
            "WITH gone AS (DELETE FROM runs WHERE id = %s"
            " RETURNING id, project_id, conversation_id)"
            " SELECT id, pg_notify('od_runs', 'd ' || id || ' ' || coalesce(project_id, '')"
            " || ' ' || coalesce(conversation_id, '')) FROM gone",
            (run_id,),
        )
        return bool(records)

    async def unfinished(self) -> builtins.list[RunRow]:
        """Rows this worker left queued or running, or that others concluded as lost."""
        records = await self._execute(
            f"SELECT {_COLUMNS} FROM runs WHERE worker_id = %s"
            " AND (status IN ('queued', 'running') OR lost)",
            (self.worker_id,),
        )
        return [_row(r) for r in records]

    # Sessions -----------------------------------------------------------------------------

    async def save_session(self, detail: SessionDetail, pid_start_time: int | None) -> None:
        """Insert or update a session row."""
        if self._closed:
            return
        await self._execute(
            _SESSION_UPSERT,
            (
                detail.id,
                self.worker_id,
                detail.id,
                detail.conversationId,
                detail.agentId,
                detail.status,
                detail.pid,
                pid_start_time,
                detail.createdAt,
                detail.updatedAt,
                detail.model_dump_json(),
                self.worker_id,
            ),
        )

    async def live_sessions(self) -> builtins.list[tuple[SessionDetail, int | None]]:
        """Sessions this worker left with a process (active or idle), with its start time."""
        records = await self._execute(
            "SELECT body::text, pid_start_time FROM sessions WHERE status IN ('active', 'idle')"
            " AND worker_id IS NOT DISTINCT FROM %s",
            (self.worker_id,),
        )
        return [(SessionDetail.model_validate_json(r[0]), r[1]) for r in records]


__all__ = [
    "MIGRATIONS",
    "DatabaseUnavailable",
    "PgRunStore",
    "migrate",
    "redact_url",
    "unavailable",
]
