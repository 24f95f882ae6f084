"""Keeping the disk in check (issue 15): delete, prune, retention, the free-space floor, and
deletes a crash interrupted. Against real daemons and the files they write."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from od_runs import retention
from od_runs.models import RunCreate
from od_runs.retention import DeleteJournal, InsufficientStorage
from od_runs.retention_models import parse_duration
from od_runs.runs import open_service
from od_runs.store import DB_NAME
from tests.conftest import Daemon, poll, wait_terminal
from tests.test_cli import od

FAST = {"agentId": "demo", "prompt": "x", "demo": {"events": 40, "fast": True}}
FAILING = {"agentId": "command", "command": ["false"], "prompt": ""}


def finished_run(daemon: Daemon, body: dict[str, Any] = FAST) -> dict[str, Any]:
    """Start a run and return its status body once it is terminal."""
    return wait_terminal(daemon, daemon.create(body)["id"])


def stored_ids(data_dir: Path) -> set[str]:
    """The run ids the daemon's SQLite file holds, read the way an operator would."""
    with sqlite3.connect(data_dir / DB_NAME) as db:
        return {row[0] for row in db.execute("SELECT id FROM runs")}


def make_old(daemon: Daemon, run_id: str, days: float) -> None:
    """Pretend the run ended `days` ago by rewriting finishedAt in the store's row."""
    with daemon.client() as http:
        http.get("/api/runs")  # flushes the daemon's queued status rows first
    ended = (datetime.now(UTC) - timedelta(days=days)).isoformat().replace("+00:00", "Z")
    with sqlite3.connect(daemon.data_dir / DB_NAME, timeout=10) as db:
        cursor = db.execute(
            "UPDATE runs SET body = json_set(body, '$.finishedAt', ?) WHERE id = ?",
            (ended, run_id),
        )
        assert cursor.rowcount == 1


def listed(daemon: Daemon) -> set[str]:
    with daemon.client() as http:
        return {r["id"] for r in http.get("/api/runs", params={"limit": 1000}).json()["runs"]}


def test_deleting_a_finished_run_removes_its_row_directory_and_events(shared: Daemon) -> None:
    run = finished_run(shared)
    run_dir = Path(run["eventsLogPath"]).parent
    assert run_dir.is_dir() and run["id"] in stored_ids(shared.data_dir)
    with shared.client() as http:
        response = http.delete(f"/api/runs/{run['id']}")
        assert response.status_code == 200, response.text
        assert response.json()["bytes"] > 0
        assert http.get(f"/api/runs/{run['id']}").status_code == 404
        page = http.get(f"/api/runs/{run['id']}/events", params={"format": "json"})
        assert page.status_code == 404
        assert http.delete(f"/api/runs/{run['id']}").status_code == 404
    assert not run_dir.exists()
    assert run["id"] not in stored_ids(shared.data_dir)
    assert run["id"] not in listed(shared)


def test_od_runs_rm_says_what_it_removed_and_what_it_refused(shared: Daemon) -> None:
    done = finished_run(shared)
    result = od(shared.url, "rm", done["id"], "run-0000000000000000")
    assert result.returncode == 1, result.stderr
    assert f"removed {done['id']}" in result.stdout
    assert "run-0000000000000000: not removed" in result.stderr
    assert "removed 1 of 2 runs" in result.stdout
    assert not Path(done["eventsLogPath"]).parent.exists()


def test_an_active_run_is_refused_with_409_and_kept(shared: Daemon) -> None:
    run = shared.create({"agentId": "demo", "prompt": "x", "demo": {"durationSeconds": 60}})
    with shared.client() as http:
        response = http.delete(f"/api/runs/{run['id']}")
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "RUN_ACTIVE"
        assert "cancel it first" in response.json()["error"]["message"]
        assert http.get(f"/api/runs/{run['id']}").status_code == 200
        assert Path(run["eventsLogPath"]).exists()
        http.post(f"/api/runs/{run['id']}/cancel")
        assert http.delete(f"/api/runs/{run['id']}").status_code == 200


