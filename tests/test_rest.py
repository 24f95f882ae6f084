"""The REST contract of DESIGN.md against a real daemon (uvicorn in a subprocess)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import (
    Daemon,
    assert_dense,
    free_port,
    http_client,
    poll,
    process_alive,
    read_log,
    wait_terminal,
    write_script,
)

# The status body fields DESIGN.md promises (OD-compatible names).
STATUS_FIELDS = {
    "id",
    "projectId",
    "conversationId",
    "agentId",
    "status",
    "createdAt",
    "updatedAt",
    "startedAt",
    "finishedAt",
    "cancelRequested",
    "childPid",
    "exitCode",
    "signal",
    "error",
    "errorCode",
    "eventsLogPath",
    "lastEventId",
    "mediaExecution",
    "toolBundle",
}
FAST_DEMO: dict[str, Any] = {"prompt": "tour", "demo": {"events": 8, "fast": True}}
# A command child that sleeps until it is stopped.
SLEEPER = [sys.executable, "-c", "import signal; signal.pause()"]


@pytest.fixture
def http(shared: Daemon) -> Iterator[httpx.Client]:
    """An HTTP client of the shared daemon."""
    with shared.client() as client:
        yield client


def create(http: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    """POST /api/runs and expect 202."""
    response = http.post("/api/runs", json=body)
    assert response.status_code == 202, response.text
    return response.json()


def all_events(http: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    """Every event of a run so far, read through the JSON pages."""
    events: list[dict[str, Any]] = []
    while True:
        response = http.get(
            f"/api/runs/{run_id}/events",
            params={"format": "json", "after": events[-1]["id"] if events else 0},
        )
        assert response.status_code == 200, response.text
        page = response.json()
        events += page["items"]
        if not page["hasMore"]:
            return events


def assert_error(response: httpx.Response, status: int | None, code: str | None = None) -> str:
    """The response is an error body {"error": {"code", "message"}}; returns the message."""
    if status is None:
        assert 400 <= response.status_code < 500, response.text
    else:
        assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message"}
    assert isinstance(error["message"], str) and error["message"].strip()
    if code is not None:
        assert error["code"] == code, error
    return error["message"]


def tree(root: Path) -> set[str]:
    """Every path under root, relative."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# Contract shapes --------------------------------------------------------------------------------


def test_create_answers_202_with_the_status_body_and_get_returns_it(
    shared: Daemon, http: httpx.Client
) -> None:
    """POST /api/runs: 202 and a status body with every documented field; GET returns the same."""
    body = create(http, {**FAST_DEMO, "projectId": "p-shape", "conversationId": "c-shape"})
    assert set(body) >= STATUS_FIELDS
    assert re.fullmatch(r"run-[0-9a-f]{16}", body["id"])
    assert body["status"] in ("queued", "running")
    assert (body["agentId"], body["projectId"], body["conversationId"]) == (
        "demo",
        "p-shape",
        "c-shape",
    )
    assert body["cancelRequested"] is False
    log_path = Path(body["eventsLogPath"])
    assert log_path.is_relative_to(shared.data_dir.resolve())
    got = http.get(f"/api/runs/{body['id']}")
    assert got.status_code == 200
    assert set(got.json()) >= STATUS_FIELDS and got.json()["id"] == body["id"]
    final = wait_terminal(http, body["id"])
    assert final["status"] == "succeeded" and final["exitCode"] == 0
    assert final["startedAt"] and final["finishedAt"]
    log = read_log(log_path)
    assert_dense(log)
    assert final["lastEventId"] == log[-1]["id"]


