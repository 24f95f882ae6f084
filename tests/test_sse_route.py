"""The SSE request's short way past FastAPI (sse_route.py): the plain request of a run's
stream is served inside the guard without routing, and every other form of the request goes
to the route as before, errors included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from od_runs.models import RunCreate
from od_runs.runs import open_service
from od_runs.sse_route import FastEvents, _plain_cursor
from tests.conftest import RUN_DEADLINE, Daemon, parse_frames, wait_terminal

pytestmark = pytest.mark.anyio


def scope_of(query: str, *headers: tuple[bytes, bytes], run_id: str = "run-0") -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": f"/api/runs/{run_id}/events",
        "root_path": "",
        "query_string": query.encode(),
        "headers": list(headers),
    }


@pytest.mark.parametrize(
    ("query", "headers", "cursor"),
    [
        ("", (), 0),
        ("after=5", (), 5),
        ("after=%35", (), 5),  # percent-encoded, as a browser may send it
        ("after=&token=t", (), 0),
        ("format=sse&after=0007", (), 7),
        ("after=5", ((b"last-event-id", b"9"),), 9),  # Last-Event-ID wins, as on the route
        ("after=5", ((b"last-event-id", b""),), 5),
        # Left to the route, which answers each as it always did:
        ("format=json", (), None),
        ("after=5&limit=3", (), None),
        ("after=1&after=2", (), None),
        ("after=-1", (), None),
        ("after=" + "1" * 41, (), None),
        ("after=5", ((b"last-event-id", b"x"),), None),
        ("after=5", ((b"last-event-id", b"1"), (b"last-event-id", b"2")), None),
    ],
)
def test_only_the_plain_request_is_taken_past_the_route(
    query: str, headers: tuple[tuple[bytes, bytes], ...], cursor: int | None
) -> None:
    assert _plain_cursor(scope_of(query, *headers)) == cursor


async def test_the_plain_request_never_reaches_the_router_and_the_rest_do(data_dir: Path) -> None:
    """Served by the middleware itself: a real service's run, from the cursor on, to `end`;
    an unknown run or a JSON page goes on to the app behind it."""
    passed_on: list[str] = []

    async def route(scope: Any, receive: Any, send: Any) -> None:
        passed_on.append(scope["path"] + "?" + scope["query_string"].decode())

    async with open_service(data_dir) as service:
        fast = FastEvents(route, lambda: service)
        started = await service.start(
            RunCreate(agentId="command", command=["printf", "a\\nb\\n"], prompt="")
        )
        with anyio.fail_after(RUN_DEADLINE):
            await service.wait(started.id)
        body: list[bytes] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                body.append(message.get("body", b""))

        async def receive() -> dict[str, Any]:
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

        await fast(scope_of("after=1", run_id=started.id), receive, send)
        await fast(scope_of("", run_id="run-0123456789abcdef"), receive, send)
        await fast(scope_of("format=json", run_id=started.id), receive, send)

    frames = parse_frames(b"".join(body).decode())
    assert [f["event"] for f in frames] == ["stdout", "stdout", "end"]
    assert [f["id"] for f in frames] == ["2", "3", "4"]
    assert passed_on == [
        "/api/runs/run-0123456789abcdef/events?",
        f"/api/runs/{started.id}/events?format=json",
    ]


def test_a_daemon_streams_the_same_bytes_either_way_and_keeps_its_guard(data_dir: Path) -> None:
    """Through a real daemon: the plain request (short way) and one the route must take give
    the same events; the guard still refuses a foreign Host on the short way; the route still
    answers a bad cursor and an unknown run."""
    daemon = Daemon(data_dir).start()
    try:
        run = daemon.create({"agentId": "command", "command": ["seq", "1", "50"], "prompt": ""})
        wait_terminal(daemon, run["id"])
        path = f"/api/runs/{run['id']}/events"
        with daemon.client() as http:
            plain = http.get(path, params={"after": "3"})
            routed = http.get(path, params={"after": "3", "limit": "7"})
            resumed = http.get(path, headers={"Last-Event-ID": "40"})
            foreign = http.get(path, headers={"Host": "evil.example"})
            bad = http.get(path, params={"after": "x"})
            unknown = http.get("/api/runs/run-0123456789abcdef/events")
    finally:
        daemon.stop()
    assert plain.status_code == routed.status_code == 200
    assert plain.headers["content-type"].startswith("text/event-stream")
    assert parse_frames(plain.text) == parse_frames(routed.text)
    assert [int(f["id"]) for f in parse_frames(plain.text)] == list(range(4, 53))
    assert [int(f["id"]) for f in parse_frames(resumed.text)] == list(range(41, 53))
    assert foreign.status_code == 403
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "INVALID_CURSOR")
    assert unknown.status_code == 404
