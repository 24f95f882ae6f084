"""PostgreSQL events: the events table as a storage.EventStore, written by one writer task.

A batch goes to the database first, then to the run's local events.jsonl (the executing
daemon keeps the file a person can `tail -F`), and only then is it published: append_batch()
returns a storage.Commit that the writer resolves after both (invariant 3). The writer takes
every batch queued while the previous insert was in flight, of all runs, and inserts them in
one statement (one round trip, autocommit), so the round trip costs latency, not throughput.
Reads (replay, the head) come from the database, in worker threads, through a sync pool.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import psycopg
from psycopg_pool import ConnectionPool

from .eventlog import EventLog, LogLine
from .models import RunError
from .pg_store import CONNECT_TIMEOUT, RECONNECT_TIMEOUT, DatabaseUnavailable, connect, unavailable
from .storage import Commit, FileEventStore, RunLog, tree_size

log = logging.getLogger("od_runs.pg_events")

# Up to this many rows a batch is inserted by one statement rather than COPY.
SMALL_BATCH = 64
# While the database is away, batches wait this long between tries...
RETRY_INTERVAL = 1.0
# ...and at most this many bytes of them wait, before the runs they belong to fail.
BUFFER_LIMIT = 256 << 20
# Rows per replay query: big enough to stream fast, small enough to bound a reader's memory.
PAGE = 2000
_NO_LIMIT = 2**62
# `,"ts":"2026-01-01T00:00:00.000Z"}`: the fixed-width end of every line (eventlog.py).
_TS_TAIL = 33

_INSERT = """
INSERT INTO events (run_id, id, event, data, ts)
SELECT r, i, e, d::json, t::timestamptz
FROM unnest(%s::text[], %s::int8[], %s::text[], %s::text[], %s::text[]) AS u(r, i, e, d, t)
"""
# The writer's insert, fenced (invariant 11): rows go in only for runs whose lease this
# worker still holds at that epoch. FOR SHARE makes a concurrent takeover (pg_cluster.py,
# FOR UPDATE) wait for this statement, or this one see the epoch it moved to. The result
# names the runs written, and each gets a notification of its new head (ids only).
_FENCED_INSERT = """
WITH fence AS (
    SELECT r.id FROM runs r
    JOIN unnest(%s::text[], %s::int8[]) AS f(id, epoch) ON r.id = f.id
    WHERE r.lease_epoch = f.epoch AND r.worker_id = %s
    FOR SHARE OF r
), written AS (
    INSERT INTO events (run_id, id, event, data, ts)
    SELECT u.r, u.i, u.e, u.d::json, u.t::timestamptz
    FROM unnest(%s::text[], %s::int8[], %s::text[], %s::text[], %s::text[]) AS u(r, i, e, d, t)
    WHERE u.r IN (SELECT id FROM fence)
    -- A retry after a connection lost mid-commit finds its rows there already.
    ON CONFLICT (run_id, id) DO NOTHING
)
SELECT f.id, pg_notify('od_runs', 'e ' || f.id || ' ' || h.head)
FROM fence f JOIN unnest(%s::text[], %s::int8[]) AS h(id, head) ON h.id = f.id
"""
# The fast path's three statements, in one transaction (PgEventStore._copy).
_FENCE = """
SELECT r.id, pg_notify('od_runs', 'e ' || r.id || ' ' || h.head) FROM runs r
JOIN unnest(%s::text[], %s::int8[]) AS f(id, epoch) ON r.id = f.id
JOIN unnest(%s::text[], %s::int8[]) AS h(id, head) ON h.id = f.id
WHERE r.lease_epoch = f.epoch AND r.worker_id = %s
FOR SHARE OF r
"""
_COPY = "COPY events (run_id, id, event, data, ts) FROM STDIN"


def _copy_row(run_id: bytes, line: LogLine) -> bytes:
    """A line as a row of COPY's text format: JSON has no raw tab or newline, only
    backslashes to double."""
    raw = line.line
    data = raw[raw.index(b'"data":', 6) + 7 : -_TS_TAIL]
    if b"\\" in data:
        data = data.replace(b"\\", b"\\\\")
    return b"%s\t%d\t%s\t%s\t%s\n" % (run_id, line.id, line.event.encode(), data, raw[-26:-2])


# The line as eventlog.encode_lines wrote it, rebuilt by the server (json keeps data's text).
_LINE = """'{"id":' || id || ',"event":"' || event || '","data":' || data::text
    || ',"ts":"' || to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') || '"}'"""
_SELECT = f"""
SELECT id, event, {_LINE} FROM events
WHERE run_id = %s AND id > %s AND id <= %s ORDER BY id LIMIT %s
"""
_LAST = f"SELECT id, event, {_LINE} FROM events WHERE run_id = %s ORDER BY id DESC LIMIT 1"


