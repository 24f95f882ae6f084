"""Restart and crash recovery against a real daemon subprocess (invariants 2, 5, 6, 9).

A graceful restart must replay every run exactly as logged; a kill -9 must leave, after the
next start, every active run `failed` with `DAEMON_RESTARTED`, a dense log ending in one
`end`, and none of its processes alive, while finished runs stay as they were.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from od_runs import recovery
from od_runs.agents.process import group_members, start_time
from od_runs.encoding import now_iso
from od_runs.models import RunStatus
from od_runs.runs import RUN_ID_ENV
from od_runs.store import DB_NAME, RunRow, SqliteRunStore

from .conftest import (
    Daemon,
    assert_dense,
    parse_frames,
    poll,
    process_alive,
    read_log,
    wait_terminal,
    write_script,
)

# Deadlines: generous, because each is a bound on a poll, not a wait.
RUN_DEADLINE = 20.0
REAP_DEADLINE = 10.0

# A command child: one grandchild in its own process group, one in a new session (so only the
# env marker can find it); prints every pid, then "ready", then waits to be killed.
TREE_CHILD = """
import os, signal, subprocess, sys
sleeper = [sys.executable, "-c", "import signal; signal.pause()"]
same_group = subprocess.Popen(sleeper)
own_session = subprocess.Popen(sleeper, start_new_session=True)
print(f"pids {os.getpid()} {same_group.pid} {own_session.pid}", flush=True)
print("ready", flush=True)
signal.pause()
"""

# A command child that prints "ready" and waits to be stopped.
WAITING_CHILD = """
import signal
print("ready", flush=True)
signal.pause()
"""

# Outside any daemon: writes its pid and its same-group child's pid to a file, then waits
# (argv[2] == "wait") or exits at once, leaving the child alone in the group.
GROUP_LEADER = """
import os, signal, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
tmp = sys.argv[1] + ".tmp"
with open(tmp, "w") as fh:
    fh.write(f"{os.getpid()} {child.pid}")
os.replace(tmp, sys.argv[1])
if sys.argv[2] == "wait":
    signal.pause()
"""

# uvicorn re-raises the SIGTERM it handled once its graceful shutdown is done.
GRACEFUL_EXIT = (0, -signal.SIGTERM)

SLEEPER = [sys.executable, "-c", "import signal; signal.pause()"]


# Helpers ----------------------------------------------------------------------------------


def poll_until(check: Callable[[], object], deadline: float, what: str) -> object:
    """Call check until it returns something truthy; fail with `what` after deadline seconds."""
    return poll(what, check, deadline)


@pytest.fixture
def boot(data_dir: Path) -> Iterator[Callable[..., Daemon]]:
    """Start daemons on the test's data dir; every one still running is stopped afterwards."""
    started: list[Daemon] = []

    def start(port: int | None = None, grace: float = 2.0) -> Daemon:
        daemon = Daemon(data_dir, port)
        started.append(daemon)
        return daemon.start(grace=grace)

    yield start
    for daemon in started:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.proc.send_signal(signal.SIGTERM)
            try:
                daemon.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()


@pytest.fixture
def reaper() -> Iterator[Callable[[int], None]]:
    """Register pids a test's runs started; any still alive at the end is SIGKILLed by pid."""
    seen: list[tuple[int, int | None]] = []
    yield lambda pid: seen.append((pid, start_time(pid)))
    for pid, started in seen:
        kill_if_ours(pid, started)


def post_run(daemon: Daemon, body: dict[str, Any]) -> dict[str, Any]:
    """POST /api/runs and return the 202 status body."""
    with daemon.client() as http:
        response = http.post("/api/runs", json=body)
    assert response.status_code == 202, response.text
    status: dict[str, Any] = response.json()
    return status


def get_run(daemon: Daemon, run_id: str) -> dict[str, Any]:
    """GET /api/runs/{id}."""
    with daemon.client() as http:
        response = http.get(f"/api/runs/{run_id}")
    assert response.status_code == 200, response.text
    status: dict[str, Any] = response.json()
    return status


