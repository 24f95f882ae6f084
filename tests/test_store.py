"""The runs table: scheduled rows, the writer task, and flush before a read."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

from od_runs.eventlog import now_iso
from od_runs.models import RunStatus
from od_runs.store import DB_NAME, RunRow, SqliteRunStore

pytestmark = pytest.mark.anyio


def row(status: str) -> RunRow:
    """A demo run's row in this status."""
    now = now_iso()
    body = RunStatus(
        id="run-0000000000000001", agentId="demo", status=status, createdAt=now, updatedAt=now
    )
    return RunRow(body=body)


async def test_flush_waits_for_a_write_that_is_already_under_way(tmp_path: Path) -> None:
    """A list right after a run ends must see it: flush returns only once rows the writer
    has already taken are committed, not merely once nothing is pending."""
    path = tmp_path / DB_NAME
    store = await SqliteRunStore.open(path)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        await store.insert(row("running"))
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock for a moment
        store.schedule(row("succeeded"))
        first, second = anyio.Event(), anyio.Event()

        async def flush(done: anyio.Event) -> None:
            await store.flush()
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(store.run_writer)
            tg.start_soon(flush, first)  # the writer takes the row and waits for the lock
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(flush, second)  # nothing pending now, but nothing committed either
            await anyio.wait_all_tasks_blocked()
            assert not second.is_set()
            blocker.execute("ROLLBACK")
            with anyio.fail_after(5):
                await second.wait()
            stored = await store.get("run-0000000000000001")
            assert stored is not None and stored.body.status == "succeeded"
            tg.cancel_scope.cancel()
    finally:
        blocker.close()
        await store.close()
