"""MCP beyond tools: run resources, subscriptions, progress, the delegate_run prompt, the
MCP Inspector CLI, and `od-runs mcp` stdio hygiene (nothing but JSON-RPC on stdout, exit on
EOF or when idle). Real daemon, real SDK client, real Inspector; clients connect in legacy
mode (the 2025-11-25 revision Codex, Cursor and Claude Code speak) unless a test says so."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp import Client
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.types import INVALID_PARAMS, ResourceUpdatedNotification, TextResourceContents

from od_runs.agents.demo_agent import CLOSING, OPENING
from od_runs.mcp_text import INSTRUCTIONS
from od_runs.mcp_watch import assistant_text, one_line
from od_runs.models import Event

from .conftest import TERMINAL, Daemon, call, connect, error_text, read_log
from .fakes.responses_server import FunctionCall, Hold, Message, ResponsesServer, write_codex_home

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]
INSPECTOR = ROOT / "node_modules" / ".bin" / "mcp-inspector"
CODEX = ROOT / "node_modules" / ".bin" / "codex"
# Where Codex puts the tools of the MCP server configured as `od-runs`.
CODEX_NAMESPACE = "mcp__od_runs"
OD_RUNS = Path(sys.executable).parent / "od-runs"
# Upper bound for one whole test: the slowest demo here streams for 1.5 s.
TEST_DEADLINE = 30.0
# How long `od-runs mcp` may take to exit once its stdin is closed (or it went idle).
EXIT_DEADLINE = 10.0
# The Inspector (node) starts in about a second; leave room for a busy machine.
INSPECTOR_TIMEOUT = 45.0
# Codex starts, spawns `od-runs mcp` and makes three model requests within a few seconds.
CODEX_TIMEOUT = 45.0
# Streams long enough for several coalesced notifications while it runs.
SLOW_DEMO = {"events": 60, "durationSeconds": 1.5}
SHORT_DEMO = {"events": 20, "durationSeconds": 0.6}
MANY_EVENTS_DEMO = {"events": 150, "durationSeconds": 0.3}
LONG_DEMO = {"events": 2000, "durationSeconds": 60}
TOOLS = {"start_run", "get_run", "list_runs", "cancel_run", "wait_run", "get_run_events"}
UNKNOWN_RUN = "run-0000000000000000"


async def read_text(client: Client, uri: str) -> str:
    """The text of a resource that must have exactly one text content."""
    result = await client.read_resource(uri, cache_mode="bypass")
    assert len(result.contents) == 1
    content = result.contents[0]
    assert isinstance(content, TextResourceContents)
    assert content.uri == uri
    return content.text


async def subscribe(client: Client, uri: str) -> None:
    """resources/subscribe, as 2025-revision clients send it."""
    with warnings.catch_warnings():
        # The SDK marks it deprecated because the 2026 revision replaced it; the clients in
        # use today still send it.
        warnings.simplefilter("ignore", MCPDeprecationWarning)
        await client.subscribe_resource(uri)


async def wait_done(client: Client, run_id: str) -> dict[str, Any]:
    """wait_run until the run is done; the last result."""
    while True:
        result = await call(client, "wait_run", {"runId": run_id, "timeoutSeconds": 20})
        if result["done"]:
            return result


class Updates:
    """The resources/updated notifications a client receives, each with what a read of the
    run's status showed right after it."""

    def __init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[str](1000)
        self.seen: list[tuple[str, str]] = []
        self._changed = anyio.Event()

    async def handler(self, message: Any) -> None:
        """The client's message_handler."""
        if isinstance(message, ResourceUpdatedNotification):
            self._send.send_nowait(message.params.uri)

    async def read_each(self, client: Client) -> None:
        """Read the run behind each notified URI (outside the handler: it must not block)."""
        with self._send, self._receive:
            async for uri in self._receive:
                run_id = uri.removeprefix("runs://").removesuffix("/events")
                status = json.loads(await read_text(client, f"runs://{run_id}"))["status"]
                self.seen.append((uri, status))
                self._changed.set()
                self._changed = anyio.Event()

    async def until(self, what: Callable[[], bool]) -> None:
        """Wait until what() holds."""
        while not what():
            await self._changed.wait()

    def statuses(self, uri: str) -> list[str]:
        """What the reads after each notification about uri showed, in order."""
        return [status for seen_uri, status in self.seen if seen_uri == uri]