def json_events(daemon: Daemon, run_id: str, after: int = 0, limit: int = 1000) -> dict[str, Any]:
    """One page of GET /api/runs/{id}/events?format=json."""
    with daemon.client() as http:
        response = http.get(
            f"/api/runs/{run_id}/events",
            params={"format": "json", "after": after, "limit": limit},
        )
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def all_pages(daemon: Daemon, run_id: str, after: int, limit: int) -> list[dict[str, Any]]:
    """Every event after a cursor, following nextCursor page by page."""
    items: list[dict[str, Any]] = []
    for _ in range(1000):
        page = json_events(daemon, run_id, after, limit)
        assert len(page["items"]) <= limit
        items += page["items"]
        assert page["nextCursor"] == (page["items"][-1]["id"] if page["items"] else after)
        after = page["nextCursor"]
        if not page["hasMore"]:
            return items
    raise AssertionError("paging did not end")


def wait_for_stdout(daemon: Daemon, run_id: str, text: str) -> list[dict[str, Any]]:
    """Poll the JSON events until the child printed a line equal to text; return the events."""

    def check() -> list[dict[str, Any]] | None:
        items = json_events(daemon, run_id)["items"]
        hit = any(e["event"] == "stdout" and e["data"].get("text") == text for e in items)
        return items if hit else None

    return poll_until(check, RUN_DEADLINE, f"{text!r} from run {run_id}")  # type: ignore[return-value]