def test_events_json_page_has_items_next_cursor_and_has_more(http: httpx.Client) -> None:
    """?format=json pages through the log with {items, nextCursor, hasMore}; SSE is event-stream."""
    run = create(http, FAST_DEMO)
    wait_terminal(http, run["id"])
    log = read_log(run["eventsLogPath"])
    first = http.get(f"/api/runs/{run['id']}/events", params={"format": "json", "limit": 3})
    assert first.status_code == 200
    page = first.json()
    assert set(page) == {"items", "nextCursor", "hasMore"}
    assert [e["id"] for e in page["items"]] == [1, 2, 3]
    assert set(page["items"][0]) == {"id", "event", "data", "ts"}
    assert page["nextCursor"] == 3 and page["hasMore"] is True
    rest = http.get(
        f"/api/runs/{run['id']}/events", params={"format": "json", "after": 3, "limit": 1000}
    ).json()
    assert [e["id"] for e in rest["items"]] == [e["id"] for e in log[3:]]
    assert rest["hasMore"] is False and rest["nextCursor"] == log[-1]["id"]
    with http.stream("GET", f"/api/runs/{run['id']}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    assert "event: end" in text


def test_list_and_health_and_cancel_bodies(http: httpx.Client) -> None:
    """GET /api/runs is {"runs": [...]}; /api/health {ok, version, activeRuns, openStreams,
    dataDir, workerId, workers} (the last two null without a database); cancel {ok, run}."""
    run = create(http, {"agentId": "command", "command": SLEEPER, "projectId": "p-bodies"})
    listed = http.get("/api/runs", params={"projectId": "p-bodies"}).json()
    assert set(listed) == {"runs"}
    assert [r["id"] for r in listed["runs"]] == [run["id"]]
    assert set(listed["runs"][0]) >= STATUS_FIELDS
    health = http.get("/api/health").json()
    assert set(health) == {
        "ok", "version", "activeRuns", "openStreams", "dataDir", "workerId", "workers"
    }  # fmt: skip
    assert health["workerId"] is None and health["workers"] is None
    assert health["ok"] is True and isinstance(health["version"], str)
    assert health["activeRuns"] >= 1
    canceled = http.post(f"/api/runs/{run['id']}/cancel")
    assert canceled.status_code == 200, canceled.text
    body = canceled.json()
    assert set(body) == {"ok", "run"} and body["ok"] is True
    assert body["run"]["id"] == run["id"] and body["run"]["status"] == "canceled"
    again = http.post(f"/api/runs/{run['id']}/cancel").json()
    assert again["run"]["status"] == "canceled"


def test_openapi_lists_every_route(http: httpx.Client) -> None:
    """/openapi.json documents the REST routes with their methods."""
    response = http.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "post" in paths["/api/runs"] and "get" in paths["/api/runs"]
    assert "get" in paths["/api/runs/{run_id}"]
    assert "get" in paths["/api/runs/{run_id}/events"]
    assert "post" in paths["/api/runs/{run_id}/cancel"]
    assert "get" in paths["/api/health"]


# Bad ids and bad bodies -------------------------------------------------------------------------


def test_an_unknown_run_id_is_404_not_found_on_every_route(http: httpx.Client) -> None:
    """get, events (SSE and JSON) and cancel of a run that does not exist answer 404 NOT_FOUND."""
    missing = "run-0123456789abcdef"
    for method, path in (
        ("GET", f"/api/runs/{missing}"),
        ("GET", f"/api/runs/{missing}/events"),
        ("GET", f"/api/runs/{missing}/events?format=json"),
        ("POST", f"/api/runs/{missing}/cancel"),
    ):
        message = assert_error(http.request(method, path), 404, "NOT_FOUND")
        assert missing in message, (path, message)


def test_hostile_run_ids_get_a_clear_4xx_and_touch_no_file(
    shared: Daemon, http: httpx.Client
) -> None:
    """Traversal, NUL and huge ids are refused with a short message; nothing is written."""
    root = shared.data_dir.parent
    before = tree(root)
    for raw in ("..%2Fetc", "..%2F..%2Fetc%2Fpasswd", "%2e%2e", "%00", "run-%00", "a" * 5000):
        for method, suffix in (("GET", ""), ("GET", "/events"), ("POST", "/cancel")):
            response = http.request(method, f"/api/runs/{raw}{suffix}")
            message = assert_error(response, None)
            assert len(message) < 300, (raw[:20], suffix, message[:100])
    for field in ("projectId", "conversationId", "clientRequestId"):
        for value in ("../etc", "a/b", "x\x00y", "a" * 5000):
            response = http.post("/api/runs", json={**FAST_DEMO, field: value})
            assert field in assert_error(response, 422, "INVALID_REQUEST")
    assert tree(root) == before
    assert not (root / "etc").exists() and not (shared.data_dir / "etc").exists()


def test_malformed_json_is_400_with_a_readable_message(http: httpx.Client) -> None:
    """A body that is not JSON gets 400 MALFORMED_JSON, not a stack trace."""
    response = http.post(
        "/api/runs", content=b'{"prompt": "x",', headers={"content-type": "application/json"}
    )
    assert "JSON" in assert_error(response, 400, "MALFORMED_JSON")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": 5}, "prompt"),
        ({"agentId": "nope"}, "agentId"),
        ({"demo": {"events": "many"}}, "demo.events"),
        ({"command": "ls -l", "agentId": "command"}, "command"),
        ({"env": {"A": 1}}, "env"),
        ({"surprise": True}, "surprise"),
    ],
)
def test_a_wrong_field_is_refused_with_a_message_naming_it(
    http: httpx.Client, body: dict[str, Any], field: str
) -> None:
    """Wrong types, unknown agentId and unknown fields: 422 whose message names the field."""
    message = assert_error(http.post("/api/runs", json=body), 422, "INVALID_REQUEST")
    assert field in message