# Resources -------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["http", "stdio"])
async def test_run_resources_are_templates_read_as_status_json_and_event_jsonl(
    shared: Daemon, transport: str
) -> None:
    """The run resources are listed with titles and MIME types; runs://{id} is the status
    body and runs://{id}/events the newest 100 events of the log, newest last."""
    with anyio.fail_after(TEST_DEADLINE):
        async with connect(shared, transport, "legacy") as client:
            listed = await client.list_resource_templates()
            templates = {t.uri_template: t for t in listed.resource_templates}
            assert set(templates) >= {"runs://{runId}", "runs://{runId}/events"}
            assert templates["runs://{runId}"].mime_type == "application/json"
            assert templates["runs://{runId}/events"].mime_type == "application/jsonl"
            assert all(t.title and t.description for t in templates.values())
            static = {str(r.uri): r for r in (await client.list_resources()).resources}
            assert static["runs://active"].mime_type == "application/json"
            assert client.server_capabilities.resources is not None
            assert client.server_capabilities.resources.subscribe is True

            started = await call(client, "start_run", {"demo": MANY_EVENTS_DEMO})
            run_id = started["run"]["id"]
            final = await wait_done(client, run_id)
            status = json.loads(await read_text(client, f"runs://{run_id}"))
            assert status == final["run"]
            assert status["status"] == "succeeded"

            lines = (await read_text(client, f"runs://{run_id}/events")).splitlines()
            log = read_log(status["eventsLogPath"])
            assert len(log) > 100
            assert [json.loads(line) for line in lines] == log[-100:]
            assert json.loads(lines[-1])["event"] == "end"


@pytest.mark.parametrize("transport", ["http", "stdio"])
async def test_reading_an_unknown_run_is_a_not_found_error(shared: Daemon, transport: str) -> None:
    """runs://<unknown id> and a malformed id are invalid-params errors that say NOT_FOUND."""
    with anyio.fail_after(TEST_DEADLINE):
        async with connect(shared, transport, "legacy") as client:
            for uri in (f"runs://{UNKNOWN_RUN}", f"runs://{UNKNOWN_RUN}/events", "runs://x"):
                with pytest.raises(MCPError) as raised:
                    await client.read_resource(uri, cache_mode="bypass")
                assert raised.value.code == INVALID_PARAMS, uri
                assert "NOT_FOUND" in raised.value.error.message, uri


async def test_active_runs_resource_lists_only_active_runs(shared: Daemon) -> None:
    """runs://active holds a running run, and no longer holds it once it is canceled."""
    with anyio.fail_after(TEST_DEADLINE):
        async with connect(shared, "http", "legacy") as client:
            run_id = (await call(client, "start_run", {"demo": LONG_DEMO}))["run"]["id"]
            active = json.loads(await read_text(client, "runs://active"))["runs"]
            assert run_id in [run["id"] for run in active]
            assert all(run["status"] in ("queued", "running") for run in active)
            await call(client, "cancel_run", {"runId": run_id})
            active = json.loads(await read_text(client, "runs://active"))["runs"]
            assert run_id not in [run["id"] for run in active]