def sse_events(
    daemon: Daemon, run_id: str, *, query: str = "", headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Read a run's SSE stream until it closes; return each frame's data, the parsed log line."""
    with (
        daemon.client(timeout=10) as http,
        http.stream("GET", f"/api/runs/{run_id}/events{query}", headers=headers or {}) as resp,
    ):
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        text = resp.read().decode()
    frames = parse_frames(text)
    for frame in frames:
        data = json.loads(frame["data"])
        # The frame names the very event its data line holds.
        assert (int(frame["id"]), frame["event"]) == (data["id"], data["event"])
    return [json.loads(f["data"]) for f in frames]


def kill_if_ours(pid: int, recorded_start: int | None) -> None:
    """SIGKILL a leftover test process, only if pid still is the process we started."""
    if recorded_start is not None and start_time(pid) == recorded_start:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


# Against a real daemon ----------------------------------------------------------------------


def test_a_finished_run_replays_exactly_as_logged_after_a_restart(
    boot: Callable[..., Daemon],
) -> None:
    """Invariants 5, 6: after a restart, status, SSE from any cursor and JSON pages all equal
    the log; a cursor at or past the end still gets `end`."""
    first = boot()
    run = post_run(
        first, {"agentId": "demo", "prompt": "replay", "demo": {"events": 40, "durationSeconds": 0}}
    )
    before = wait_terminal(first, run["id"])
    assert before["status"] == "succeeded"
    assert first.stop() in GRACEFUL_EXIT

    second = boot()
    after = get_run(second, run["id"])
    assert after == before
    log = read_log(run["eventsLogPath"])
    assert_dense(log)
    assert after["lastEventId"] == log[-1]["id"]
    last = log[-1]["id"]
    middle = last // 2

    # From the start, and from a middle cursor both ways a client can give it.
    assert sse_events(second, run["id"]) == log
    assert sse_events(second, run["id"], headers={"Last-Event-ID": str(middle)}) == log[middle:]
    assert sse_events(second, run["id"], query=f"?after={middle}") == log[middle:]
    assert sse_events(second, run["id"], query="?after=1") == log[1:]
    # At or past the end: the `end` event again, then the stream closes (invariant 6).
    assert sse_events(second, run["id"], headers={"Last-Event-ID": str(last)}) == [log[-1]]
    assert sse_events(second, run["id"], query=f"?after={last + 50}") == [log[-1]]

    # The paged JSON endpoint, in small pages, from the start and from the middle.
    assert all_pages(second, run["id"], 0, 7) == log
    assert all_pages(second, run["id"], middle, 5) == log[middle:]
    end_page = json_events(second, run["id"], after=last)
    assert end_page == {"items": [], "nextCursor": last, "hasMore": False}


def test_a_crash_fails_the_active_run_and_reaps_its_whole_process_tree(
    boot: Callable[..., Daemon], tmp_path: Path, reaper: Callable[[int], None]
) -> None:
    """Invariants 2, 9: after kill -9 and a restart: run failed DAEMON_RESTARTED, dense log
    whose ids go on after the crash, no process left."""
    first = boot()
    script = write_script(tmp_path, "tree.py", TREE_CHILD)
    run = post_run(first, {"agentId": "command", "command": [sys.executable, str(script)]})
    events = wait_for_stdout(first, run["id"], "ready")
    pids_line = next(
        e["data"]["text"] for e in events if e["data"].get("text", "").startswith("pids")
    )
    pids = [int(p) for p in pids_line.split()[1:]]
    for pid in pids:
        reaper(pid)
    leader, same_group = pids[:2]
    assert get_run(first, run["id"])["childPid"] == leader
    assert sorted(group_members(leader)) == sorted([leader, same_group])
    assert all(process_alive(pid) for pid in pids)

    first.kill()
    # The crash leaves the processes behind, and a log without an `end`.
    assert all(process_alive(pid) for pid in pids)
    crashed_log = Path(run["eventsLogPath"]).read_bytes()
    assert b'"event":"end"' not in crashed_log

    second = boot(port=first.port)  # the same address, as a user restarting it would
    body = get_run(second, run["id"])
    assert body["status"] == "failed"
    assert body["errorCode"] == "DAEMON_RESTARTED"
    assert body["retryable"] is True and body["finishedAt"] is not None
    log = read_log(run["eventsLogPath"])
    assert_dense(log)
    assert body["lastEventId"] == log[-1]["id"]
    # What was logged before the crash is kept byte for byte; ids go on after it.
    assert Path(run["eventsLogPath"]).read_bytes().startswith(crashed_log)
    assert [e["event"] for e in log[-2:]] == ["error", "end"]
    assert log[-2]["data"]["error"]["code"] == "DAEMON_RESTARTED"
    assert log[-1]["data"]["status"] == "failed"
    assert log[-1]["data"]["errorCode"] == "DAEMON_RESTARTED"
    assert sse_events(second, run["id"]) == log
    with second.client() as http:
        assert http.get("/api/health").json()["activeRuns"] == 0

    for pid in pids:

        def dead(pid: int = pid) -> bool:
            return not process_alive(pid)

        poll_until(dead, REAP_DEADLINE, f"pid {pid} to die")


def test_a_run_finished_before_a_crash_is_left_as_it_was(
    boot: Callable[..., Daemon], tmp_path: Path, reaper: Callable[[int], None]
) -> None:
    """Recovery after kill -9 fails only the active run; a finished one keeps status and log."""
    first = boot()
    done = post_run(first, {"demo": {"events": 12, "durationSeconds": 0}})
    done_body = wait_terminal(first, done["id"])
    assert done_body["status"] == "succeeded"
    script = write_script(tmp_path, "waiting.py", WAITING_CHILD)
    active = post_run(first, {"agentId": "command", "command": [sys.executable, str(script)]})
    wait_for_stdout(first, active["id"], "ready")
    child = get_run(first, active["id"])["childPid"]
    reaper(child)
    with first.client() as http:  # listing flushes the store: SQLite holds the final row
        listed = http.get("/api/runs").json()["runs"]
    assert {r["id"]: r for r in listed}[done["id"]] == done_body
    done_log = Path(done["eventsLogPath"]).read_bytes()

    first.kill()
    second = boot()

    assert get_run(second, done["id"]) == done_body
    assert Path(done["eventsLogPath"]).read_bytes() == done_log
    log = read_log(done["eventsLogPath"])
    assert_dense(log)
    assert log[-1]["data"] == {"status": "succeeded", "code": 0, "signal": None}
    assert sse_events(second, done["id"]) == log

    recovered = get_run(second, active["id"])
    assert (recovered["status"], recovered["errorCode"]) == ("failed", "DAEMON_RESTARTED")
    assert_dense(read_log(active["eventsLogPath"]))
    poll_until(lambda: not process_alive(child), REAP_DEADLINE, "the active run's child to die")


def test_a_graceful_stop_cancels_active_runs_so_a_restart_recovers_nothing(
    boot: Callable[..., Daemon], tmp_path: Path, reaper: Callable[[int], None]
) -> None:
    """SIGTERM to the daemon: the active run ends canceled, and stays so after a restart."""
    first = boot(grace=1.0)
    script = write_script(tmp_path, "waiting.py", WAITING_CHILD)
    run = post_run(first, {"agentId": "command", "command": [sys.executable, str(script)]})
    wait_for_stdout(first, run["id"], "ready")
    child = get_run(first, run["id"])["childPid"]
    reaper(child)
    assert first.stop() in GRACEFUL_EXIT
    assert not process_alive(child)
    log_bytes = Path(run["eventsLogPath"]).read_bytes()

    second = boot()
    body = get_run(second, run["id"])
    assert (body["status"], body["signal"], body["errorCode"]) == ("canceled", "SIGTERM", None)
    assert Path(run["eventsLogPath"]).read_bytes() == log_bytes
    log = read_log(run["eventsLogPath"])
    assert_dense(log)
    assert body["lastEventId"] == log[-1]["id"]
    assert log[-1]["data"] == {"status": "canceled", "code": None, "signal": "SIGTERM"}


def test_a_second_daemon_on_the_same_data_dir_refuses_and_leaves_live_runs_alone(
    boot: Callable[..., Daemon], tmp_path: Path, reaper: Callable[[int], None]
) -> None:
    """Starting `serve` twice on one data dir fails cleanly; the first daemon's run goes on."""
    first = boot()
    script = write_script(tmp_path, "waiting.py", WAITING_CHILD)
    run = post_run(first, {"agentId": "command", "command": [sys.executable, str(script)]})
    wait_for_stdout(first, run["id"], "ready")
    child = get_run(first, run["id"])["childPid"]
    reaper(child)
    log_bytes = Path(run["eventsLogPath"]).read_bytes()

    second = Daemon(first.data_dir)  # another port, the same data dir
    try:
        with pytest.raises(RuntimeError, match="daemon exited"):
            second.start()
    finally:
        if second.proc is not None and second.proc.poll() is None:
            second.kill()
    assert "another od-runs daemon is using the data dir" in second.log_path.read_text()

    body = get_run(first, run["id"])
    assert (body["status"], body["errorCode"]) == ("running", None)
    assert process_alive(child)
    assert Path(run["eventsLogPath"]).read_bytes() == log_bytes
    with first.client() as http:
        canceled = http.post(f"/api/runs/{run['id']}/cancel").json()["run"]
    assert canceled["status"] == "canceled"
    assert_dense(read_log(run["eventsLogPath"]))


# recovery.recover at the unit level, with records we control --------------------------------


def fake_run_id(n: int) -> str:
    """A valid run id that no daemon made."""
    return f"run-{n:016x}"


def write_log(path: Path, events: list[tuple[str, object]], torn: bytes = b"") -> bytes:
    """Write events.jsonl as the daemon does (ids from 1), optionally ending in a torn line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ts = now_iso()
    lines = [
        json.dumps(
            {"id": i, "event": name, "data": data, "ts": ts},
            ensure_ascii=False,
            separators=(",", ":"),
        )
        for i, (name, data) in enumerate(events, start=1)
    ]
    raw = "".join(line + "\n" for line in lines).encode() + torn
    path.write_bytes(raw)
    return raw


def active_row(
    run_id: str,
    log_path: Path | None,
    *,
    pid: int | None = None,
    started: int | None = None,
    last_event_id: int = 0,
) -> RunRow:
    """A stored row as a crash leaves it: status running, maybe a recorded child."""
    now = now_iso()
    body = RunStatus(
        id=run_id,
        agentId="command",
        status="running",
        createdAt=now,
        updatedAt=now,
        startedAt=now,
        childPid=pid,
        eventsLogPath=str(log_path) if log_path is not None else None,
        lastEventId=last_event_id,
    )
    return RunRow(body=body, child_start_time=started)


async def recover_rows(data_dir: Path, *rows: RunRow) -> dict[str, RunStatus]:
    """Store rows, run start-up recovery on them, and return the stored bodies after it."""
    store = await SqliteRunStore.open(data_dir / DB_NAME)
    try:
        for row in rows:
            await store.insert(row)
        assert await recovery.recover(store, RUN_ID_ENV) == sum(
            r.body.status in ("queued", "running") for r in rows
        )
        assert await store.unfinished() == []
        out: dict[str, RunStatus] = {}
        for row in rows:
            stored = await store.get(row.body.id)
            assert stored is not None
            out[row.body.id] = stored.body
        return out
    finally:
        await store.close()


def spawn_sleeper(env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """An unrelated process leading its own session and group, as a reused pid might be."""
    return subprocess.Popen(
        SLEEPER,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def assert_survives(proc: subprocess.Popen[bytes]) -> None:
    """The process is still running a moment after recovery (it was not signalled)."""
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.3)
    assert process_alive(proc.pid)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill and reap a process this test started."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def failed_by_restart(body: RunStatus, log_path: Path, first_new_id: int) -> list[dict[str, Any]]:
    """Assert the run was closed out by recovery from first_new_id on; return its log."""
    assert (body.status, body.errorCode, body.retryable) == ("failed", "DAEMON_RESTARTED", True)
    assert body.finishedAt is not None
    log = read_log(log_path)
    assert_dense(log)
    assert [e["event"] for e in log[first_new_id - 1 :]] == ["error", "end"]
    assert body.lastEventId == log[-1]["id"] == first_new_id + 1
    return log


def test_recovery_spares_a_reused_pid_whose_start_time_differs(
    data_dir: Path,
) -> None:
    """Invariant 9: a recorded pid now held by another process (other start time) is never
    killed."""
    stranger = spawn_sleeper()
    try:
        started = start_time(stranger.pid)
        assert started is not None
        log_path = data_dir / fake_run_id(1) / "events.jsonl"
        write_log(log_path, [("start", {"agentId": "command", "pid": stranger.pid})])
        row = active_row(fake_run_id(1), log_path, pid=stranger.pid, started=started - 1)
        bodies = anyio.run(recover_rows, data_dir, row)
        assert_survives(stranger)
        failed_by_restart(bodies[fake_run_id(1)], log_path, 2)
    finally:
        stop(stranger)


def test_recovery_kills_the_recorded_group_when_the_start_time_matches(
    data_dir: Path, tmp_path: Path
) -> None:
    """Invariant 9: the recorded leader and its same-group child die; an unrelated group
    survives."""
    script = write_script(tmp_path, "leader.py", GROUP_LEADER)
    pid_file = tmp_path / "pids.txt"
    leader = subprocess.Popen(
        [sys.executable, str(script), str(pid_file), "wait"],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    bystander = spawn_sleeper()
    child = 0
    child_started: int | None = None
    try:
        poll_until(pid_file.exists, RUN_DEADLINE, "the leader's pid file")
        child = int(pid_file.read_text().split()[1])
        child_started = start_time(child)
        log_path = data_dir / fake_run_id(2) / "events.jsonl"
        write_log(log_path, [("start", {"agentId": "command", "pid": leader.pid})])
        row = active_row(fake_run_id(2), log_path, pid=leader.pid, started=start_time(leader.pid))
        bodies = anyio.run(recover_rows, data_dir, row)
        assert leader.wait(timeout=REAP_DEADLINE) == -signal.SIGKILL
        poll_until(lambda: not process_alive(child), REAP_DEADLINE, "the same-group child")
        assert_survives(bystander)
        failed_by_restart(bodies[fake_run_id(2)], log_path, 2)
    finally:
        stop(leader)
        stop(bystander)
        if child:
            kill_if_ours(child, child_started)


def test_recovery_kills_a_group_whose_leader_already_exited(data_dir: Path, tmp_path: Path) -> None:
    """A grandchild left alone in the recorded group is reaped though its leader is gone."""
    script = write_script(tmp_path, "leader.py", GROUP_LEADER)
    pid_file = tmp_path / "pids.txt"
    leader = subprocess.Popen(
        [sys.executable, str(script), str(pid_file), "exit"],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    leader_started = start_time(leader.pid)
    child = 0
    child_started: int | None = None
    try:
        assert leader.wait(timeout=RUN_DEADLINE) == 0
        child = int(pid_file.read_text().split()[1])
        child_started = start_time(child)
        assert group_members(leader.pid) == [child]
        log_path = data_dir / fake_run_id(3) / "events.jsonl"
        write_log(log_path, [("start", {"agentId": "command", "pid": leader.pid})])
        row = active_row(fake_run_id(3), log_path, pid=leader.pid, started=leader_started)
        bodies = anyio.run(recover_rows, data_dir, row)
        poll_until(lambda: not process_alive(child), REAP_DEADLINE, "the orphaned group member")
        failed_by_restart(bodies[fake_run_id(3)], log_path, 2)
    finally:
        if child:
            kill_if_ours(child, child_started)


def test_recovery_kills_processes_marked_with_the_run_id_and_no_other(
    data_dir: Path,
) -> None:
    """A process carrying the run's env marker dies; one marked for another run survives."""
    mine = spawn_sleeper({RUN_ID_ENV: fake_run_id(4)})
    other = spawn_sleeper({RUN_ID_ENV: fake_run_id(0x40)})
    try:
        # Never recorded as the child (queued at the crash): only the marker can find it.
        row = active_row(fake_run_id(4), None)
        row.body = row.body.model_copy(update={"status": "queued", "startedAt": None})
        bodies = anyio.run(recover_rows, data_dir, row)
        assert mine.wait(timeout=REAP_DEADLINE) == -signal.SIGKILL
        assert_survives(other)
        body = bodies[fake_run_id(4)]
        assert (body.status, body.errorCode, body.eventsLogPath) == (
            "failed",
            "DAEMON_RESTARTED",
            None,
        )
    finally:
        stop(mine)
        stop(other)


def test_recovery_trusts_an_end_line_the_store_never_saw(data_dir: Path) -> None:
    """A run that logged its `end` just before the crash keeps that outcome and that log."""
    log_path = data_dir / fake_run_id(5) / "events.jsonl"
    end = {"status": "failed", "code": 3, "signal": None, "errorCode": "AGENT_EXITED"}
    end["error"] = "The agent exited with code 3."
    raw = write_log(
        log_path,
        [("start", {"agentId": "command", "pid": 1}), ("stdout", {"text": "hi"}), ("end", end)],
    )
    bodies = anyio.run(
        recover_rows, data_dir, active_row(fake_run_id(5), log_path, last_event_id=1)
    )
    body = bodies[fake_run_id(5)]
    assert (body.status, body.exitCode, body.errorCode, body.error) == (
        "failed",
        3,
        "AGENT_EXITED",
        "The agent exited with code 3.",
    )
    assert body.lastEventId == 3
    assert body.finishedAt == read_log(log_path)[-1]["ts"]
    assert log_path.read_bytes() == raw


def test_recovery_cuts_a_torn_last_line_and_continues_the_ids(data_dir: Path) -> None:
    """Invariants 2, 4: a half-written line from the crash is dropped; error and end follow
    the last whole one with the next ids."""
    log_path = data_dir / fake_run_id(6) / "events.jsonl"
    whole = write_log(
        log_path,
        [("start", {"agentId": "command", "pid": 1}), ("stdout", {"text": "a"})],
        torn=b'{"id":3,"event":"stdout","data":{"te',
    )
    bodies = anyio.run(
        recover_rows, data_dir, active_row(fake_run_id(6), log_path, last_event_id=1)
    )
    log = failed_by_restart(bodies[fake_run_id(6)], log_path, 3)
    assert log_path.read_bytes().startswith(whole[: whole.rindex(b"\n") + 1])
    assert log[:2] == [json.loads(line) for line in whole.splitlines()[:2]]


def test_recovery_of_a_run_that_logged_nothing_starts_its_ids_at_one(
    data_dir: Path,
) -> None:
    """A run created just before the crash gets a log of exactly error (1) and end (2)."""
    log_path = data_dir / fake_run_id(7) / "events.jsonl"
    log_path.parent.mkdir()
    log_path.write_bytes(b"")
    bodies = anyio.run(recover_rows, data_dir, active_row(fake_run_id(7), log_path))
    log = failed_by_restart(bodies[fake_run_id(7)], log_path, 1)
    assert len(log) == 2
