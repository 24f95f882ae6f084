"""MCP tools end to end: a real SDK client over Streamable HTTP (/mcp) and over stdio
(`od-runs mcp`). Resources, progress and stdio hygiene: test_mcp_resources.py."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from mcp import Client

from od_runs.models import MAX_TIMEOUT_MS

from .conftest import (
    Daemon,
    apoll,
    assert_dense,
    call,
    connect,
    error_text,
    free_port,
    read_log,
    stdio_params,
)

# Upper bound for one whole test: a small demo run takes well under a second.
TEST_DEADLINE = 30.0
# How long `od-runs mcp` may take to exit once its stdin is closed.
EXIT_DEADLINE = 5.0
PAGE_LIMIT = 7
SMALL_DEMO = {"events": 30, "durationSeconds": 0.3}
# Long enough to still be running while a test looks at it; canceled before it ends.
LONG_DEMO = {"events": 2000, "durationSeconds": 60}
TOOLS = {"start_run", "get_run", "list_runs", "cancel_run", "wait_run", "get_run_events"}
READ_ONLY_TOOLS = {"get_run", "list_runs", "wait_run", "get_run_events"}


async def check_tools(client: Client) -> None:
    """All six tools are listed with input schemas; read-only ones say so."""
    listed = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(listed) >= TOOLS
    for name in TOOLS:
        tool = listed[name]
        assert tool.input_schema["type"] == "object"
        assert tool.description
        read_only = tool.annotations.read_only_hint if tool.annotations else None
        assert read_only is (name in READ_ONLY_TOOLS), name
    assert "runId" in listed["get_run"].input_schema["required"]
    wait_props = listed["wait_run"].input_schema["properties"]
    assert {"runId", "after", "timeoutSeconds"} <= set(wait_props)
    assert wait_props["timeoutSeconds"]["maximum"] == 50
    assert {"items", "nextCursor", "hasMore"} <= set(
        listed["get_run_events"].output_schema["properties"]  # type: ignore[index]
    )


async def wait_until_done(client: Client, run_id: str) -> dict[str, Any]:
    """Follow a run with wait_run and its cursor until done; the last result."""
    cursor = 0
    seen: list[dict[str, Any]] = []
    while True:
        result = await call(
            client,
            "wait_run",
            {"runId": run_id, "after": cursor, "timeoutSeconds": 10, "returnOnEvent": True},
        )
        assert result["run"]["id"] == run_id
        assert all(event["id"] > cursor for event in result["events"])
        assert result["nextCursor"] >= cursor
        cursor = result["nextCursor"]
        seen += result["events"]
        if result["done"]:
            break
    assert cursor == result["run"]["lastEventId"]
    assert seen[-1]["event"] == "end"
    ids = [event["id"] for event in seen]
    assert ids == sorted(set(ids)), "wait_run repeated or reordered events"
    return result


async def page_events(client: Client, run_id: str) -> list[dict[str, Any]]:
    """Every event of a run via get_run_events, PAGE_LIMIT at a time."""
    cursor = 0
    items: list[dict[str, Any]] = []
    while True:
        page = await call(
            client, "get_run_events", {"runId": run_id, "after": cursor, "limit": PAGE_LIMIT}
        )
        assert 0 < len(page["items"]) <= PAGE_LIMIT
        assert page["items"][0]["id"] == cursor + 1
        assert page["nextCursor"] == page["items"][-1]["id"]
        items += page["items"]
        cursor = page["nextCursor"]
        if not page["hasMore"]:
            break
    past_end = await call(
        client, "get_run_events", {"runId": run_id, "after": cursor, "limit": PAGE_LIMIT}
    )
    assert past_end == {"items": [], "nextCursor": cursor, "hasMore": False}
    return items


async def demo_flow(client: Client, data_dir: Path) -> None:
    """list_tools, start_run, wait_run to the end, get_run, page all events = the log."""
    await check_tools(client)
    started = await call(client, "start_run", {"prompt": "fix the tests", "demo": SMALL_DEMO})
    run = started["run"]
    run_id = run["id"]
    assert run["status"] in ("queued", "running")
    assert run["eventsLogPath"] == str(data_dir.resolve() / run_id / "events.jsonl")
    assert run_id in started["hint"]

    final = await wait_until_done(client, run_id)
    assert final["run"]["status"] == "succeeded"

    got = await call(client, "get_run", {"runId": run_id})
    assert got["run"]["status"] == "succeeded"
    assert got["run"]["exitCode"] == 0
    assert "tail -F" not in got["hint"]

    events = await page_events(client, run_id)
    log = read_log(run["eventsLogPath"])
    assert_dense(log)
    assert events == log
    assert len(events) > 2 * PAGE_LIMIT
    assert events[-1]["data"]["status"] == "succeeded"

    listed = await call(client, "list_runs", {"status": "succeeded"})
    assert run_id in [r["id"] for r in listed["runs"]]


async def wait_for_status(client: Client, run_id: str, status: str) -> dict[str, Any]:
    """Poll get_run until the run has this status; the get_run result."""

    async def reached() -> dict[str, Any] | None:
        got = await call(client, "get_run", {"runId": run_id})
        return got if got["run"]["status"] == status else None

    return await apoll(f"run {run_id} to be {status}", reached)  # type: ignore[no-any-return]


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize("transport", ["http", "stdio"])
async def test_demo_flow(daemon: Daemon, data_dir: Path, transport: str, mode: str) -> None:
    """Over /mcp and over `od-runs mcp` on stdio, a client runs a demo and pages its events."""
    with anyio.fail_after(TEST_DEADLINE):
        async with connect(daemon, transport, mode) as client:
            await demo_flow(client, data_dir)


def spawned_daemons(data_dir: Path) -> list[psutil.Process]:
    """`od-runs serve` processes whose --data-dir is data_dir (how `od-runs mcp` spawns one)."""
    wanted = str(data_dir.resolve())
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info["cmdline"] or []
        if "serve" in argv and "--data-dir" in argv and wanted in argv:
            found.append(proc)
    return found


@pytest.mark.anyio
async def test_stdio_spawns_daemon(tmp_path: Path) -> None:
    """With no daemon running, `od-runs mcp --data-dir X` starts one and runs work there."""
    data_dir = tmp_path / "spawned_runs"
    url = f"http://127.0.0.1:{free_port()}"
    try:
        with anyio.fail_after(TEST_DEADLINE):
            async with Client(stdio_params(url, "--data-dir", str(data_dir))) as client:
                await demo_flow(client, data_dir)
            assert (data_dir / "od-runs.sqlite3").exists()
            assert (data_dir / "daemon.log").exists()
            daemons = spawned_daemons(data_dir)
            # The spawned daemon outlives `od-runs mcp`: it is detached on purpose.
            assert len(daemons) == 1
    finally:
        for proc in spawned_daemons(data_dir):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except psutil.TimeoutExpired:
                proc.kill()
    assert spawned_daemons(data_dir) == []


@pytest.mark.anyio
async def test_get_run_hint_while_running(daemon: Daemon) -> None:
    """get_run on a running run tells the user the exact `tail -F <eventsLogPath>` command."""
    with anyio.fail_after(TEST_DEADLINE):
        async with connect(daemon, "http") as client:
            started = await call(client, "start_run", {"demo": LONG_DEMO})
            run_id = started["run"]["id"]
            got = await wait_for_status(client, run_id, "running")
            path = got["run"]["eventsLogPath"]
            assert Path(path).is_file()
            assert f"tail -F {shlex.quote(path)}" in got["hint"]
            assert "wait_run" in got["hint"]
            await call(client, "cancel_run", {"runId": run_id})


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["http", "stdio"])
async def test_tool_errors(daemon: Daemon, transport: str) -> None:
    """An unknown run id is a NOT_FOUND tool error; wait_run refuses a timeout over 50 s."""
    with anyio.fail_after(TEST_DEADLINE):
        async with connect(daemon, transport) as client:
            missing = await client.call_tool("get_run", {"runId": "run-0000000000000000"})
            assert missing.is_error
            assert "NOT_FOUND" in error_text(missing)

            started = await call(client, "start_run", {"demo": SMALL_DEMO})
            with anyio.fail_after(5):
                too_long = await client.call_tool(
                    "wait_run", {"runId": started["run"]["id"], "timeoutSeconds": 51}
                )
            assert too_long.is_error
            text = error_text(too_long)
            assert "timeoutSeconds" in text
            assert "50" in text


@pytest.mark.anyio
async def test_cancel_running_run(daemon: Daemon) -> None:
    """cancel_run on a running run returns it canceled, and its log ends with a canceled end."""
    with anyio.fail_after(TEST_DEADLINE):
        async with connect(daemon, "http") as client:
            started = await call(client, "start_run", {"demo": LONG_DEMO})
            run_id = started["run"]["id"]
            await wait_for_status(client, run_id, "running")
            canceled = await call(client, "cancel_run", {"runId": run_id})
            assert canceled["run"]["status"] == "canceled"
            assert canceled["run"]["cancelRequested"] is True
            got = await call(client, "get_run", {"runId": run_id})
            assert got["run"]["status"] == "canceled"
    log = read_log(started["run"]["eventsLogPath"])
    assert_dense(log)
    assert log[-1]["data"]["status"] == "canceled"


@pytest.mark.anyio
async def test_start_run_schema_offers_approval_policy_and_post_tool_idle_timeout(
    shared: Daemon,
) -> None:
    """tools/list: start_run takes approvalPolicy (an enum, default `default`) and
    postToolIdleTimeoutMs (0 to the one-week cap), each described, as RunCreate does."""
    with anyio.fail_after(TEST_DEADLINE):
        async with connect(shared, "http") as client:
            listed = {tool.name: tool for tool in (await client.list_tools()).tools}
    props = listed["start_run"].input_schema["properties"]
    policy = props["approvalPolicy"]
    assert sorted(policy["enum"]) == ["allow", "default", "deny"]
    assert policy["default"] == "default" and "deny" in policy["description"]
    post_tool = props["postToolIdleTimeoutMs"]
    (bounds,) = [s for s in post_tool["anyOf"] if s.get("type") == "integer"]
    assert (bounds["minimum"], bounds["maximum"]) == (0, MAX_TIMEOUT_MS)
    assert "AGENT_STALLED" in post_tool["description"]


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["http", "stdio"])
async def test_start_run_passes_approval_policy_and_post_tool_idle_timeout_to_the_run(
    shared: Daemon, transport: str
) -> None:
    """start_run with approvalPolicy=deny and postToolIdleTimeoutMs=1000 is accepted. The
    status body does not echo them, so idempotency shows they reached the run's request: the
    same clientRequestId with the same values is the same run, with another value (or none)
    a conflict. Bad values are tool errors naming the argument."""
    request_id = f"req-policy-{transport}"
    args = {
        "demo": SMALL_DEMO,
        "clientRequestId": request_id,
        "approvalPolicy": "deny",
        "postToolIdleTimeoutMs": 1000,
    }
    with anyio.fail_after(TEST_DEADLINE):
        async with connect(shared, transport) as client:
            started = await call(client, "start_run", args)
            run_id = started["run"]["id"]
            got = await call(client, "get_run", {"runId": run_id})
            again = await call(client, "start_run", args)
            changed = [
                await client.call_tool("start_run", {**args, **change})
                for change in ({"approvalPolicy": "allow"}, {"postToolIdleTimeoutMs": 2000})
            ]
            omitted = [
                await client.call_tool("start_run", {k: v for k, v in args.items() if k != name})
                for name in ("approvalPolicy", "postToolIdleTimeoutMs")
            ]
            bad = [
                await client.call_tool("start_run", {"demo": SMALL_DEMO, **value})
                for value in (
                    {"approvalPolicy": "maybe"},
                    {"postToolIdleTimeoutMs": -1},
                    {"postToolIdleTimeoutMs": MAX_TIMEOUT_MS + 1},
                )
            ]
    assert got["run"]["id"] == run_id and got["run"]["agentId"] == "demo"
    assert again["run"]["id"] == run_id
    for result in changed + omitted:
        assert result.is_error and "IDEMPOTENCY_CONFLICT" in error_text(result)
    names = ["approvalPolicy", "postToolIdleTimeoutMs", "postToolIdleTimeoutMs"]
    for result, name in zip(bad, names, strict=True):
        assert result.is_error, name
        assert name in error_text(result), error_text(result)
