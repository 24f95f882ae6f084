"""Fencing by lease epoch on PostgreSQL (invariant 11), and the takeover that moves it
(invariant 12), driven step by step against a real server: a daemon that was paused past its
lease finds its writes refused, and the run stays as the daemon that concluded it left it."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from od_runs.cluster import ClusterSettings
from od_runs.models import RunCreate
from od_runs.pg_cluster import ClusterDb
from od_runs.pg_store import open_pool
from od_runs.runs import open_service

pytestmark = pytest.mark.anyio


def _events(url: str, run_id: str) -> list[tuple[int, str]]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id, event FROM events WHERE run_id = %s ORDER BY id", (run_id,)
        ).fetchall()
    return [(int(r[0]), str(r[1])) for r in rows]


async def test_a_paused_executor_cannot_write_into_a_run_another_daemon_concluded(
    tmp_path: Path, pg_url: str
) -> None:
    """Invariants 11, 12: daemon w1 executes a run; its heartbeat goes stale (as if paused)
    and w2 concludes the run WORKER_LOST. w1's later events and status are refused, so the
    run's events end with w2's one `end` and its status stays failed / WORKER_LOST."""
    settings = ClusterSettings(worker_id="w1", lease_seconds=3600)
    async with open_service(tmp_path / "w1", database_url=pg_url, cluster=settings) as w1:
        run = await w1.create(RunCreate())
        assert run.worker_id == "w1" and run.lease_epoch == 1
        w1.emit_many(run, [("stdout", {"text": f"before {k}"}) for k in range(5)])
        await w1.lifecycle.events.flush()  # type: ignore[attr-defined]
        await w1.store.flush()
        assert _events(pg_url, run.id) == [(k, "stdout") for k in range(1, 6)]

        # w1 falls silent: its heartbeat is an hour old. w2 takes over.
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("UPDATE workers SET heartbeat = now() - interval '1 hour'")
        pool = await open_pool(pg_url)
        try:
            w2 = ClusterDb(pool, "w2", "elsewhere", lease=10)
            await w2.register(None)
            assert await w2.lost_workers() == ["w1"]
            assert await w2.conclude_lost("w1") == (1, 0)
        finally:
            await pool.close()
        concluded = _events(pg_url, run.id)
        assert concluded[-2:] == [(6, "error"), (7, "end")]

        # w1 wakes up and goes on writing: nothing of it lands, and it stops the run.
        w1.emit_many(run, [("stdout", {"text": f"after {k}"}) for k in range(5)])
        await w1.lifecycle.events.flush()  # type: ignore[attr-defined]
        assert run.log_error is not None and run.log_error.code == "WORKER_LOST"
        assert run.cancel_event.is_set()
        assert [line.id for line in run.tail] == [1, 2, 3, 4, 5]  # the refused batch: unpublished
        w1.finish(run, "failed", None)
        await w1.store.flush()
        assert _events(pg_url, run.id) == concluded
        row = await w1.store.get(run.id)
        assert row is not None
        assert row.body.status == "failed" and row.body.errorCode == "WORKER_LOST"
        assert row.lease_epoch == 2
