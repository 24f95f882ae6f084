"""Status rows, coalesced: the lifecycle schedules a run's row, one task commits them in batches.

A run changes status a handful of times but its lastEventId with every batch: writing each
change would cost a transaction per batch. So rows wait in a dict (a later row of the same run
replaces an earlier one) and the writer commits whatever is pending every FLUSH_INTERVAL, or at
once when somebody waits in flush(). The update after each batch of events is scheduled as
what builds the row (schedule_build), so the row is built once per write, not once per batch.
Both run stores (SQLite, PostgreSQL) share this; each says only how to commit a batch
(_commit_rows).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from .models import TERMINAL_STATES

if TYPE_CHECKING:
    from .store import RunRow

# How stale a stored lastEventId may get while a run streams; the log is the truth anyway.
FLUSH_INTERVAL = 0.5
# After a failed commit (the database went away) the rows wait this long, then are retried.
RETRY_INTERVAL = 1.0

log = logging.getLogger("od_runs.row_writer")


class CoalescingWriter:
    """Scheduled rows, the writer task that commits them, and flush() that waits for it."""

    def __init__(self) -> None:
        # A row, or what builds it when it is written (schedule_build).
        self._pending: dict[str, RunRow | Callable[[], RunRow]] = {}
        self._wake = anyio.Event()
        self._flushed = anyio.Event()
        self._urgent = anyio.Event()
        self._closed = False
        # One transaction at a time: direct writes (insert, delete) and the writer interleave.
        self._tx_lock = anyio.Lock()

    async def _commit_rows(self, rows: list[RunRow]) -> None:
        """Commit these rows in one transaction (under _tx_lock)."""
        raise NotImplementedError

    def schedule(self, row: RunRow) -> None:
        """Queue a row for the writer task; later rows for the same run replace earlier ones."""
        self._pending[row.body.id] = row
        if row.body.status in TERMINAL_STATES:
            self._urgent.set()  # a run's end is news to waiters elsewhere (other daemons)
        self._wake.set()

    def schedule_build(self, run_id: str, build: Callable[[], RunRow]) -> None:
        """Queue an update of a live run, built when it is written: the run's state then.

        For the update that follows every batch of events: a run streaming 20 batches a
        second has its row built about twice a second, not 20 times.
        """
        self._pending[run_id] = build
        self._wake.set()

    async def flush(self) -> None:
        """Return once everything scheduled so far is committed."""
        while self._pending:
            flushed = self._flushed
            self._urgent.set()
            self._wake.set()
            await flushed.wait()
        # Nothing pending may still mean rows taken by a write that has not committed yet.
        async with self._tx_lock:
            pass

    async def run_writer(self) -> None:
        """The writer task: commit scheduled rows in batches until cancelled."""
        try:
            while True:
                await self._wake.wait()
                # Coalesce a burst of updates unless somebody is waiting in flush().
                with anyio.move_on_after(FLUSH_INTERVAL):
                    await self._urgent.wait()
                self._wake = anyio.Event()
                self._urgent = anyio.Event()
                try:
                    await self._write_pending()
                except Exception as exc:
                    # Nothing is lost: the rows are pending again and go with the next try.
                    log.warning("cannot write run statuses (retrying): %s", exc)
                    self._wake.set()
                    await anyio.sleep(RETRY_INTERVAL)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                await self._write_pending()

    async def _write_pending(self) -> None:
        async with self._tx_lock:
            if self._closed:
                return
            pending, self._pending = self._pending.values(), {}
            rows = [row if not callable(row) else row() for row in pending]
            if rows:
                try:
                    await self._commit_rows(rows)
                except BaseException:
                    for row in rows:  # newer rows scheduled meanwhile win
                        self._pending.setdefault(row.body.id, row)
                    raise
        flushed, self._flushed = self._flushed, anyio.Event()
        flushed.set()


__all__ = ["FLUSH_INTERVAL", "CoalescingWriter"]