class DatabaseWriteError(OSError):
    """The database refused or lost a batch of events."""


class LeaseLost(DatabaseWriteError):
    """This daemon no longer holds the run's lease: another one concluded it (invariant 11)."""

    run_error = RunError(
        code="WORKER_LOST",
        message="This daemon lost its lease on the run (it was unreachable for longer than "
        "the lease) and another daemon concluded it; the agent was stopped here.",
        retryable=True,
    )


class PgRunLog:
    """One run's events in the database, plus the executing daemon's events.jsonl."""

    def __init__(self, store: PgEventStore, run_id: str, file: EventLog | None) -> None:
        self.store = store
        self.run_id = run_id
        self.file = file
        self.writable = file is not None or store.files is None
        self.pending = 0
        self.broken: OSError | None = None
        # The lease epoch this daemon's writes carry (cluster.py sets it when it claims).
        self.epoch = 0

    @property
    def path(self) -> Path | None:
        """The local events.jsonl, if this daemon writes one."""
        return self.file.path if self.file is not None else None

    def append_batch(
        self, first_id: int, raw: bytes, lines: builtins.list[LogLine], lengths: builtins.list[int]
    ) -> Commit:
        """Queue the batch for the writer; the Commit resolves once it is committed."""
        if self.broken is not None:
            raise self.broken
        if not self.writable:
            raise DatabaseWriteError(f"the event log of {self.run_id} is closed")
        return self.store.enqueue(self, first_id, raw, lines, lengths)

    def close(self) -> None:
        """No more appends; the file closes once the queued batches are written."""
        self.writable = False
        if self.pending == 0 and self.file is not None:
            self.file.close()

    def read_after(self, cursor: int, upto: int | None = None) -> Iterator[builtins.list[LogLine]]:
        """Batches of the events with cursor < id <= upto, a page per query (blocking)."""
        end = _NO_LIMIT if upto is None else upto
        while cursor < end:
            try:
                with self.store.read_pool.connection() as conn:
                    rows = conn.execute(_SELECT, (self.run_id, cursor, end, PAGE)).fetchall()
            except psycopg.OperationalError as exc:
                raise unavailable(exc) from None
            if not rows:
                return
            yield [LogLine(r[0], r[1], r[2].encode()) for r in rows]
            if len(rows) < PAGE:
                return
            cursor = rows[-1][0]

    def read_frames_after(
        self, cursor: int, upto: int | None = None
    ) -> Iterator[tuple[bytes, int, str]]:
        """The same as SSE frames: (bytes, last id, last event name) per page."""
        for batch in self.read_after(cursor, upto):
            yield b"".join([line.frame for line in batch]), batch[-1].id, batch[-1].event

    def last(self) -> LogLine | None:
        """The newest event in the database, or None."""
        try:
            with self.store.read_pool.connection() as conn:
                row = conn.execute(_LAST, (self.run_id,)).fetchone()
        except psycopg.OperationalError as exc:
            raise unavailable(exc) from None
        return LogLine(row[0], row[1], row[2].encode()) if row else None


class _Queued:
    __slots__ = ("commit", "first_id", "lengths", "lines", "log", "raw", "tried")

    def __init__(
        self,
        run_log: PgRunLog,
        first_id: int,
        raw: bytes,
        lines: builtins.list[LogLine],
        lengths: builtins.list[int],
    ) -> None:
        self.log = run_log
        self.first_id = first_id
        self.raw = raw
        self.lines = lines
        self.lengths = lengths
        self.commit = Commit()
        self.tried = False


