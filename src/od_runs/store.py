"""SQLite run store: schema, numbered migrations, and a single coalescing writer.

Status bodies are written when a run changes state and, while it streams, at most every
row_writer.FLUSH_INTERVAL seconds; never once per event.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import anyio

from .models import RunStatus, SessionDetail
from .row_writer import CoalescingWriter
from .sql_reads import SqlReads

DB_NAME = "od-runs.sqlite3"

MIGRATIONS: Sequence[str] = (
    # 1: runs, with the status body as JSON and the columns we filter or recover by.
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        project_id TEXT,
        conversation_id TEXT,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        client_request_id TEXT UNIQUE,
        request_hash TEXT,
        child_pid INTEGER,
        child_start_time INTEGER,
        body TEXT NOT NULL
    );
    CREATE INDEX runs_by_project ON runs (project_id, created_at);
    CREATE INDEX runs_by_conversation ON runs (conversation_id, created_at);
    CREATE INDEX runs_by_status ON runs (status, created_at);
    """,
    # 2: sessions (live agent processes per conversation), body is the SessionDetail JSON.
    """
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        conversation_id TEXT,
        agent_id TEXT NOT NULL,
        status TEXT NOT NULL,
        pid INTEGER,
        pid_start_time INTEGER,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE UNIQUE INDEX sessions_by_conversation ON sessions (conversation_id, agent_id);
    CREATE INDEX sessions_by_status ON sessions (status, updated_at);
    """,
)


@dataclass(slots=True)
class RunRow:
    """What the store keeps of a run besides its status body."""

    body: RunStatus
    client_request_id: str | None = None
    request_hash: str | None = None
    child_start_time: int | None = None
    # Several daemons (pg_store.py): the executing daemon and its lease epoch, so that a write
    # of a daemon whose lease moved on is refused (invariant 11). SQLite ignores both.
    worker_id: str | None = None
    lease_epoch: int = 0


def row_params(row: RunRow) -> tuple[object, ...]:
    """The runs table's columns of a row, in the order upsert_sql() names them."""
    body = row.body
    return (
        body.id,
        body.projectId,
        body.conversationId,
        body.status,
        body.createdAt,
        row.client_request_id,
        row.request_hash,
        body.childPid,
        row.child_start_time,
        body.model_dump_json(),
    )


def upsert_sql(placeholder: str) -> str:
    """INSERT … ON CONFLICT of one runs row, with the driver's placeholder (? or %s)."""
    marks = ", ".join([placeholder] * 10)
    return f"""
INSERT INTO runs (id, project_id, conversation_id, status, created_at, client_request_id,
                  request_hash, child_pid, child_start_time, body)
VALUES ({marks})
ON CONFLICT (id) DO UPDATE SET
    status = excluded.status,
    child_pid = excluded.child_pid,
    child_start_time = excluded.child_start_time,
    body = excluded.body
"""


_UPSERT = upsert_sql("?")
_COLUMNS = "body, client_request_id, request_hash, child_start_time"


def row_from_record(record: tuple[str, str | None, str | None, int | None]) -> RunRow:
    """A RunRow from the columns of a SELECT of body, request id, hash and start time."""
    return RunRow(RunStatus.model_validate_json(record[0]), record[1], record[2], record[3])


class SqliteRunStore(SqlReads, CoalescingWriter):
    """The runs table behind one aiosqlite connection (its own thread, one writer); its
    reads are sql_reads.SqlReads'."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        super().__init__()
        self._db = db

    @classmethod
    async def open(cls, path: Path) -> SqliteRunStore:
        """Open (creating and migrating) the database at path."""
        in_memory = str(path) == ":memory:"
        if not in_memory and not await anyio.Path(path).exists():
            # Create the file private before SQLite opens it with the umask's mode.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        db = await aiosqlite.connect(path, isolation_level=None)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA busy_timeout=5000")
        store = cls(db)
        await store._migrate()
        return store

    async def _migrate(self) -> None:
        # fetchone() may return None in aiosqlite's types; PRAGMA user_version always has a row.
        (version,) = await (await self._db.execute("PRAGMA user_version")).fetchone()  # type: ignore[misc]
        for number, script in enumerate(MIGRATIONS, start=1):
            if number <= version:
                continue
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in filter(str.strip, script.split(";")):
                    await self._db.execute(statement)
                await self._db.execute(f"PRAGMA user_version = {number}")
                await self._db.execute("COMMIT")
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise

    async def close(self) -> None:
        """Write what is pending and close; idempotent."""
        if self._closed:
            return
        await self._write_pending()
        self._closed = True
        await self._db.close()

    # Writing ------------------------------------------------------------------------------

    async def insert(self, row: RunRow) -> None:
        """Write a new run now (creation must be durable before we answer 202)."""
        async with self._tx_lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                await self._db.execute(_UPSERT, row_params(row))
                await self._db.execute("COMMIT")
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise

    async def _commit_rows(self, rows: builtins.list[RunRow]) -> None:
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            await self._db.executemany(_UPSERT, [row_params(r) for r in rows])
            await self._db.execute("COMMIT")
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise

    async def delete(self, run_id: str) -> bool:
        """Remove a run's row and any update still queued for it; False if there was none."""
        async with self._tx_lock:
            # Under the lock: the writer cannot be holding this run's row half-way either.
            self._pending.pop(run_id, None)
            if self._closed:
                return False
            cursor = await self._db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
            return cursor.rowcount > 0

    # Reading (the queries are sql_reads.py's) -------------------------------------------

    async def _fetch(self, query: str, params: Sequence[object] = ()) -> builtins.list[Any]:
        cursor = await self._db.execute(query, params)
        return list(await cursor.fetchall())

    def _to_row(self, record: Sequence[Any]) -> RunRow:
        return RunRow(RunStatus.model_validate_json(record[0]), record[1], record[2], record[3])

    async def unfinished(self) -> builtins.list[RunRow]:
        """Rows a crash left queued or running."""
        cursor = await self._db.execute(
            f"SELECT {_COLUMNS} FROM runs WHERE status IN ('queued', 'running')"
        )
        # aiosqlite types a row as Row (a tuple of Any); our SELECT fixes its columns.
        return [row_from_record(r) for r in await cursor.fetchall()]  # type: ignore[arg-type]

    # Sessions -----------------------------------------------------------------------------
    # A handful of writes per turn (spawn, turn start and end, retirement): written at once.

    async def save_session(self, detail: SessionDetail, pid_start_time: int | None) -> None:
        """Insert or update a session row."""
        params = (
            detail.id,
            detail.conversationId,
            detail.agentId,
            detail.status,
            detail.pid,
            pid_start_time,
            detail.createdAt,
            detail.updatedAt,
            detail.model_dump_json(),
        )
        async with self._tx_lock:
            if self._closed:
                return
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                await self._db.execute(_SESSION_UPSERT, params)
                await self._db.execute("COMMIT")
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise

    async def live_sessions(self) -> builtins.list[tuple[SessionDetail, int | None]]:
        """Sessions a crash left with a process (active or idle), with the pid's start time."""
        cursor = await self._db.execute(
            "SELECT body, pid_start_time FROM sessions WHERE status IN ('active', 'idle')"
        )
        return [(SessionDetail.model_validate_json(r[0]), r[1]) for r in await cursor.fetchall()]


_SESSION_UPSERT = """
INSERT INTO sessions (id, conversation_id, agent_id, status, pid, pid_start_time, created_at,
                      updated_at, body)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    status = excluded.status,
    pid = excluded.pid,
    pid_start_time = excluded.pid_start_time,
    updated_at = excluded.updated_at,
    body = excluded.body
"""