def test_a_command_run_without_its_command_is_400(http: httpx.Client) -> None:
    """agentId=command without a command argv: 400 saying what is missing."""
    message = assert_error(http.post("/api/runs", json={"agentId": "command"}), 400)
    assert "command" in message


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"a prompt"', b"42", b"null", b"true"])
def test_a_json_body_that_is_not_an_object_is_400(http: httpx.Client, raw: bytes) -> None:
    """Arrays, strings, numbers and null are refused with 400 asking for a JSON object."""
    response = http.post("/api/runs", content=raw, headers={"content-type": "application/json"})
    assert "object" in assert_error(response, 400)


def test_a_body_over_4_mb_is_413(http: httpx.Client) -> None:
    """Too large with Content-Length, and too large while streamed (chunked): both 413."""
    big = b'{"prompt": "' + b"x" * (4 * 1024 * 1024 + 16) + b'"}'
    headers = {"content-type": "application/json"}
    sized = http.post("/api/runs", content=big, headers=headers)
    assert_error(sized, 413, "BODY_TOO_LARGE")

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 256 * 1024):
            yield big[i : i + 256 * 1024]

    streamed = http.post("/api/runs", content=chunks(), headers=headers)
    assert_error(streamed, 413, "BODY_TOO_LARGE")
    assert http.get("/api/health").status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_that_is_not_declared_json_is_refused(
    http: httpx.Client, content_type: str | None
) -> None:
    """A JSON text sent as text/plain, a form or without a content type: 4xx, no run created."""
    before = len(http.get("/api/runs").json()["runs"])
    headers = {"content-type": content_type} if content_type else {}
    response = http.post("/api/runs", content=b'{"prompt": "x"}', headers=headers)
    assert "JSON" in assert_error(response, None)
    assert len(http.get("/api/runs").json()["runs"]) == before


def test_creates_racing_with_finishing_runs_all_answer_202(shared: Daemon) -> None:
    """Many creates from several clients while earlier runs finish: every one is 202, none 500."""
    project = "p-race"
    quick = {"agentId": "command", "command": ["true"], "projectId": project}

    def burst(n: int) -> list[int]:
        with shared.client() as http:
            return [http.post("/api/runs", json=quick).status_code for _ in range(n)]

    with ThreadPoolExecutor(4) as pool:
        codes = [c for batch in pool.map(burst, [10] * 4) for c in batch]
    assert codes == [202] * 40
    with shared.client() as http:
        runs = http.get("/api/runs", params={"projectId": project}).json()["runs"]
        assert len(runs) == 40
        for run in runs:
            assert wait_terminal(http, run["id"])["status"] == "succeeded"


# Idempotency --------------------------------------------------------------------------------------


