"""The database goes away while a daemon runs: children go on, new work gets a clear 503, and
when it is back nothing is lost or written twice (invariants 2 and 3 on PostgreSQL)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Daemon, poll, process_alive, read_log, wait_terminal
from tests.pg import PgServer

pytestmark = pytest.mark.slow

# Prints 0..99, waits for the first gate, prints 100..199, waits for the second, prints the rest.
CHILD = """
import sys
gates = sys.argv[1:]
n = 0
for gate in [*gates, None]:
    for _ in range(100):
        print(f"line {n}", flush=True)
        n += 1
    if gate is not None:
        with open(gate) as f:
            f.read()
"""


@pytest.fixture
def own_server() -> Iterator[PgServer]:
    """A server of this test's own: it is stopped and started again mid-test."""
    server = PgServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_database_outage_loses_nothing_and_refuses_new_runs_clearly(
    tmp_path: Path, own_server: PgServer
) -> None:
    """Invariants 2, 3: with PostgreSQL stopped mid-run the agent keeps running and printing,
    POST /api/runs answers 503 DATABASE_UNAVAILABLE, and once the server is back the run
    ends succeeded with every line once, ids dense, the database and events.jsonl alike."""
    url = own_server.new_database()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    gates = [tmp_path / "gate-1", tmp_path / "gate-2"]
    for gate in gates:
        os.mkfifo(gate)
    daemon = Daemon(data_dir, None, "--database-url", url, "--lease-seconds", "3").start()
    try:
        body = {
            "agentId": "command",
            "command": [sys.executable, "-c", CHILD, *map(str, gates)],
        }
        run = daemon.create(body)
        with daemon.client() as http:
            poll(
                "the first hundred lines in the database",
                lambda: http.get(f"/api/runs/{run['id']}").json()["lastEventId"] >= 101,
            )
            pid = http.get(f"/api/runs/{run['id']}").json()["childPid"]
            own_server.halt()
            gates[0].write_text("go")  # the child prints its second hundred into the outage

            def refused() -> bool:
                response = http.post("/api/runs", json=body)
                assert response.status_code in (503, 202), response.text
                return response.status_code == 503

            poll("POST /api/runs to be refused", refused)
            error = http.post("/api/runs", json=body).json()["error"]
            assert error["code"] == "DATABASE_UNAVAILABLE"
            assert "unreachable" in error["message"]
            assert process_alive(pid), "the agent must outlive the outage"
            assert http.get("/api/health").status_code == 200

            own_server.resume()
            gates[1].write_text("go")
            status = wait_terminal(daemon, run["id"])
            assert status["status"] == "succeeded", status
            page = http.get(
                f"/api/runs/{run['id']}/events", params={"format": "json", "limit": 1000}
            ).json()
        events = page["items"]
        assert [e["id"] for e in events] == list(range(1, len(events) + 1))
        printed = [e["data"]["text"] for e in events if e["event"] == "stdout"]
        assert printed == [f"line {n}" for n in range(300)]
        assert [e["event"] for e in events][-1] == "end"
        assert read_log(status["eventsLogPath"]) == events
    finally:
        daemon.stop()
