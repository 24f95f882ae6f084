"""Deleting a run on one of several daemons (issue 15 on PostgreSQL): every daemon sees it
gone, list streams anywhere hear `event: deleted`, and the host that executed the run removes
its local events.jsonl."""

from __future__ import annotations

import sys
from pathlib import Path

from .conftest import Daemon, poll, wait_terminal
from .test_status_events import delete_while_listening


def test_a_run_deleted_on_one_daemon_is_gone_from_all_and_from_its_host(
    tmp_path: Path, pg_url: str
) -> None:
    """A finished run executed on A, deleted through B: 404 on both, A's local run directory
    removed, and a project list stream on C (which never held the run) hears the delete."""
    daemons = []
    for name in ("a", "b", "c"):
        data = tmp_path / name
        data.mkdir()
        daemons.append(Daemon(data, None, "--database-url", pg_url, "--worker-id", name))
    a, b, c = daemons
    try:
        for daemon in daemons:
            daemon.start()
        code = "print('hello', flush=True)"
        body = {"agentId": "command", "command": [sys.executable, "-c", code], "projectId": "pd"}
        run = a.create(body)
        done = wait_terminal(b, run["id"])
        assert done["status"] == "succeeded" and done["workerId"] == "a"
        run_dir = Path(done["eventsLogPath"]).parent
        assert run_dir.is_relative_to(a.data_dir) and run_dir.is_dir()

        seen = delete_while_listening(c, b, run["id"], "pd")
        assert [r["id"] for r in seen[0][1]["runs"]] == [run["id"]]
        assert ("deleted", {"id": run["id"]}) in seen[1:]
        for daemon in daemons:
            with daemon.client() as http:
                assert http.get(f"/api/runs/{run['id']}").status_code == 404
                listed = http.get("/api/runs", params={"projectId": "pd"}).json()["runs"]
                assert listed == []
        poll("A to remove the run's local directory", lambda: not run_dir.exists())
    finally:
        for daemon in daemons:
            if daemon.proc is not None:
                daemon.stop()