def test_client_request_id_makes_create_idempotent(http: httpx.Client) -> None:
    """Same clientRequestId and payload: same run; another payload: 409 IDEMPOTENCY_CONFLICT."""
    body = {**FAST_DEMO, "clientRequestId": "req-idem-1", "projectId": "p-idem"}
    first = create(http, body)
    second = create(http, body)
    assert second["id"] == first["id"]
    wait_terminal(http, first["id"])
    third = create(http, body)
    assert third["id"] == first["id"]
    conflict = http.post("/api/runs", json={**body, "prompt": "something else"})
    assert "req-idem-1" in assert_error(conflict, 409, "IDEMPOTENCY_CONFLICT")
    runs = http.get("/api/runs", params={"projectId": "p-idem"}).json()["runs"]
    assert [r["id"] for r in runs] == [first["id"]]


# Cancel -----------------------------------------------------------------------------------------

STUBBORN = """\
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen(
    [sys.executable, "-c",
     "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); signal.pause()"]
)
print(f"pids {os.getpid()} {grandchild.pid}", flush=True)
signal.pause()
"""


def group_members(pgid: int) -> list[int]:
    """Live processes whose process group is pgid."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def test_cancel_returns_only_after_the_whole_process_group_is_gone(
    data_dir: Path, tmp_path: Path
) -> None:
    """A child ignoring SIGTERM with a grandchild: cancel answers once both are dead (SIGKILL)."""
    grace = 0.5
    daemon = Daemon(data_dir).start(grace=grace)
    try:
        script = write_script(tmp_path, "stubborn.py", STUBBORN)
        with daemon.client() as http:
            run = create(http, {"agentId": "command", "command": [sys.executable, str(script)]})

            def pids_printed() -> list[int] | None:
                for event in all_events(http, run["id"]):
                    text = event["data"].get("text", "") if event["event"] == "stdout" else ""
                    if text.startswith("pids "):
                        return [int(p) for p in text.split()[1:]]
                return None

            child, grandchild = poll("the child to print its pids", pids_printed)
            assert process_alive(child) and process_alive(grandchild)
            started = time.monotonic()
            response = http.post(f"/api/runs/{run['id']}/cancel")
            elapsed = time.monotonic() - started
            # Right after the answer: nothing of the group may be alive.
            assert not process_alive(child)
            assert not process_alive(grandchild)
            assert group_members(child) == []
            assert response.status_code == 200, response.text
            assert elapsed >= grace * 0.9, "SIGTERM is ignored: the grace period must pass"
            status = response.json()["run"]
            assert status["status"] == "canceled"
            assert status["cancelRequested"] is True
            assert status["signal"] == "SIGKILL"
            events = all_events(http, run["id"])
        assert_dense(events)
        end = events[-1]["data"]
        assert end["status"] == "canceled"
        assert end["signal"] == "SIGKILL"
        assert read_log(run["eventsLogPath"])[-1]["data"] == end
    finally:
        daemon.stop()


# List filters -----------------------------------------------------------------------------------


def test_list_filters_by_project_conversation_and_active_status(http: httpx.Client) -> None:
    """projectId, conversationId and status=active each narrow GET /api/runs."""
    done_a = create(http, {**FAST_DEMO, "projectId": "p-filter-a", "conversationId": "c-1"})
    done_b = create(http, {**FAST_DEMO, "projectId": "p-filter-b", "conversationId": "c-1"})
    live = create(
        http,
        {
            "agentId": "command",
            "command": SLEEPER,
            "projectId": "p-filter-a",
            "conversationId": "c-2",
        },
    )
    wait_terminal(http, done_a["id"])
    wait_terminal(http, done_b["id"])
    try:

        def ids(**params: str) -> list[str]:
            response = http.get("/api/runs", params=params)
            assert response.status_code == 200, response.text
            return [r["id"] for r in response.json()["runs"]]

        # Newest first.
        assert ids(projectId="p-filter-a") == [live["id"], done_a["id"]]
        assert ids(projectId="p-filter-b") == [done_b["id"]]
        assert ids(conversationId="c-1") == [done_b["id"], done_a["id"]]
        assert ids(projectId="p-filter-a", conversationId="c-2") == [live["id"]]
        assert ids(projectId="p-filter-a", status="active") == [live["id"]]
        assert ids(projectId="p-filter-a", status="succeeded") == [done_a["id"]]
        active = http.get("/api/runs", params={"status": "active"}).json()["runs"]
        assert live["id"] in [r["id"] for r in active]
        assert all(r["status"] in ("queued", "running") for r in active)
        assert ids(projectId="p-nobody") == []
        message = assert_error(http.get("/api/runs", params={"status": "sleepy"}), 422)
        assert "status" in message
    finally:
        http.post(f"/api/runs/{live['id']}/cancel")


# Security ---------------------------------------------------------------------------------------


def test_a_foreign_host_or_origin_is_refused_and_a_loopback_origin_accepted(
    shared: Daemon, http: httpx.Client
) -> None:
    """DNS-rebinding defence: Host evil.com and Origin http://evil.com are 403."""
    assert_error(http.get("/api/health", headers={"Host": "evil.com"}), 403, "FORBIDDEN_HOST")
    assert_error(
        http.get("/api/runs", headers={"Origin": "http://evil.com"}), 403, "FORBIDDEN_ORIGIN"
    )
    refused = http.post("/api/runs", json=FAST_DEMO, headers={"Origin": "http://evil.com"})
    assert_error(refused, 403, "FORBIDDEN_ORIGIN")
    for origin in (f"http://localhost:{shared.port}", f"http://127.0.0.1:{shared.port}"):
        response = http.get("/api/health", headers={"Origin": origin})
        assert response.status_code == 200, (origin, response.text)


