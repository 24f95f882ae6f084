"""The daemon killed or stopped while runs are active: nothing lost, nothing left behind."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from ..conftest import (
    Daemon,
    assert_dense,
    marked,
    parse_frames,
    poll,
    process_alive,
    read_log,
    wait_terminal,
    write_script,
)

# A child that ignores SIGTERM, starts a grandchild that does too, prints both pids, waits.
STUBBORN = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen([sys.executable, "-c",
    "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); signal.pause()"])
print(f"pids {os.getpid()} {grandchild.pid}", flush=True)
signal.pause()
"""
POLITE = """
import os, signal
print(f"pids {os.getpid()}", flush=True)
signal.pause()
"""
GRACE = 1.0


def printed_pids(daemon: Daemon, run_id: str) -> list[int]:
    """The pids a child printed, read through the events page once it has printed them."""

    def probe() -> list[int] | None:
        with daemon.client() as http:
            page = http.get(f"/api/runs/{run_id}/events?format=json&limit=50").json()
        for item in page["items"]:
            text = item["data"].get("text", "") if isinstance(item["data"], dict) else ""
            if text.startswith("pids "):
                return [int(p) for p in text.split()[1:]]
        return None

    return poll(f"run {run_id} to print its pids", probe)  # type: ignore[no-any-return]


@pytest.mark.slow
def test_sigterm_with_twenty_active_runs_leaves_no_process_and_cancels_all(
    data_dir: Path, tmp_path: Path
) -> None:
    """All process groups are gone within grace + 1 s; every run is `canceled` with `end`."""
    stubborn = write_script(tmp_path, "stubborn.py", STUBBORN)
    polite = write_script(tmp_path, "polite.py", POLITE)
    daemon = Daemon(data_dir).start(grace=GRACE)
    runs = []
    for i in range(20):
        script = stubborn if i % 3 == 0 else polite
        runs.append(daemon.create({"agentId": "command", "command": ["python3", str(script)]}))
    pids = {run["id"]: printed_pids(daemon, run["id"]) for run in runs}
    assert daemon.proc is not None
    sent = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    everyone = [pid for group in pids.values() for pid in group]
    poll("every child and grandchild to be gone", lambda: not any(map(process_alive, everyone)))
    gone_after = time.monotonic() - sent
    assert gone_after <= GRACE + 1.0, f"processes outlived the grace by {gone_after - GRACE:.2f} s"
    daemon.proc.wait(timeout=30)

    restarted = Daemon(data_dir, daemon.port).start()
    try:
        for run in runs:
            status = wait_terminal(restarted, run["id"])
            assert status["status"] == "canceled", status
            assert status["cancelRequested"] is True
            log = read_log(status["eventsLogPath"])
            assert_dense(log)
            assert log[-1]["data"]["status"] == "canceled"
            expected = "SIGKILL" if len(pids[run["id"]]) == 2 else "SIGTERM"
            assert log[-1]["data"]["signal"] == expected
            assert marked(run["id"]) == []
    finally:
        restarted.stop()


def test_sigterm_ends_open_streams_so_shutdown_does_not_wait_for_runs(
    data_dir: Path, tmp_path: Path
) -> None:
    """Readers hold SSE streams on a long run: SIGTERM closes them at once, so the daemon
    cancels the run and exits instead of waiting out uvicorn's graceful-shutdown timeout
    (grace + 5 s, here 35 s)."""
    polite = write_script(tmp_path, "polite.py", POLITE)
    daemon = Daemon(data_dir).start(grace=30.0)
    run = daemon.create({"agentId": "command", "command": ["python3", str(polite)]})
    printed_pids(daemon, run["id"])
    followers = [Follower(daemon, run["id"]) for _ in range(3)]
    for follower in followers:
        follower.start()
    poll("every follower to get the first event", lambda: all(f.received() for f in followers))
    assert daemon.proc is not None
    sent = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.proc.wait(timeout=30)
    took = time.monotonic() - sent
    for follower in followers:
        follower.join(timeout=10)
        assert not follower.is_alive()
    # Well under the 35 s uvicorn would have waited for the streams.
    assert took < 15, f"shutdown took {took:.1f} s"

    restarted = Daemon(data_dir, daemon.port).start()
    try:
        assert wait_terminal(restarted, run["id"])["status"] == "canceled"
    finally:
        restarted.stop()


class Follower(threading.Thread):
    """An SSE client that keeps every frame it received until the connection broke."""

    def __init__(self, daemon: Daemon, run_id: str) -> None:
        super().__init__(daemon=True)
        self.url, self.run_id = daemon.url, run_id
        self.client = daemon.client()
        self.text = ""
        self.started = threading.Event()

    def run(self) -> None:
        try:
            with self.client.stream("GET", f"/api/runs/{self.run_id}/events") as response:
                self.started.set()
                for chunk in response.iter_text():
                    self.text += chunk
        except Exception:  # the daemon was killed under us: what we got is what counts
            pass
        finally:
            self.started.set()
            self.client.close()

    def received(self) -> list[dict]:
        """Every complete event frame received, parsed."""
        complete = self.text.rpartition("\n\n")[0]
        return [json.loads(f["data"]) for f in parse_frames(complete)]


@pytest.mark.slow
def test_kill_9_at_random_points_of_twenty_runs(data_dir: Path) -> None:
    """Invariants 1, 2, 3, 9, seeded: after each crash and restart, every run is terminal with
    a whole, dense log ending in `end`, no child is left, and every event a client saw is in
    the log."""
    rng = random.Random(20261121)
    daemon = Daemon(data_dir).start()
    all_runs: list[str] = []
    seen: dict[str, list[dict]] = {}
    try:
        for _ in range(5):
            batch = []
            for _ in range(4):
                events = rng.randint(20, 400)
                body = {"prompt": "crash", "demo": {"events": events, "durationSeconds": 2.0}}
                batch.append(daemon.create(body)["id"])
            followers = [Follower(daemon, run_id) for run_id in batch]
            for follower in followers:
                follower.start()
                follower.started.wait(10)
            # Kill once the first run has streamed a random share of its events.
            target = rng.randint(2, 20)
            first = followers[0]
            poll("the run to stream", lambda f=first, n=target: len(f.received()) >= n)
            assert daemon.proc is not None
            os.kill(daemon.proc.pid, signal.SIGKILL)
            daemon.proc.wait(timeout=10)
            for follower in followers:
                follower.join(timeout=10)
                seen[follower.run_id] = follower.received()
            all_runs += batch
            daemon = Daemon(data_dir, daemon.port).start()
            for run_id in all_runs:
                status = wait_terminal(daemon, run_id)
                log = read_log(status["eventsLogPath"])
                assert_dense(log)
                assert status["lastEventId"] == log[-1]["id"]
                # Invariant 3: nothing a client saw is missing from the log, byte for byte.
                assert seen[run_id] == log[: len(seen[run_id])]
                assert marked(run_id) == []
            crashed = [r for r in batch if wait_terminal(daemon, r)["status"] == "failed"]
            assert crashed, "the kill landed after every run of the batch had ended"
    finally:
        daemon.stop()
    assert len(all_runs) == 20
