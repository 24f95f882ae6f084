"""`od-runs workers`: the daemons of one database as a table, from /api/health (issue 11)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from od_runs.cli_workers import age, workers_table
from od_runs.models import Health

from .conftest import Daemon, poll
from .test_cli import od

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def health_body(**fields: object) -> Health:
    """A health body as a clustered daemon answers it."""
    return Health.model_validate(
        {
            "version": "0",
            "activeRuns": 1,
            "openStreams": 0,
            "workerId": "w2",
            "workers": [
                {
                    "id": "w1",
                    "host": "build-a",
                    "started": "2026-12-01T11:00:00.000Z",
                    "heartbeat": "2026-12-01T11:59:58.400Z",
                    "alive": True,
                    "activeRuns": 3,
                },
                {
                    "id": "w2",
                    "host": "build-b",
                    "started": "2026-12-01T11:30:05.000Z",
                    "heartbeat": "2026-12-01T11:59:59.900Z",
                    "alive": True,
                    "activeRuns": 0,
                },
                {
                    "id": "w3",
                    "host": "build-c",
                    "started": "2026-11-30T08:00:00.000Z",
                    "heartbeat": "2026-12-01T11:55:00.000Z",
                    "alive": False,
                    "activeRuns": 1,
                },
            ],
            **fields,
        }
    )


def test_the_table_has_one_aligned_row_per_worker_and_marks_the_one_that_answered() -> None:
    """Columns ID, HOST, STARTED, HEARTBEAT (an age), ACTIVE, STATE; `*` on this daemon."""
    lines = workers_table(health_body(), now=NOW).splitlines()
    assert lines[0].split() == ["ID", "HOST", "STARTED", "HEARTBEAT", "ACTIVE", "STATE"]
    rows = [line.split() for line in lines[1:]]
    assert rows == [
        ["w1", "build-a", "2026-12-01", "11:00:00", "1s", "ago", "3", "alive"],
        ["*", "w2", "build-b", "2026-12-01", "11:30:05", "0s", "ago", "0", "alive"],
        ["w3", "build-c", "2026-11-30", "08:00:00", "5m", "ago", "1", "lost"],
    ]
    # Every column starts at the same offset on every line.
    for header in ("ID", "HOST", "HEARTBEAT", "STATE"):
        column = lines[0].index(header)
        assert all(line[column - 1] == " " and line[column] != " " for line in lines[1:])


def test_heartbeat_ages_read_in_the_largest_whole_unit() -> None:
    """Seconds, minutes, hours, days; a clock a little ahead still reads as fresh."""
    assert age("2026-12-01T11:59:15Z", NOW) == "45s ago"
    assert age("2026-12-01T11:58:00+00:00", NOW) == "2m ago"
    assert age("2026-12-01T09:00:00.000Z", NOW) == "3h ago"
    assert age("2026-11-28T12:00:00.000Z", NOW) == "3d ago"
    assert age("2026-12-01T12:00:01.000Z", NOW) == "0s ago"


def test_a_daemon_without_a_database_says_it_runs_alone(shared: Daemon) -> None:
    """No database: one line saying so and exit 0 (a lone daemon is no error); --json: nulls."""
    plain = od(shared.url, "workers")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.count("\n") == 1 and "--database-url" in plain.stdout
    as_json = od(shared.url, "workers", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == {"workerId": None, "workers": None}


@pytest.fixture
def two_workers(tmp_path: Path, pg_url: str) -> Iterator[tuple[Daemon, Daemon]]:
    """Daemons w1 and w2 on one fresh PostgreSQL database, each with its own data dir."""
    started: list[Daemon] = []
    try:
        for name in ("w1", "w2"):
            data = tmp_path / name / "runs_log"
            data.mkdir(parents=True)
            started.append(
                Daemon(data, None, "--database-url", pg_url, "--worker-id", name).start()
            )
        yield started[0], started[1]
    finally:
        for daemon in started:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.stop()


def test_workers_of_two_daemons_on_postgresql_list_both_and_count_a_running_run(
    two_workers: tuple[Daemon, Daemon],
) -> None:
    """Asked through w2, both daemons are alive, w2 is marked, and the executor of a running
    run counts it in ACTIVE; --json carries the same list and which worker answered."""
    first, second = two_workers
    pause = [sys.executable, "-c", "import signal; signal.pause()"]
    run = first.create({"agentId": "command", "command": pause})
    with first.client() as http:

        def executing() -> str | None:
            body = http.get(f"/api/runs/{run['id']}").json()
            return body["workerId"] if body["status"] == "running" else None

        executor = poll("the run to run on a worker", executing)
        try:
            listed = od(second.url, "workers", "--json")
            assert listed.returncode == 0, listed.stderr
            body = json.loads(listed.stdout)
            assert body["workerId"] == "w2"
            workers = {w["id"]: w for w in body["workers"]}
            assert set(workers) == {"w1", "w2"}
            assert all(w["alive"] for w in workers.values())
            assert {w: workers[w]["activeRuns"] for w in workers} == {
                "w1": int(executor == "w1"),
                "w2": int(executor == "w2"),
            }

            table = od(second.url, "workers")
            assert table.returncode == 0, table.stderr
            lines = table.stdout.splitlines()
            assert lines[0].split()[:2] == ["ID", "HOST"]
            rows: dict[str, list[str]] = {}
            for cells in (line.split() for line in lines[1:]):
                rows[cells[1] if cells[0] == "*" else cells[0]] = cells
        finally:
            http.post(f"/api/runs/{run['id']}/cancel")
    assert set(rows) == {"w1", "w2"}
    assert rows["w2"][0] == "*" and rows["w1"][0] == "w1"
    assert rows[executor][-2] == "1" and rows[executor][-1] == "alive"