def test_prune_by_age_and_status_with_and_without_dry_run(daemon: Daemon) -> None:
    old_ok = finished_run(daemon, {**FAST, "projectId": "p1"})
    old_failed = finished_run(daemon, FAILING)
    recent = finished_run(daemon)
    assert old_failed["status"] == "failed"
    for run in (old_ok, old_failed):
        make_old(daemon, run["id"], days=40)
    before = listed(daemon)

    dry = od(daemon.url, "prune", "--older-than", "30d", "--status", "failed", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would remove {old_failed['id']}" in dry.stdout
    assert "would remove 1 runs" in dry.stdout
    assert listed(daemon) == before

    with daemon.client() as http:
        other_project = http.post("/api/runs/prune", json={"olderThan": "30d", "projectId": "p2"})
        assert other_project.json() == {"dryRun": False, "runs": [], "count": 0, "bytes": 0}
        bad = http.post("/api/runs/prune", json={"olderThan": "a while"})
        assert bad.status_code == 422 and "olderThan" in bad.json()["error"]["message"]

    failed_only = od(daemon.url, "prune", "--older-than", "30d", "--status", "failed")
    assert f"removed {old_failed['id']}" in failed_only.stdout
    assert listed(daemon) == before - {old_failed["id"]}
    assert not Path(old_failed["eventsLogPath"]).parent.exists()

    with daemon.client() as http:
        result = http.post("/api/runs/prune", json={"olderThan": "30d", "projectId": "p1"}).json()
    assert result["runs"] == [old_ok["id"]] and result["bytes"] > 0
    assert listed(daemon) == before - {old_failed["id"], old_ok["id"]}
    assert Path(recent["eventsLogPath"]).exists()


def test_retention_removes_what_is_old_and_keeps_what_is_not(daemon: Daemon) -> None:
    old, recent = finished_run(daemon), finished_run(daemon)
    make_old(daemon, old["id"], days=31)
    daemon.stop()
    keeper = Daemon(daemon.data_dir, None, "--retain", "30d").start()
    try:
        with keeper.client() as http:
            poll(
                "the retention pass", lambda: http.get(f"/api/runs/{old['id']}").status_code == 404
            )
            assert http.get(f"/api/runs/{recent['id']}").json()["status"] == "succeeded"
        assert not Path(old["eventsLogPath"]).parent.exists()
        assert Path(recent["eventsLogPath"]).exists()
    finally:
        keeper.stop()


def test_below_the_free_space_floor_new_runs_are_refused_with_507(data_dir: Path) -> None:
    # A floor above any real disk's free space is what a nearly full disk looks like.
    full = Daemon(data_dir, None, "--min-free", "1000000T").start()
    try:
        with full.client() as http:
            response = http.post("/api/runs", json=FAST)
            assert response.status_code == 507
            error = response.json()["error"]
            assert error["code"] == "INSUFFICIENT_STORAGE"
            assert "--min-free" in error["message"] and str(data_dir) in error["message"]
            assert http.get("/api/runs").json()["runs"] == []
            usage = http.get("/api/health").json()["dataDir"]
            assert usage["bytes"] > 0 and usage["freeBytes"] > 0
    finally:
        full.stop()


@pytest.mark.anyio
async def test_the_floor_follows_the_filesystem_free_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The free-space seam: a 10 MB filesystem refuses runs, the same one with room takes them."""
    free = {"bytes": 10 << 20}
    monkeypatch.setattr(retention, "free_bytes", lambda path: free["bytes"])
    monkeypatch.setattr(retention, "FREE_TTL", 0.0)
    request = RunCreate.model_validate(FAST)
    async with open_service(tmp_path / "runs_log", min_free=1 << 30) as service:
        with pytest.raises(InsufficientStorage, match=r"10\.0 MB free"):
            await service.start(request)
        free["bytes"] = 5 << 30
        status = await service.start(request)
        assert (await service.wait(status.id, timeout=30)).status == "succeeded"


def test_a_delete_a_crash_interrupted_is_finished_at_the_next_start(daemon: Daemon) -> None:
    """A crash after the intent, after the row, or in the middle of removing the files: the
    next start completes each delete, and leaves other runs alone."""
    after_intent, after_row, mid_files, bystander = (finished_run(daemon) for _ in range(4))
    daemon.stop()
    data_dir = daemon.data_dir
    journal = DeleteJournal(data_dir)
    for run in (after_intent, after_row, mid_files):
        journal.add(run["id"])
    with sqlite3.connect(data_dir / DB_NAME) as db:
        db.executemany("DELETE FROM runs WHERE id = ?", [(after_row["id"],), (mid_files["id"],)])
    (data_dir / mid_files["id"]).rename(data_dir / f".deleting-{mid_files['id']}")

    restarted = Daemon(data_dir).start()
    try:
        gone = [after_intent, after_row, mid_files]
        assert listed(restarted) == {bystander["id"]}
        with restarted.client() as http:
            for run in gone:
                assert http.get(f"/api/runs/{run['id']}").status_code == 404
    finally:
        restarted.stop()
    assert stored_ids(data_dir) == {bystander["id"]}
    leftovers = sorted(p.name for p in data_dir.iterdir() if p.name.startswith("run-"))
    assert leftovers == [bystander["id"]]
    assert not any(p.name.startswith(".deleting-") for p in data_dir.iterdir())
    assert journal.pending() == []


def test_readers_of_a_run_being_deleted_end_cleanly(shared: Daemon) -> None:
    run = finished_run(
        shared, {"agentId": "demo", "prompt": "x", "demo": {"events": 20_000, "fast": True}}
    )
    with shared.client() as http, httpx.Client(base_url=shared.url, trust_env=False) as pager:
        first = pager.get(f"/api/runs/{run['id']}/events", params={"format": "json", "limit": 10})
        assert first.json()["hasMore"] is True
        ids: list[int] = []
        with http.stream("GET", f"/api/runs/{run['id']}/events") as stream:
            lines = stream.iter_lines()
            for line in lines:
                if line.startswith("id: "):
                    ids.append(int(line[4:]))
                    break
            assert http.delete(f"/api/runs/{run['id']}").status_code == 200
            # The stream goes on to a proper end of body: no reset, no half frame.
            for line in lines:
                if line.startswith("id: "):
                    ids.append(int(line[4:]))
        assert ids == list(range(1, len(ids) + 1))
        cursor = first.json()["nextCursor"]
        after = pager.get(
            f"/api/runs/{run['id']}/events", params={"format": "json", "after": cursor}
        )
        assert after.status_code == 404


@pytest.mark.parametrize(
    ("text", "seconds"), [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("2w", 1209600)]
)
def test_durations_read_as_people_write_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_health_reports_the_data_dir(shared: Daemon) -> None:
    with shared.client() as http:
        usage = http.get("/api/health").json()["dataDir"]
    db_size = (shared.data_dir / DB_NAME).stat().st_size
    assert usage["bytes"] >= db_size and usage["freeBytes"] > 0
