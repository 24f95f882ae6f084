"""The runs table: scheduled rows, the writer task, and flush before a read."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

from od_runs.encoding import now_iso
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


async def write_pending(store: SqliteRunStore) -> RunRow:
    """Run the writer until what is scheduled is committed; the stored row then."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.run_writer)
        with anyio.fail_after(5):
            await store.flush()
        tg.cancel_scope.cancel()
    stored = await store.get("run-0000000000000001")
    assert stored is not None
    return stored


async def test_a_row_scheduled_to_be_built_is_built_once_when_written(tmp_path: Path) -> None:
    """A streaming run schedules its row after every batch: the row is built when the writer
    takes it (the run's newest state), once for all the batches since the last write."""
    store = await SqliteRunStore.open(tmp_path / DB_NAME)
    try:
        await store.insert(row("running"))
        built: list[int] = []
        state = {"last": 0}

        def build() -> RunRow:
            built.append(state["last"])
            current = row("running")
            current.body.lastEventId = state["last"]
            return current

        for last in range(1, 21):  # 20 batches before the writer runs
            state["last"] = last
            store.schedule_build("run-0000000000000001", build)
        assert built == []  # scheduling builds nothing
        state["last"] = 25  # more events came before the write
        stored = await write_pending(store)
        assert built == [25]
        assert stored.body.lastEventId == 25
        # A row given as is (a status change) replaces a pending build of the same run.
        store.schedule_build("run-0000000000000001", build)
        store.schedule(row("succeeded"))
        stored = await write_pending(store)
        assert built == [25]
        assert stored.body.status == "succeeded"
    finally:
        await store.close()