# Subscriptions ---------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["http", "stdio"])
async def test_subscribers_hear_of_changes_until_the_run_ends(
    shared: Daemon, transport: str
) -> None:
    """Check 1: a legacy client subscribed to a run's resources gets resources/updated while
    it runs (coalesced: far fewer than its events), the last one after its end, and nothing
    once it ended. A second run that starts after the first ended and streams for longer
    than the coalescing interval marks "later": nothing about the first arrives after it."""
    updates = Updates()
    with anyio.fail_after(TEST_DEADLINE):
        async with (
            connect(shared, transport, "legacy", message_handler=updates.handler) as client,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(updates.read_each, client)
            first = (await call(client, "start_run", {"demo": SLOW_DEMO}))["run"]["id"]
            status_uri, events_uri = f"runs://{first}", f"runs://{first}/events"
            await subscribe(client, status_uri)
            await subscribe(client, events_uri)
            await subscribe(client, status_uri)  # twice is still one subscription
            await wait_done(client, first)
            await updates.until(lambda: "succeeded" in updates.statuses(status_uri))

            await subscribe(client, status_uri)  # a finished run: accepted, never fires
            second = (await call(client, "start_run", {"demo": SHORT_DEMO}))["run"]["id"]
            await subscribe(client, f"runs://{second}")
            await updates.until(lambda: "succeeded" in updates.statuses(f"runs://{second}"))
            await wait_done(client, second)
            # Whatever the server had queued about the second run has arrived: its end
            # notification is the last thing it sends about it.
            tg.cancel_scope.cancel()

    for uri in (status_uri, events_uri):
        statuses = updates.statuses(uri)
        assert "running" in statuses, f"no update about {uri} before the run ended"
        assert statuses[-1] == "succeeded"
        assert len(statuses) < SLOW_DEMO["events"] / 3, f"not coalesced: {len(statuses)}"
    uris = [uri for uri, _ in updates.seen]
    second_end = max(i for i, uri in enumerate(uris) if uri == f"runs://{second}")
    assert not {status_uri, events_uri} & set(uris[second_end:]), "update after the end"


async def test_subscribing_to_a_non_run_resource_or_unknown_run_is_refused(
    shared: Daemon,
) -> None:
    """runs://active cannot be subscribed to; an unknown run id is NOT_FOUND."""
    with anyio.fail_after(TEST_DEADLINE):
        async with connect(shared, "http", "legacy") as client:
            for uri, says in (
                ("runs://active", "not a run resource"),
                (f"runs://{UNKNOWN_RUN}", "NOT_FOUND"),
            ):
                with pytest.raises(MCPError) as raised:
                    await subscribe(client, uri)
                assert raised.value.code == INVALID_PARAMS
                assert says in raised.value.error.message


async def test_listen_streams_of_the_2026_revision_hear_of_changes_too(shared: Daemon) -> None:
    """A client on the 2026-07-28 revision (subscriptions/listen) is told of each change,
    the last one once the run has ended."""
    with anyio.fail_after(TEST_DEADLINE):
        async with connect(shared, "http", "auto") as client:
            assert client.protocol_version == "2026-07-28"
            run_id = (await call(client, "start_run", {"demo": SLOW_DEMO}))["run"]["id"]
            uri = f"runs://{run_id}"
            statuses: list[str] = []
            async with client.listen(resource_subscriptions=[uri]) as subscription:
                async for event in subscription:
                    assert getattr(event, "uri", None) == uri
                    statuses.append(json.loads(await read_text(client, uri))["status"])
                    if statuses[-1] in TERMINAL:
                        break
    assert "running" in statuses
    assert statuses[-1] == "succeeded"


# Progress --------------------------------------------------------------------------------


class Progress:
    """Progress notifications received for one request."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.messages: list[str] = []

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.values.append(progress)
        self.messages.append(message or "")

    def check(self, run: dict[str, Any]) -> None:
        """Several reports with increasing values; one-line messages saying status, event
        count and what the agent last said."""
        assert len(self.values) >= 3, self.values
        assert all(a < b for a, b in zip(self.values, self.values[1:], strict=False)), self.values
        assert self.values[-1] <= run["lastEventId"]
        for value, message in zip(self.values, self.messages, strict=True):
            assert message.startswith(("queued", "running", "succeeded")), message
            assert f"{int(value)} event" in message, message
            assert "\n" not in message and len(message) < 200, message
        said = [m.split(": ", 1)[1] for m in self.messages if ": " in m]
        assert said, f"no message says what the agent wrote: {self.messages}"
        vocabulary = set(f"{OPENING} {CLOSING}".split())
        for text in said:
            inner = text.strip("…").split()[1:-1]  # the ends may be cut mid-word
            assert set(inner) <= vocabulary, text


@pytest.mark.parametrize("transport", ["http", "stdio"])
async def test_wait_run_reports_progress_while_a_slow_run_streams(
    shared: Daemon, transport: str
) -> None:
    """Check 2: a progress callback passed to wait_run gets increasing progress values while
    a slow demo run streams."""
    progress = Progress()
    with anyio.fail_after(TEST_DEADLINE):
        async with connect(shared, transport, "legacy") as client:
            run_id = (await call(client, "start_run", {"demo": SLOW_DEMO}))["run"]["id"]
            result = await call(
                client,
                "wait_run",
                {"runId": run_id, "timeoutSeconds": 20},
                progress_callback=progress,
            )
            missing = await client.call_tool(
                "wait_run", {"runId": UNKNOWN_RUN}, progress_callback=Progress()
            )
    assert result["done"]
    progress.check(result["run"])
    assert missing.is_error
    assert "NOT_FOUND" in error_text(missing)


async def test_start_run_with_wait_seconds_reports_progress(shared: Daemon) -> None:
    """start_run with waitSeconds waits for the run, reporting progress meanwhile."""
    progress = Progress()
    with anyio.fail_after(TEST_DEADLINE):
        async with connect(shared, "stdio", "legacy") as client:
            started = await call(
                client,
                "start_run",
                {"demo": SLOW_DEMO, "waitSeconds": 20},
                progress_callback=progress,
            )
    assert started["run"]["status"] == "succeeded"
    progress.check(started["run"])


def test_progress_text_is_the_latest_assistant_text_on_one_line() -> None:
    """The progress text is the last message, or the deltas streamed since, on one line."""

    def agent(n: int, data: dict[str, Any]) -> Event:
        return Event(id=n, event="agent", data=data, ts="2026-01-01T00:00:00.000Z")

    said = [
        agent(1, {"type": "message", "role": "assistant", "text": "Plan:\n1. read\n2. fix"}),
        agent(2, {"type": "tool_call", "phase": "started", "name": "shell"}),
    ]
    assert assistant_text(said) == "Plan: 1. read 2. fix"
    streaming = [
        *said,
        agent(3, {"type": "text_delta", "delta": "Now "}),
        agent(4, {"type": "text_delta", "delta": "testing"}),
    ]
    assert assistant_text(streaming) == "Now testing"
    assert assistant_text([agent(1, {"type": "status", "text": "x"})]) is None
    long = "word " * 100
    assert one_line(long, 20) == "word word word word…"
    assert one_line(long + "end", 20, keep_end=True) == "…word word word end"


# Prompt and instructions -----------------------------------------------------------------


async def test_delegate_run_prompt_teaches_start_wait_and_tail(shared: Daemon) -> None:
    """delegate_run(task, agent, project) says: start_run, wait_run until done (not cancel),
    tail -F the log; the server instructions say how long runs take and what codes mean."""
    with anyio.fail_after(TEST_DEADLINE):
        async with connect(shared, "stdio", "legacy") as client:
            prompts = {p.name: p for p in (await client.list_prompts()).prompts}
            arguments = {a.name: a.required for a in prompts["delegate_run"].arguments or []}
            assert arguments == {"task": True, "agent": False, "project": False}
            got = await client.get_prompt(
                "delegate_run", {"task": "make the tests pass", "project": "webapp"}
            )
            instructions = client.instructions
    text = got.messages[0].content.text  # type: ignore[union-attr]
    assert "make the tests pass" in text
    assert 'projectId="webapp"' in text and 'agentId="demo"' in text
    for step in ("start_run", "wait_run", "tail -F", "Do not cancel"):
        assert step in text, step
    assert instructions == INSTRUCTIONS
    for words in ("hours", "wait_run", "NOT_FOUND", "DAEMON_RESTARTED", "AGENT_EXITED"):
        assert words in INSTRUCTIONS, words


def test_instructions_explain_every_failure_code() -> None:
    """Every errorCode a failed run can carry is explained to the model."""
    from od_runs.failures import RETRYABLE

    missing = [code for code in RETRYABLE if code not in INSTRUCTIONS]
    assert missing == []


# The MCP Inspector CLI -------------------------------------------------------------------


def inspector(daemon: Daemon, tmp_path: Path, *args: str) -> Any:
    """Run the pinned Inspector in --cli mode against `od-runs mcp`; its JSON output."""
    assert INSPECTOR.exists(), "the pinned MCP Inspector is missing: run `npm ci`"
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "MCP_CATALOG_PATH": str(tmp_path / "inspector-catalog.json"),
    }
    argv = [
        str(INSPECTOR),
        "--cli",
        "-e",
        f"OD_RUNS_URL={daemon.url}",
        "-e",
        "OD_RUNS_LOG_LEVEL=warning",
        str(OD_RUNS),
        "mcp",
        "--no-spawn",
        *args,
    ]
    done = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=INSPECTOR_TIMEOUT, check=False
    )
    assert done.returncode == 0, f"inspector {args} failed: {done.stderr}"
    return json.loads(done.stdout)


@pytest.mark.slow
def test_inspector_cli_sees_tools_templates_and_gets_a_run(shared: Daemon, tmp_path: Path) -> None:
    """Check 3: the MCP Inspector CLI against `od-runs mcp` lists every tool and the run
    templates, and tools/call get_run returns the run's status."""
    tools = inspector(shared, tmp_path, "--method", "tools/list")
    listed = {tool["name"]: tool for tool in tools["tools"]}
    assert set(listed) >= TOOLS
    assert "waitSeconds" in listed["start_run"]["inputSchema"]["properties"]
    for name in TOOLS:
        description = listed[name]["description"]
        assert description and "\n " not in description, f"{name}: {description!r}"
    assert "NOT_FOUND" in listed["wait_run"]["description"]

    templates = inspector(shared, tmp_path, "--method", "resources/templates/list")
    by_uri = {t["uriTemplate"]: t for t in templates["resourceTemplates"]}
    assert by_uri["runs://{runId}"]["mimeType"] == "application/json"
    assert by_uri["runs://{runId}/events"]["mimeType"] == "application/jsonl"

    run = shared.create({"agentId": "demo", "demo": {"events": 5, "durationSeconds": 0}})
    got = inspector(
        shared,
        tmp_path,
        "--method",
        "tools/call",
        "--tool-name",
        "get_run",
        "--tool-arg",
        f"runId={run['id']}",
    )
    assert got.get("isError") is not True
    assert got["structuredContent"]["run"]["id"] == run["id"]
    assert got["structuredContent"]["run"]["status"] in ("queued", "running", *TERMINAL)
    assert run["id"] in got["content"][0]["text"]


# The real Codex CLI as a client -------------------------------------------------------


def codex_config(daemon: Daemon) -> str:
    """The config.toml entry that makes Codex start `od-runs mcp` and trust its tools."""
    return f"""
[mcp_servers.od-runs]
command = "{OD_RUNS}"
args = ["mcp", "--no-spawn"]
env = {{ OD_RUNS_URL = "{daemon.url}", OD_RUNS_LOG_LEVEL = "warning" }}
required = true
default_tools_approval_mode = "approve"
"""


def codex_exec(
    tmp_path: Path, server: ResponsesServer, daemon: Daemon, prompt: str
) -> tuple[list[str], dict[str, str]]:
    """argv and env of `codex exec --json` on the scripted model, with od-runs as its MCP
    server (started by Codex as `od-runs mcp`, reaching daemon)."""
    home = write_codex_home(
        tmp_path / "codex-home", server, model="scripted-model", extra_toml=codex_config(daemon)
    )
    env = {**os.environ, "CODEX_HOME": str(home), **server.env()}
    return [str(CODEX), "exec", "--json", "--skip-git-repo-check", prompt], env


def offered_namespace(request: dict[str, Any], tool: str) -> str | None:
    """The namespace tool Codex offered `tool` in, if any."""
    for offered in request.get("tools") or []:
        names = [t.get("name") for t in offered.get("tools") or []]
        if offered.get("type") == "namespace" and tool in names:
            return str(offered["name"])
    return None


@pytest.mark.slow
@pytest.mark.needs_cli("codex")
def test_codex_reads_a_run_resource_after_start_run(shared: Daemon, tmp_path: Path) -> None:
    """Check 4: the real Codex CLI, as an MCP client of `od-runs mcp`, runs the scripted
    model's start_run, then its own read_mcp_resource on runs://{id}; the status JSON reaches
    the model in its next request.

    The model name is one Codex has no metadata for: Codex then offers MCP tools directly,
    in an `mcp__od_runs` namespace, instead of behind tool_search (which a scripted model
    cannot drive). The run id is only known once start_run has run, so the second model
    turn is held open until the test has read it and scripted the resource read."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    with ResponsesServer() as server:
        hold = Hold()
        start = FunctionCall(
            "start_run", {"prompt": "count to ten", "demo": SLOW_DEMO}, namespace=CODEX_NAMESPACE
        )
        server.script([start], hold, [Message("The run is under way.")])
        argv, env = codex_exec(tmp_path, server, shared, "Delegate: count to ten.")
        with subprocess.Popen(
            argv,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as codex:
            try:
                assert hold.reached.wait(CODEX_TIMEOUT), "Codex never sent start_run's output"
                started = server.function_outputs()
                assert len(started) == 1
                found = re.search(r"run-[0-9a-f]{16}", started[0])
                assert found, started[0]
                run_id = found.group(0)
                uri = f"runs://{run_id}"
                hold.after.append(
                    FunctionCall("read_mcp_resource", {"server": "od-runs", "uri": uri})
                )
                hold.released.set()
                out, err = codex.communicate(timeout=CODEX_TIMEOUT)
            except BaseException:
                hold.released.set()
                codex.kill()
                raise
    assert codex.returncode == 0, err
    assert offered_namespace(server.requests[0], "start_run") == CODEX_NAMESPACE
    assert "read_mcp_resource" in [t.get("name") for t in server.requests[0]["tools"]]
    assert len(server.requests) == 3
    shown = server.function_outputs()[-1]
    # Codex passes the resource on as JSON: {server, uri, contents: [{uri, mimeType, text}]}.
    contents = json.loads(shown)["contents"]
    assert contents[0]["uri"] == uri
    assert contents[0]["mimeType"] == "application/json"
    status = json.loads(contents[0]["text"])
    assert status["id"] == run_id
    assert status["status"] in ("queued", "running", *TERMINAL)
    assert status["eventsLogPath"].endswith(f"{run_id}/events.jsonl")
    assert '"type":"mcp_tool_call"' in out


# stdio hygiene ---------------------------------------------------------------------------


class RawStdio:
    """`od-runs mcp` driven over raw pipes: every stdout line is kept and must be JSON-RPC."""

    def __init__(self, process: Process) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self.stdin = process.stdin
        self.stdout = BufferedByteReceiveStream(process.stdout)
        self.messages: list[dict[str, Any]] = []
        self._ids = iter(range(1, 1_000_000))

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Send a notification."""
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        await self.stdin.send(json.dumps(message).encode() + b"\n")

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send a request and read messages until its response; the response."""
        request_id = next(self._ids)
        message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}
        await self.stdin.send(json.dumps(message).encode() + b"\n")
        while True:
            reply = await self.read()
            if reply.get("id") == request_id and "method" not in reply:
                return reply

    async def read(self) -> dict[str, Any]:
        """The next stdout line, which must be one JSON-RPC 2.0 message."""
        line = await self.stdout.receive_until(b"\n", 1 << 24)
        message = json.loads(line)
        assert message["jsonrpc"] == "2.0", line
        assert "id" in message or "method" in message, line
        self.messages.append(message)
        return message

    async def close_and_wait(self) -> int:
        """Close stdin, read stdout to its end (every line JSON-RPC); the exit code."""
        await self.stdin.aclose()
        with anyio.fail_after(EXIT_DEADLINE):
            rest = b""
            while True:
                try:
                    rest += await self.stdout.receive()
                except anyio.EndOfStream:
                    break
            code = await self.process.wait()
        for line in rest.splitlines():
            message = json.loads(line)
            assert message["jsonrpc"] == "2.0", line
            self.messages.append(message)
        return code

    def methods(self) -> list[str]:
        """Methods of the notifications received so far."""
        return [m["method"] for m in self.messages if "method" in m and "id" not in m]


@asynccontextmanager
async def raw_mcp(daemon: Daemon, tmp_path: Path, *args: str) -> AsyncIterator[RawStdio]:
    """`python -m od_runs mcp --no-spawn ARGS` on raw pipes, initialised (2025-11-25)."""
    env = {**os.environ, "OD_RUNS_URL": daemon.url, "OD_RUNS_LOG_LEVEL": "info"}
    with open(tmp_path / "mcp-stderr.log", "wb") as stderr:
        async with await anyio.open_process(
            [sys.executable, "-m", "od_runs", "mcp", "--no-spawn", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        ) as process:
            raw = RawStdio(process)
            init = await raw.request(
                "initialize",
                {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "raw-test", "version": "0"},
                },
            )
            assert init["result"]["protocolVersion"] == "2025-11-25"
            await raw.notify("notifications/initialized")
            yield raw


async def test_stdio_stdout_carries_only_jsonrpc_for_a_whole_session(
    shared: Daemon, tmp_path: Path
) -> None:
    """Check 5: through a whole session (lists, a run with progress, a subscription, reads,
    errors, a prompt) every line on `od-runs mcp`'s stdout is one JSON-RPC message, logs
    go to stderr, and closing stdin ends the process with status 0."""
    with anyio.fail_after(TEST_DEADLINE):
        async with raw_mcp(shared, tmp_path) as raw:
            tools = await raw.request("tools/list")
            assert {tool["name"] for tool in tools["result"]["tools"]} >= TOOLS
            for method in ("resources/templates/list", "resources/list", "prompts/list"):
                assert "result" in await raw.request(method), method
            prompt = await raw.request(
                "prompts/get", {"name": "delegate_run", "arguments": {"task": "fix it"}}
            )
            assert "wait_run" in prompt["result"]["messages"][0]["content"]["text"]

            started = await raw.request(
                "tools/call", {"name": "start_run", "arguments": {"demo": SLOW_DEMO}}
            )
            run_id = started["result"]["structuredContent"]["run"]["id"]
            subscribed = await raw.request("resources/subscribe", {"uri": f"runs://{run_id}"})
            assert subscribed["result"] == {}
            waited = await raw.request(
                "tools/call",
                {
                    "name": "wait_run",
                    "arguments": {"runId": run_id, "timeoutSeconds": 20},
                    "_meta": {"progressToken": "wait-1"},
                },
            )
            assert waited["result"]["structuredContent"]["done"] is True
            read = await raw.request("resources/read", {"uri": f"runs://{run_id}/events"})
            assert read["result"]["contents"][0]["text"].count("\n") > 10
            missing = await raw.request("resources/read", {"uri": f"runs://{UNKNOWN_RUN}"})
            assert missing["error"]["code"] == INVALID_PARAMS
            failed = await raw.request(
                "tools/call", {"name": "get_run", "arguments": {"runId": UNKNOWN_RUN}}
            )
            assert failed["result"]["isError"] is True
            code = await raw.close_and_wait()
    assert code == 0, (tmp_path / "mcp-stderr.log").read_text()
    methods = raw.methods()
    assert methods.count("notifications/progress") >= 3
    assert "notifications/resources/updated" in methods
    progress = [m for m in raw.messages if m.get("method") == "notifications/progress"]
    assert {m["params"]["progressToken"] for m in progress} == {"wait-1"}


async def test_stdio_exits_when_stdin_closes_during_a_wait(shared: Daemon, tmp_path: Path) -> None:
    """Closing stdin while a wait_run is in flight still ends `od-runs mcp` promptly."""
    with anyio.fail_after(TEST_DEADLINE):
        async with raw_mcp(shared, tmp_path) as raw:
            started = await raw.request(
                "tools/call", {"name": "start_run", "arguments": {"demo": LONG_DEMO}}
            )
            run_id = started["result"]["structuredContent"]["run"]["id"]
            message = {
                "jsonrpc": "2.0",
                "id": 99,
                "method": "tools/call",
                "params": {
                    "name": "wait_run",
                    "arguments": {"runId": run_id, "timeoutSeconds": 50},
                },
            }
            await raw.stdin.send(json.dumps(message).encode() + b"\n")
            code = await raw.close_and_wait()
        with shared.client() as http:
            assert http.post(f"/api/runs/{run_id}/cancel").status_code == 200
    assert code == 0, (tmp_path / "mcp-stderr.log").read_text()


async def test_stdio_idle_exit_waits_for_requests_in_flight(shared: Daemon, tmp_path: Path) -> None:
    """With --idle-exit, `od-runs mcp` answers a request that outlasts the idle time, then
    exits by itself once nothing has happened for that long, saying why on stderr."""
    idle = 1.0
    with anyio.fail_after(TEST_DEADLINE):
        async with raw_mcp(shared, tmp_path, "--idle-exit", str(idle)) as raw:
            started = await raw.request(
                "tools/call", {"name": "start_run", "arguments": {"demo": LONG_DEMO}}
            )
            run_id = started["result"]["structuredContent"]["run"]["id"]
            waited = await raw.request(
                "tools/call",
                {"name": "wait_run", "arguments": {"runId": run_id, "timeoutSeconds": 2 * idle}},
            )
            assert waited["result"]["structuredContent"]["done"] is False
            with anyio.fail_after(EXIT_DEADLINE):
                code = await raw.process.wait()
        with shared.client() as http:
            assert http.post(f"/api/runs/{run_id}/cancel").status_code == 200
    assert code == 0
    assert "--idle-exit" in (tmp_path / "mcp-stderr.log").read_text()
