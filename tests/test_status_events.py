"""The daemon-wide stream of run status changes, `GET /api/events` (the web monitor's list)."""

from __future__ import annotations

import json
from typing import Any

from od_runs.models import RunStatus
from od_runs.status_events import StatusHub

from .conftest import Daemon, parse_frames, poll


def body(run_id: str, status: str = "running", project: str | None = None) -> RunStatus:
    return RunStatus(
        id=run_id,
        agentId="demo",
        status=status,  # type: ignore[arg-type]
        projectId=project,
        createdAt="2026-01-01T00:00:00.000Z",
        updatedAt="2026-01-01T00:00:00.000Z",
    )


def frames_of(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) of each SSE frame with a data line."""
    out = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if ": " in line and line[0] != ":"
        )
        if "data" in fields:
            out.append((fields.get("event", "message"), json.loads(fields["data"])))
    return out


def delete_while_listening(
    listener: Daemon, deleter: Daemon, run_id: str, project: str
) -> list[tuple[str, dict[str, Any]]]:
    """Follow the project's list on listener; once its snapshot is in, delete the run through
    deleter; the frames seen up to `event: deleted`."""
    seen: list[tuple[str, dict[str, Any]]] = []
    buffer = ""
    with (
        listener.client() as http,
        http.stream("GET", "/api/events", params={"projectId": project}) as response,
    ):
        for chunk in response.iter_text():
            buffer += chunk
            complete, _, buffer = buffer.rpartition("\n\n")
            seen += frames_of(complete)
            if len(seen) == 1:
                assert seen[0][0] == "snapshot"
                with deleter.client() as other:
                    deleted = other.delete(f"/api/runs/{run_id}")
                    assert deleted.status_code == 200, deleted.text
            if any(name == "deleted" for name, _ in seen):
                break
    return seen


def test_a_subscriber_that_falls_behind_is_dropped_and_told_so() -> None:
    """Memory is bounded per client (invariant 10): past the limit the subscriber is closed
    and its on_drop runs, while other subscribers keep receiving."""
    hub = StatusHub(limit=3)
    slow, other = hub.subscribe(), hub.subscribe(project_id="p")
    dropped: list[bool] = []
    slow.on_drop = lambda: dropped.append(True)
    for i in range(4):
        hub.publish(body(f"run-{i:016x}", project="q"))
    assert slow.closed and dropped == [True]
    assert not other.closed and not other._frames  # another project's changes are not for it
    hub.publish(body("run-ffffffffffffffff", project="p"))
    assert not other.closed and len(other._frames) == 1
    assert all(b"event: run\ndata: {" in frame for frame in other._frames)


def test_the_stream_sends_a_snapshot_then_every_status_change(shared: Daemon) -> None:
    """A client sees the runs that exist, then queued -> running -> succeeded of a new run,
    only for its project, over one connection."""
    before = shared.create({"projectId": "evs", "demo": {"events": 4, "fast": True}})
    poll("the first run to finish", lambda: _status(shared, before["id"]) == "succeeded")
    seen: list[tuple[str, dict[str, Any]]] = []
    buffer = raw = ""
    with (
        shared.client() as http,
        http.stream("GET", "/api/events", params={"projectId": "evs"}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        started = None
        for chunk in response.iter_text():
            buffer += chunk
            raw += chunk
            complete, _, buffer = buffer.rpartition("\n\n")
            seen += frames_of(complete)
            if seen and started is None:
                shared.create({"projectId": "other", "demo": {"events": 4, "fast": True}})
                started = shared.create({"projectId": "evs", "demo": {"events": 4, "fast": True}})
            if started and any(
                data.get("id") == started["id"] and data["status"] == "succeeded"
                for _, data in seen
            ):
                break
    assert seen[0] == ("snapshot", {"runs": [_body(shared, before["id"])]})
    changes = [data for name, data in seen[1:]]
    assert all(name == "run" for name, _ in seen[1:])
    assert {data["projectId"] for data in changes} == {"evs"}
    statuses = [data["status"] for data in changes]
    assert statuses[0] == "queued" and statuses[-1] == "succeeded" and "running" in statuses
    # No frame carries an id: a client that reconnects starts over from a new snapshot.
    assert not parse_frames(raw) and raw.startswith("retry: ")


def test_the_stream_refuses_a_bad_filter(shared: Daemon) -> None:
    """A status filter outside the known states is a 422 with the usual error body."""
    with shared.client() as http:
        response = http.get("/api/events", params={"status": "sleeping"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "INVALID_REQUEST"


def _status(daemon: Daemon, run_id: str) -> str:
    return str(_body(daemon, run_id)["status"])


def _body(daemon: Daemon, run_id: str) -> dict[str, Any]:
    with daemon.client() as http:
        run: dict[str, Any] = http.get(f"/api/runs/{run_id}").json()
        return run


def test_a_deleted_run_is_announced_to_the_list_stream(shared: Daemon) -> None:
    """Issue 15: a list that follows a project hears `event: deleted` with the run's id when
    one of its runs is deleted, so the web monitor drops the row without a reload."""
    run = shared.create({"projectId": "evs-del", "demo": {"events": 4, "fast": True}})
    poll("the run to finish", lambda: _status(shared, run["id"]) == "succeeded")
    seen = delete_while_listening(shared, shared, run["id"], "evs-del")
    assert [run["id"]] == [r["id"] for r in seen[0][1]["runs"]]
    assert ("deleted", {"id": run["id"]}) in seen[1:]