def clean_env() -> dict[str, str]:
    """The environment without any OD_RUNS_* setting of the developer's."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OD_RUNS_")}


def test_listening_beyond_loopback_without_a_token_is_refused(tmp_path: Path) -> None:
    """`serve --host 0.0.0.0` without a token exits non-zero and says a token is needed."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "od_runs",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
            "--data-dir",
            str(tmp_path / "runs_log"),
        ],
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "0.0.0.0" in result.stderr and "token" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs_log").exists()


def test_with_a_token_only_requests_bearing_it_are_served(data_dir: Path, tmp_path: Path) -> None:
    """`od-runs --token T serve`: no or wrong token gets 401; `Authorization: Bearer T` works."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "daemon.log", "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "od_runs",
                "--token",
                "T0ken",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
            ],
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    good = {"Authorization": "Bearer T0ken"}
    try:
        with http_client(url) as http:

            def healthy() -> bool:
                assert proc.poll() is None, "daemon exited"
                try:
                    return http.get("/api/health", headers=good).status_code == 200
                except httpx.TransportError:
                    return False

            poll("the daemon to answer", healthy)
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "T0ken"}):
                for method, path in (("GET", "/api/health"), ("GET", "/api/runs")):
                    response = http.request(method, path, headers=headers)
                    assert_error(response, 401, "UNAUTHORIZED")
                    assert response.headers["www-authenticate"] == "Bearer"
            refused = http.post("/api/runs", json=FAST_DEMO)
            assert_error(refused, 401, "UNAUTHORIZED")
            assert http.get("/api/runs", headers=good).json() == {"runs": []}
            run = http.post("/api/runs", json=FAST_DEMO, headers=good)
            assert run.status_code == 202, run.text
            listed = http.get("/api/runs", headers=good).json()["runs"]
            assert [r["id"] for r in listed] == [run.json()["id"]]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_files_under_the_data_dir_are_private(shared: Daemon, http: httpx.Client) -> None:
    """Every directory under the data dir is 0700 and every file 0600."""
    run = create(http, FAST_DEMO)
    wait_terminal(http, run["id"])
    paths = [shared.data_dir, *shared.data_dir.rglob("*")]
    assert any(p.name == "events.jsonl" for p in paths)
    assert any(p.name.endswith(".sqlite3") for p in paths)
    for path in paths:
        mode = path.stat().st_mode & 0o777
        expected = 0o700 if path.is_dir() else 0o600
        assert mode == expected, f"{path} has mode {oct(mode)}"