class PgEventStore:
    """storage.EventStore on PostgreSQL, with each run's events.jsonl under files (if any)."""

    def __init__(
        self, url: str, conn: psycopg.AsyncConnection[Any], read_pool: ConnectionPool[Any]
    ) -> None:
        self.url = url
        self.files: Path | None = None
        self.read_pool = read_pool
        self._conn = conn
        self._queue: builtins.list[_Queued] = []
        self._wake = anyio.Event()
        self._drained = anyio.Event()
        self._writing = anyio.Lock()
        # This daemon's worker id: the fence of every insert (cluster.py sets it).
        self.worker_id = ""
        # Bytes of batches not yet written, and whether the database is away right now.
        self._buffered = 0
        self._away = False

    @classmethod
    async def connect(cls, url: str, files: Path | None) -> PgEventStore:
        """Connect the writer and the readers (the schema is PgRunStore.open's job)."""
        conn = await connect(url)
        pool: ConnectionPool[Any] = ConnectionPool(
            url,
            min_size=1,
            max_size=4,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
            open=False,
            timeout=CONNECT_TIMEOUT,
            reconnect_timeout=RECONNECT_TIMEOUT,
        )
        try:
            await anyio.to_thread.run_sync(lambda: pool.open(wait=True, timeout=10))
        except BaseException:
            await conn.close()
            raise
        store = cls(url, conn, pool)
        store.files = files
        return store

    # storage.EventStore ------------------------------------------------------------------

    def create(self, run_id: str, lease_epoch: int = 0) -> RunLog:
        """A new run's log: rows in the database, and its events.jsonl under files."""
        file = EventLog.create(self.files / run_id) if self.files is not None else None
        run_log = PgRunLog(self, run_id, file)
        run_log.epoch = lease_epoch
        return run_log

    def open(self, run_id: str, location: str | None) -> RunLog:
        """A run's log for reading; the database has it whoever wrote it."""
        run_log = PgRunLog(self, run_id, None)
        run_log.writable = False
        return run_log

    def location(self, log: RunLog) -> str | None:
        """The local events.jsonl's path."""
        path = log.path if isinstance(log, PgRunLog) else None
        return str(path) if path is not None else None

    def usage(self, run_id: str, location: str | None) -> int:
        """Bytes of the run's event rows (their text), plus its local log directory."""
        local = tree_size(self.files / run_id) if self.files is not None else 0
        return self._rows_usage(run_id) + local

    def _rows_usage(self, run_id: str) -> int:
        with self.read_pool.connection() as conn:
            row = conn.execute(
                "SELECT COALESCE(SUM(octet_length(event) + octet_length(data::text)), 0) "
                "FROM events WHERE run_id = %s",
                (run_id,),
            ).fetchone()
        return int(row[0] if row else 0)

    def delete(self, run_id: str, location: str | None) -> int:
        """Delete the run's local directory (if this host has it), then its event rows."""
        freed = self.usage(run_id, location) if self.files is None else 0
        if self.files is not None:
            # Local first: a run whose row never got written (the database away) is all here.
            freed = FileEventStore(self.files).delete(run_id, location)
            freed += self._rows_usage(run_id)
        with self.read_pool.connection() as conn:
            conn.execute("DELETE FROM events WHERE run_id = %s", (run_id,))
            conn.commit()
        return freed

    # The writer ---------------------------------------------------------------------------

    def enqueue(
        self,
        run_log: PgRunLog,
        first_id: int,
        raw: bytes,
        lines: builtins.list[LogLine],
        lengths: builtins.list[int],
    ) -> Commit:
        """Queue a batch for the next insert."""
        item = _Queued(run_log, first_id, raw, lines, lengths)
        run_log.pending += 1
        self._buffered += len(raw)
        self._queue.append(item)
        self._wake.set()
        return item.commit

    async def run_writer(self) -> None:
        """Insert queued batches until cancelled (then what is left, shielded)."""
        try:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                await self._write_queued()
        finally:
            with anyio.CancelScope(shield=True):
                await self._write_queued()

    async def flush(self) -> None:
        """Return once every batch queued so far is committed (or failed)."""
        while self._queue:
            drained = self._drained
            self._wake.set()
            await drained.wait()
        async with self._writing:
            pass

    async def _write_queued(self) -> None:
        async with self._writing:
            while self._queue:
                items, self._queue = self._queue, []
                waiting = await self._insert(items)
                if waiting:
                    # The database is away: the batches wait, in order, unpublished, and the
                    # agents go on; they are written (once) when it is back.
                    self._queue = waiting + self._queue
                    await anyio.sleep(RETRY_INTERVAL)
            drained, self._drained = self._drained, anyio.Event()
            drained.set()

    def _give_up(self, items: builtins.list[_Queued], exc: BaseException) -> builtins.list[_Queued]:
        """The database stayed away until the buffer filled: those runs fail, others go on."""
        log.error("the database is away and %d bytes of events wait: failing runs", self._buffered)
        refused = DatabaseWriteError(
            f"the database was unreachable until the event buffer ({BUFFER_LIMIT >> 20} MB) "
            f"filled: {exc}"
        )
        for item in items:
            item.log.broken = refused
            self._done(item, refused)
        return []

    async def _insert(self, items: builtins.list[_Queued]) -> builtins.list[_Queued]:
        """Write the batches; those still to write (all of them) while the database is away."""
        live: builtins.list[_Queued] = []
        heads: dict[str, tuple[int, int]] = {}  # run -> (epoch, head id)
        for item in items:
            if item.log.broken is not None:
                self._done(item, item.log.broken)
                continue
            live.append(item)
            heads[item.log.run_id] = (item.log.epoch, item.lines[-1].id)
        if not live:
            return []
        try:
            if self._conn.closed:
                self._conn = await connect(self.url)
            # A small batch goes in one statement (one round trip: latency), a big one by
            # COPY (a few round trips, but a fifth of the client's CPU per row: throughput),
            # and a retry after a broken connection in the statement that skips what is in.
            small = sum(len(item.lines) for item in live) <= SMALL_BATCH
            if small or any(item.tried for item in live):
                written = await self._insert_rows(live, heads)
            else:
                written = await self._copy(live, heads)
        except (psycopg.OperationalError, DatabaseUnavailable) as exc:
            for item in live:
                item.tried = True  # it may have committed before the connection broke
            if self._buffered > BUFFER_LIMIT:
                return self._give_up(live, exc)
            if not self._away:
                log.warning("the database is away; buffering events until it is back: %s", exc)
            self._away = True
            with contextlib.suppress(psycopg.Error):
                await self._conn.close()
            return live
        except Exception as exc:
            log.error("cannot write events to the database: %s", exc)
            refused = DatabaseWriteError(f"the database refused the events: {exc}")
            for item in live:
                item.log.broken = refused
                self._done(item, refused)
            return []
        if self._away:
            log.warning("the database is back; buffered events written")
            self._away = False
        for item in live:
            error: OSError | None = None
            if item.log.run_id not in written:
                item.log.broken = error = LeaseLost(f"the lease on {item.log.run_id} moved on")
                self._done(item, error)
                continue
            if item.log.file is not None:
                try:
                    item.log.file.append(item.first_id, item.raw, item.lengths)
                except OSError as exc:
                    item.log.broken = error = exc
            self._done(item, error)
        return []

    async def _copy(
        self, live: builtins.list[_Queued], heads: dict[str, tuple[int, int]]
    ) -> set[str]:
        """The fast path: fence, COPY the rows of the runs still held, notify; one transaction.

        COPY takes the lines' bytes nearly as they are (no per-value adaptation), several
        times cheaper for the client than arrays. The FOR SHARE fence holds to the commit,
        as in the single statement of _insert_rows (invariant 11).
        """
        runs = list(heads)
        conn = self._conn
        # Autocommit connection: BEGIN and the fence go out together (one round trip); the
        # fence also queues the notifications, which the commit delivers (or a rollback drops).
        epochs = [heads[r][0] for r in runs]
        tops = [heads[r][1] for r in runs]
        try:
            async with conn.pipeline():
                await conn.execute("BEGIN")
                cur = await conn.execute(_FENCE, (runs, epochs, runs, tops, self.worker_id))
            written = {record[0] for record in await cur.fetchall()}
            rows = b"".join(
                [
                    _copy_row(item.log.run_id.encode(), line)
                    for item in live
                    if item.log.run_id in written
                    for line in item.lines
                ]
            )
            if rows:
                async with conn.cursor().copy(_COPY) as copy:
                    await copy.write(rows)
            await conn.execute("COMMIT")
        except BaseException:
            if not conn.closed:
                with contextlib.suppress(psycopg.Error):
                    await conn.execute("ROLLBACK")
            raise
        return written

    async def _insert_rows(
        self, live: builtins.list[_Queued], heads: dict[str, tuple[int, int]]
    ) -> set[str]:
        """One statement: a small batch, or a retry after a broken connection (rows already
        there are skipped)."""
        runs: builtins.list[str] = []
        ids: builtins.list[int] = []
        names: builtins.list[str] = []
        datas: builtins.list[str] = []
        stamps: builtins.list[str] = []
        for item in live:
            for line in item.lines:
                text = line.line.decode()
                runs.append(item.log.run_id)
                ids.append(line.id)
                names.append(line.event)
                datas.append(text[text.index('"data":', 6) + 7 : -_TS_TAIL])
                stamps.append(text[-_TS_TAIL + 7 : -2])
        fenced = list(heads)
        epochs = [heads[r][0] for r in fenced]
        tops = [heads[r][1] for r in fenced]
        cur = await self._conn.execute(
            _FENCED_INSERT,
            (fenced, epochs, self.worker_id, runs, ids, names, datas, stamps, fenced, tops),
        )
        return {record[0] for record in await cur.fetchall()}

    def _done(self, item: _Queued, error: OSError | None) -> None:
        run_log = item.log
        run_log.pending -= 1
        self._buffered -= len(item.raw)
        if run_log.pending == 0 and not run_log.writable and run_log.file is not None:
            run_log.file.close()
        item.commit.resolve(error)

    async def close(self) -> None:
        """Write what is queued and close the connections."""
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(CONNECT_TIMEOUT * 2):
                await self._write_queued()
            await self._conn.close()
            await anyio.to_thread.run_sync(self.read_pool.close)


__all__ = ["DatabaseWriteError", "LeaseLost", "PgEventStore", "PgRunLog"]
