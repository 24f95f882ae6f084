"""SSE over a real uvicorn on a loopback port: replay, live, resume with Last-Event-ID."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from od_runs import fanout
from od_runs.models import RunCreate
from od_runs.runs import open_service
from od_runs.sse import run_frames

from .conftest import Daemon, assert_dense, parse_frames, read_log, wait_terminal


def read_stream(
    daemon: Daemon,
    run_id: str,
    *,
    headers: dict[str, str] | None = None,
    stop_after: int | None = None,
) -> list[dict[str, str]]:
    """Read a run's SSE stream until it closes (or stop_after frames, then hang up)."""
    frames: list[dict[str, str]] = []
    buffer = ""
    with (
        daemon.client() as http,
        http.stream("GET", f"/api/runs/{run_id}/events", headers=headers or {}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for chunk in response.iter_text():
            buffer += chunk
            complete, _, buffer = buffer.rpartition("\n\n")
            frames += parse_frames(complete)
            if stop_after is not None and len(frames) >= stop_after:
                break
    return frames


def start_demo(daemon: Daemon, events: int, seconds: float) -> dict[str, Any]:
    with daemon.client() as http:
        response = http.post(
            "/api/runs",
            json={"prompt": "tour", "demo": {"events": events, "durationSeconds": seconds}},
        )
    assert response.status_code == 202, response.text
    status: dict[str, Any] = response.json()
    return status


def test_a_client_reads_a_demo_run_to_its_end_and_the_stream_closes(daemon: Daemon) -> None:
    """Invariants 2, 3, 5: the stream equals the log, ids dense, closed after `end`."""
    run = start_demo(daemon, events=60, seconds=1.0)
    frames = read_stream(daemon, run["id"])
    log = read_log(run["eventsLogPath"])
    assert_dense(log)
    assert [int(f["id"]) for f in frames] == [e["id"] for e in log]
    assert [f["event"] for f in frames] == [e["event"] for e in log]
    assert frames[-1]["event"] == "end"
    # data is the very line of the log, so a browser and `tail -F` see the same thing.
    lines = Path(run["eventsLogPath"]).read_text().splitlines()
    assert [f["data"] for f in frames] == lines


def test_a_client_that_hangs_up_halfway_resumes_with_last_event_id(daemon: Daemon) -> None:
    """Invariant 5: union of both connections equals the log, in order, no duplicate."""
    run = start_demo(daemon, events=80, seconds=1.5)
    first = read_stream(daemon, run["id"], stop_after=30)
    last_id = first[-1]["id"]
    second = read_stream(daemon, run["id"], headers={"Last-Event-ID": last_id})
    received = [int(f["id"]) for f in first + second]
    log = read_log(run["eventsLogPath"])
    assert received == [e["id"] for e in log]
    assert len(set(received)) == len(received)


def test_last_event_id_wins_over_the_after_query(daemon: Daemon) -> None:
    """The header a browser sends on reconnect beats a stale ?after= in the URL."""
    run = start_demo(daemon, events=10, seconds=0)
    wait_terminal(daemon, run["id"])
    frames = []
    with (
        daemon.client() as http,
        http.stream(
            "GET", f"/api/runs/{run['id']}/events?after=2", headers={"Last-Event-ID": "7"}
        ) as response,
    ):
        frames = parse_frames(response.read().decode())
    assert [int(f["id"]) for f in frames] == list(range(8, 13))


def test_a_cursor_past_the_end_of_a_live_run_waits_for_the_run(daemon: Daemon) -> None:
    """A cursor ahead of the head waits; the run's `end` still arrives (invariant 6)."""
    run = start_demo(daemon, events=20, seconds=1.0)
    frames = read_stream(daemon, run["id"], headers={"Last-Event-ID": "1000"})
    assert [f["event"] for f in frames] == ["end"]
    with daemon.client() as http:
        assert http.get(f"/api/runs/{run['id']}").json()["status"] == "succeeded"


@pytest.mark.parametrize("cursor", ["abc", "-1", "1e9", "99999999999999999999"])
def test_a_bad_cursor_is_a_400_with_a_clear_message(daemon: Daemon, cursor: str) -> None:
    run = start_demo(daemon, events=4, seconds=0)
    with daemon.client() as http:
        response = http.get(f"/api/runs/{run['id']}/events", params={"after": cursor})
        by_header = http.get(f"/api/runs/{run['id']}/events", headers={"Last-Event-ID": cursor})
    for r in (response, by_header):
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "INVALID_CURSOR"


def test_an_unknown_run_stream_is_a_404(daemon: Daemon) -> None:
    with daemon.client() as http:
        response = http.get("/api/runs/run-0123456789abcdef/events")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"


def test_the_stream_carries_a_retry_hint(daemon: Daemon) -> None:
    run = start_demo(daemon, events=4, seconds=0)
    wait_terminal(daemon, run["id"])
    with daemon.client() as http:
        text = http.get(f"/api/runs/{run['id']}/events").text
    assert text.startswith("retry: ")


@pytest.mark.anyio
async def test_a_client_that_falls_behind_is_dropped_and_resumes_from_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invariant 10: a full queue drops the client; reconnecting from its cursor is gap-free."""
    monkeypatch.setattr(fanout, "SUBSCRIBER_LIMIT", 1000)  # bytes: about a dozen events
    monkeypatch.setattr(fanout, "WINDOW_PER_READER", 0.0)  # each emit is published at once
    async with open_service(tmp_path / "data") as service:
        run = await service.create(RunCreate())
        frames = run_frames(service, run.id, 0)
        assert (await frames.__anext__()).startswith(b"retry:")
        service.emit(run, "stdout", {"text": "first"})
        got = parse_frames((await frames.__anext__()).decode())  # attached and live
        for i in range(50):  # nobody reads: the subscriber overflows
            service.emit(run, "stdout", {"text": f"line {i}"})
        rest = [chunk async for chunk in frames]
        assert rest == []  # dropped: the stream ends instead of buffering without bound
        assert run.fanout.subscribers == set()
        service.finish(run, "succeeded", 0)
        cursor = int(got[-1]["id"])
        with anyio.fail_after(5):
            resumed = [
                f
                for chunk in [c async for c in run_frames(service, run.id, cursor)]
                for f in parse_frames(chunk.decode())
            ]
        ids = [int(f["id"]) for f in got + resumed]
        assert ids == list(range(1, run.last_event_id + 1))


def test_httpx_stream_can_follow_a_long_run_live(daemon: Daemon) -> None:
    """Live delivery: frames arrive while the run is still running, not only at its end."""
    run = start_demo(daemon, events=40, seconds=2.0)
    with (
        daemon.client() as http,
        http.stream("GET", f"/api/runs/{run['id']}/events") as response,
    ):
        for chunk in response.iter_text():
            if "event: agent" in chunk:
                break
        status = http.get(f"/api/runs/{run['id']}").json()["status"]
    assert status == "running"
