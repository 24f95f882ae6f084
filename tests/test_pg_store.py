"""The PostgreSQL backend around the contract: start-up errors, migrations, a real daemon on it.

tests/test_storage_contract.py runs the invariants on it; this file covers what only a
database has: a URL that leads nowhere, several daemons migrating at once, a schema from a
newer od-runs, and crash recovery through `od-runs serve --database-url`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import psycopg
import pytest

from od_runs.models import RunCreate
from od_runs.pg_store import MIGRATIONS, DatabaseUnavailable, migrate
from od_runs.runs import open_service
from tests.conftest import Daemon, poll, read_log, wait_terminal

# A child that waits until it is stopped.
PAUSE = "import signal; signal.pause()"

pytestmark = pytest.mark.anyio
# A page of events as JSON, big enough for the runs here.
AS_JSON = {"limit": 1000, "format": "json"}


def serve_fails(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    """`od-runs serve` on a bad database URL; it must exit on its own."""
    return subprocess.run(
        [sys.executable, "-m", "od_runs", "serve", "--port", "0", "--data-dir", str(tmp_path)],
        env={"OD_RUNS_DATABASE_URL": url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_an_unreachable_database_fails_start_up_with_one_line(tmp_path: Path) -> None:
    """Nothing listens on port 1: one line that names the database (password hidden), no trace."""
    done = serve_fails(tmp_path, "postgresql://someone:hunter2@127.0.0.1:1/runs")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: cannot connect to the database postgresql://someone:***@")
    assert "Connection refused" in lines[0]
    assert "hunter2" not in done.stderr


def test_a_database_that_does_not_exist_fails_start_up_with_one_line(
    tmp_path: Path, pg_url: str
) -> None:
    """The server answers but has no such database: the server's reason, on one line."""
    done = serve_fails(tmp_path, pg_url.rsplit("/", 1)[0] + "/no_such_db")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert 'database "no_such_db" does not exist' in lines[0]


async def test_two_daemons_starting_at_once_migrate_once(pg_url: str) -> None:
    """Concurrent start-ups take turns on the advisory lock: each version is applied once."""
    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(migrate, pg_url)
    with psycopg.connect(pg_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM od_runs_schema ORDER BY 1")]
    assert versions == list(range(1, len(MIGRATIONS) + 1))
    assert await migrate(pg_url) == len(MIGRATIONS)  # and a later start has nothing to do


async def test_a_schema_from_a_newer_od_runs_is_refused(tmp_path: Path, pg_url: str) -> None:
    """A database a newer od-runs migrated is left alone, and start-up says to upgrade."""
    await migrate(pg_url)
    newer = len(MIGRATIONS) + 1
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO od_runs_schema (version) VALUES (%s)", (newer,))
    with pytest.raises(DatabaseUnavailable, match=f"schema version {newer}.*upgrade od-runs"):
        await migrate(pg_url)
    done = serve_fails(tmp_path, pg_url)
    assert done.returncode == 1
    assert done.stderr.strip().endswith("upgrade od-runs"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_daemon_on_postgres_serves_runs_and_recovers_a_crash(data_dir: Path, pg_url: str) -> None:
    """Invariants 2 and 3 end to end: the database and the local file hold the same events;
    a run a crash interrupted is ended in the database by the next start."""
    code = "import sys, time\nfor i in range(300): print('line', i)\nsys.stdout.flush()\n"
    first = Daemon(data_dir, None, "--database-url", pg_url).start()
    try:
        done = first.create({"agentId": "command", "command": [sys.executable, "-c", code]})
        final = wait_terminal(first, done["id"])
        assert final["status"] == "succeeded"
        with first.client() as http:
            events = http.get(
                f"/api/runs/{done['id']}/events", params={"limit": 1000, "format": "json"}
            ).json()
        stuck = first.create(
            {
                "agentId": "command",
                "command": [sys.executable, "-c", "import signal; signal.pause()"],
            }
        )
        with first.client() as http:
            poll(
                "the second run to start",
                lambda: http.get(f"/api/runs/{stuck['id']}").json()["status"] == "running",
            )
    finally:
        first.kill()
    listed = [e["id"] for e in events["items"]]
    assert listed == list(range(1, final["lastEventId"] + 1))
    assert [e["id"] for e in read_log(final["eventsLogPath"])] == listed
    second = Daemon(data_dir, None, "--database-url", pg_url).start()
    try:
        again = wait_terminal(second, stuck["id"])
        assert again["status"] == "failed"
        assert again["errorCode"] == "DAEMON_RESTARTED"
        with second.client() as http:
            tail = http.get(
                f"/api/runs/{stuck['id']}/events", params={"limit": 1000, "format": "json"}
            ).json()
        names = [e["event"] for e in tail["items"]]
        assert names[-2:] == ["error", "end"]
        assert [e["id"] for e in tail["items"]] == list(range(1, again["lastEventId"] + 1))
    finally:
        second.stop()


async def test_a_batch_the_database_refuses_is_never_published(tmp_path: Path, pg_url: str) -> None:
    """Invariant 3: a refused insert publishes nothing of it and stops the run, as a full disk
    does; what was committed before stays readable."""
    async with open_service(tmp_path / "data", database_url=pg_url) as service:
        run = await service.create(RunCreate())
        for n in range(3):
            service.emit_many(run, [("stdout", {"text": f"{n}-{k}"}) for k in range(10)])
        await service.lifecycle.events.flush()  # type: ignore[attr-defined]
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("ALTER TABLE events ADD CONSTRAINT below_40 CHECK (id < 40)")
        service.emit_many(run, [("stdout", {"text": f"late {k}"}) for k in range(20)])
        await service.lifecycle.events.flush()  # type: ignore[attr-defined]
        assert run.log_error is not None and run.log_error.code == "LOG_WRITE_FAILED"
        assert run.cancel_event.is_set()
        assert run.last_event_id == 30
        offered = [line.id for line in run.tail]  # what was published, in order
        assert offered == list(range(1, 31))
        assert [line.id for batch in run.log.read_after(0) for line in batch] == offered
        service.finish(run, "failed", None)
        final = await service.wait(run.id, timeout=10)
        assert final.status == "failed"
