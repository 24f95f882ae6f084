"""Disk trouble mid-run: the run fails clearly, the log stays whole, the daemon goes on."""

from __future__ import annotations

import json
import resource

from ..conftest import Daemon, parse_frames, process_alive, read_log, wait_terminal

# The daemon may not grow any file past this: the SQLite files stay far below it, a run
# of 200,000 events passes it after about 60,000 (the kernel answers EFBIG, as it answers
# ENOSPC on a full disk).
FILE_LIMIT = 6 * 1024 * 1024
BIG = {"prompt": "fill", "demo": {"events": 200_000, "fast": True}}
SMALL = {"prompt": "small", "demo": {"events": 30, "durationSeconds": 1.5}}


def test_an_unwritable_log_fails_the_run_and_the_daemon_serves_on(daemon: Daemon) -> None:
    """LOG_WRITE_FAILED with a readable message; whole lines; others unaffected."""
    assert daemon.proc is not None
    resource.prlimit(daemon.proc.pid, resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))
    small = daemon.create(SMALL)
    big = daemon.create(BIG)
    with daemon.client() as http:
        stream = http.get(f"/api/runs/{big['id']}/events", timeout=60).text
    status = wait_terminal(daemon, big["id"])
    assert status["status"] == "failed"
    assert status["errorCode"] == "LOG_WRITE_FAILED"
    assert status["retryable"] is True
    assert "could not be written" in status["error"]

    # The log holds whole lines only, dense, and stops where the disk did.
    log = read_log(status["eventsLogPath"])
    assert [e["id"] for e in log] == list(range(1, len(log) + 1))
    assert 1000 < len(log) < 200_000
    assert status["lastEventId"] == len(log)

    # A reader gets exactly the log, then an `end` that says why, and the stream closes.
    frames = parse_frames(stream)
    assert [json.loads(f["data"]) for f in frames[:-1]] == log
    end = json.loads(frames[-1]["data"])
    assert (end["id"], end["event"]) == (len(log) + 1, "end")
    assert end["data"]["status"] == "failed"
    assert end["data"]["errorCode"] == "LOG_WRITE_FAILED"
    # The same holds for a reader that comes back later.
    with daemon.client() as http:
        again = parse_frames(http.get(f"/api/runs/{big['id']}/events?after={len(log)}").text)
    assert [(f["id"], f["event"]) for f in again] == [(str(len(log) + 1), "end")]

    # The child was stopped; the daemon still serves other runs, old and new.
    assert status["childPid"] is not None and not process_alive(status["childPid"])
    assert wait_terminal(daemon, small["id"])["status"] == "succeeded"
    after = daemon.create({"prompt": "after", "demo": {"events": 5, "fast": True}})
    assert wait_terminal(daemon, after["id"])["status"] == "succeeded"
    with daemon.client() as http:
        assert http.get("/api/health").json()["ok"] is True
