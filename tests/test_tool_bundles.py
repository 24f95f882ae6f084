"""Tool bundles reach the agent; their secrets reach the tool server's process and nowhere else.

Check 11 of the adapters issue, for `codex` (a private config profile) and `acp` (the
mcpServers of session/new): a tiny stdio MCP server written by the test, whose env carries a
secret token and whose one tool appends sha256(token) and its argument to a file, called by
a scripted model. A bundle server marked `enabled: false` is never handed over.
"""

from __future__ import annotations

import hashlib
import logging
import stat
import sys
import tomllib
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from od_runs.agents.acp import AcpAdapter
from od_runs.agents.bundles import acp_servers, enabled_servers
from od_runs.agents.codex import BINARY_ENV, CodexAdapter
from od_runs.models import RunCreate, ToolBundle
from od_runs.runs import open_service

from .agent_runs import agent, all_events, final_answer, ps_args
from .codex_helpers import APP_SERVER, CODEX, codex_daemon, make_codex
from .conftest import RUN_DEADLINE, Daemon, read_log, wait_terminal
from .fakes.responses_server import FunctionCall, Item, Message, ResponsesServer, write_codex_home
from .fakes.scripted_server import Hold
from .test_acp import make_acp

RECORDER = '''\
"""A one-tool MCP server: `record` appends sha256(RECORDER_TOKEN) and a note to a file."""
import hashlib
import os

from mcp.server.mcpserver import MCPServer

server = MCPServer("recorder")


@server.tool()
def record(note: str) -> str:
    """Append a note to the record."""
    digest = hashlib.sha256(os.environ["RECORDER_TOKEN"].encode()).hexdigest()
    with open(os.environ["RECORDER_FILE"], "a", encoding="utf-8") as file:
        file.write(f"{digest} {note}\\n")
    return f"recorded {note}"


server.run("stdio")
'''
pytestmark = pytest.mark.anyio
# A server that leaves a mark if anyone ever starts it.
TOUCH = "import pathlib, sys; pathlib.Path(sys.argv[1]).touch()"
# With a model Codex does not know, MCP tools are offered directly in a namespace tool.
SCRIPTED_MODEL = "scripted-model"


class Bundle:
    """The recorder server (with its secret) and a disabled server, under tmp_path."""

    def __init__(self, tmp_path: Path) -> None:
        self.token = f"tok-{uuid.uuid4().hex}"
        self.script = tmp_path / "recorder.py"
        self.script.write_text(RECORDER)
        self.record = tmp_path / "record.txt"
        self.marker = tmp_path / "dormant-was-started"

    def spec(self, remote: bool = False) -> dict[str, Any]:
        """The run's toolBundle; remote adds an http server (secret header) and an sse one."""
        servers: list[dict[str, Any]] = [
            {
                "id": "recorder",
                "command": sys.executable,
                "args": [str(self.script)],
                "env": {"RECORDER_TOKEN": self.token, "RECORDER_FILE": str(self.record)},
                "label": "notes",
            },
            {
                "id": "dormant",
                "command": sys.executable,
                "args": ["-c", TOUCH, str(self.marker)],
                "enabled": False,
            },
        ]
        if remote:
            servers += [
                {
                    "id": "web",
                    "transport": "http",
                    "url": "https://mcp.test/x",
                    "headers": {"X-Key": "k1"},
                },
                {"id": "old", "transport": "sse", "url": "https://mcp.test/sse"},
            ]
        return {"mcpServers": servers}

    def recorded(self) -> list[str]:
        """The lines the tool wrote."""
        return self.record.read_text().splitlines() if self.record.exists() else []

    def line(self, note: str) -> str:
        """What the tool writes for note: the token's hash, never the token."""
        return f"{hashlib.sha256(self.token.encode()).hexdigest()} {note}"


def profiles(codex_home: Path) -> list[Path]:
    """The tool-bundle profiles od-runs left in a CODEX_HOME."""
    return sorted(codex_home.glob("od-runs-*.config.toml"))


def offered(server: ResponsesServer) -> list[str]:
    """Names of the tools the agent offered the model in its first request."""
    return [str(tool.get("name")) for tool in server.requests[0].get("tools", [])]


def database_bytes(data_dir: Path) -> bytes:
    """The SQLite database with its WAL and journal, as stored on disk."""
    return b"".join(p.read_bytes() for p in sorted(data_dir.glob("od-runs.sqlite3*")))


# How each agent takes a bundle (no agent runs) ---------------------------------------------


def test_codex_gets_the_bundle_as_a_private_profile_and_never_on_its_command_line(
    tmp_path: Path,
) -> None:
    """A 0600 profile in CODEX_HOME holds the servers; argv only names it; cleanup removes it."""
    bundle = Bundle(tmp_path)
    spec = bundle.spec(remote=True)
    home = tmp_path / "codex-home"
    adapter = CodexAdapter(
        RunCreate(
            agentId="codex",
            env={"CODEX_HOME": str(home)},
            toolBundle=ToolBundle.model_validate(spec),
        )
    )
    argv = adapter.argv()
    (profile,) = profiles(home)
    assert argv[argv.index("-p") + 1] + ".config.toml" == profile.name
    assert stat.S_IMODE(profile.stat().st_mode) == 0o600
    assert bundle.token not in " ".join(argv)
    servers = tomllib.loads(profile.read_text())["mcp_servers"]
    assert servers == {
        "recorder": {
            "command": sys.executable,
            "args": [str(bundle.script)],
            "env": {"RECORDER_TOKEN": bundle.token, "RECORDER_FILE": str(bundle.record)},
            "default_tools_approval_mode": "approve",
            "required": True,
        },
        "web": {
            "url": "https://mcp.test/x",
            "http_headers": {"X-Key": "k1"},
            "default_tools_approval_mode": "approve",
            "required": True,
        },
    }
    # Codex cannot take an SSE server: the run says so instead of dropping it silently.
    warnings = [d["text"] for _, d in adapter.translate("stdout", [("", False)])]
    assert warnings == [
        "Tool server 'old' was not handed over: Codex does not speak the SSE transport."
    ]
    adapter.cleanup()
    assert profiles(home) == []


def test_a_codex_run_without_enabled_tool_servers_writes_no_profile(tmp_path: Path) -> None:
    """Nothing enabled, nothing written: the command line stays the plain one."""
    spec = {"mcpServers": [{"id": "off", "command": "true", "enabled": False}]}
    home = tmp_path / "codex-home"
    adapter = CodexAdapter(
        RunCreate(
            agentId="codex",
            env={"CODEX_HOME": str(home)},
            toolBundle=ToolBundle.model_validate(spec),
        )
    )
    assert "-p" not in adapter.argv()
    assert not home.exists()


def test_acp_gets_the_enabled_servers_in_session_new_as_the_agent_supports_them(
    tmp_path: Path,
) -> None:
    """stdio always; http and sse only if the agent's capabilities say so."""
    bundle = Bundle(tmp_path)
    spec = bundle.spec(remote=True)
    servers, skipped = acp_servers(
        enabled_servers(ToolBundle.model_validate(spec)), http=True, sse=False
    )
    wire = [s.model_dump(by_alias=True, exclude_none=True) for s in servers]
    assert wire == [
        {
            "name": "recorder",
            "command": sys.executable,
            "args": [str(bundle.script)],
            "env": [
                {"name": "RECORDER_TOKEN", "value": bundle.token},
                {"name": "RECORDER_FILE", "value": str(bundle.record)},
            ],
        },
        {
            "type": "http",
            "name": "web",
            "url": "https://mcp.test/x",
            "headers": [{"name": "X-Key", "value": "k1"}],
        },
    ]
    assert skipped == [("old", "the agent does not support sse servers")]
    # The agent's argv never carries the bundle either.
    assert bundle.token not in " ".join(
        AcpAdapter(RunCreate(agentId="acp", toolBundle=ToolBundle.model_validate(spec))).argv()
    )


# Check 11, end to end ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.needs_cli("codex")
def test_a_codex_run_calls_a_bundle_tool_and_the_token_stays_with_the_tool_server(
    tmp_path: Path, data_dir: Path
) -> None:
    """Check 11 (invariant 8): the tool ran with its token (the file shows the hash), the run
    shows the call, and the token is in no event, log line, status body, SQLite row or `ps`
    listing; the disabled server was never started and its tools never offered."""
    bundle = Bundle(tmp_path)
    hold: Hold[Item] = Hold(after=[Message("Recorded it.")])
    with ResponsesServer() as server:
        server.script(
            [FunctionCall("record", {"note": "from-codex"}, namespace="mcp__recorder")], hold
        )
        codex = make_codex(tmp_path, server)
        write_codex_home(codex.home, server, model=SCRIPTED_MODEL)
        daemon = Daemon(data_dir)
        daemon.env.update({BINARY_ENV: str(CODEX), "OD_RUNS_LOG_LEVEL": "debug"})
        daemon.start()
        try:
            run = daemon.create(
                {
                    "agentId": "codex",
                    "prompt": "Record a note.",
                    "cwd": str(codex.workdir),
                    "env": codex.env(),
                    "toolBundle": bundle.spec(),
                }
            )
            hold.wait_reached()
            # The tool has run and the model is thinking: the run is active right now.
            listing = ps_args()
            # Codex read the profile when it started: it is gone already.
            left_while_active = profiles(codex.home)
            with daemon.client() as http:
                active = http.get(f"/api/runs/{run['id']}").text
            hold.release()
            body = wait_terminal(daemon, run["id"])
            with daemon.client() as http:
                page = http.get(f"/api/runs/{run['id']}/events", params={"format": "json"})
                sse = http.get(f"/api/runs/{run['id']}/events").text
                listed = http.get("/api/runs").text
        finally:
            daemon.stop()
    assert body["status"] == "succeeded", body
    assert bundle.recorded() == [bundle.line("from-codex")]
    events = page.json()["items"]
    calls = [e["data"] for e in events if e["data"].get("type") == "tool_call"]
    assert [(c["phase"], c["name"]) for c in calls] == [
        ("started", "recorder.record"),
        ("completed", "recorder.record"),
    ]
    assert calls[0]["summary"] == 'recorder.record(note="from-codex")'
    assert "recorded from-codex" in calls[1]["output"]
    assert body["toolBundle"] == {
        "mcpServers": [
            {"id": "recorder", "transport": "stdio", "enabled": True, "label": "notes"},
            {"id": "dormant", "transport": "stdio", "enabled": False, "label": None},
        ]
    }
    # The disabled server was not handed over: never started, its tools never offered.
    assert not bundle.marker.exists()
    assert "mcp__recorder" in offered(server) and "mcp__dormant" not in offered(server)
    assert left_while_active == [] and profiles(codex.home) == []
    surfaces = {
        "events.jsonl": Path(body["eventsLogPath"]).read_text(),
        "events page": page.text,
        "SSE": sse,
        "status body (active)": active,
        "status body": str(body),
        "run list": listed,
        "daemon log": daemon.log_path.read_text(),
        "ps listing": listing,
    }
    assert [name for name, text in surfaces.items() if bundle.token in text] == []
    assert bundle.token.encode() not in database_bytes(data_dir)


@pytest.mark.slow
@pytest.mark.needs_cli("codex")
def test_a_codex_app_server_session_gets_the_bundle_with_its_thread_and_a_new_one_respawns(
    tmp_path: Path, data_dir: Path
) -> None:
    """Check 11 for `codex-app-server`: the bundle's servers go to Codex in thread/start
    (over the pipe), the model calls the tool, and the token is in no event, status, log,
    SQLite row, `ps` listing or file under CODEX_HOME. The conversation's next run without
    the bundle gets a fresh process on the same thread, and the tool is no longer offered."""
    bundle = Bundle(tmp_path)
    with ResponsesServer() as server:
        server.script(
            [FunctionCall("record", {"note": "from-app-server"}, namespace="mcp__recorder")],
            [Message("Recorded it.")],
            [Message("No tools now.")],
        )
        codex = make_codex(tmp_path, server, APP_SERVER)
        write_codex_home(codex.home, server, model=SCRIPTED_MODEL)
        daemon = codex_daemon(data_dir)
        daemon.start()
        try:
            body = codex.request("Record a note.").model_dump(mode="json", exclude_unset=True)
            body["toolBundle"] = bundle.spec()
            first = wait_terminal(daemon, daemon.create(body)["id"])
            listing = ps_args()
            plain = codex.request("Anything else?").model_dump(mode="json", exclude_unset=True)
            second = wait_terminal(daemon, daemon.create(plain)["id"])
            with daemon.client() as http:
                page = http.get(f"/api/runs/{first['id']}/events", params={"format": "json"})
                sessions = http.get("/api/sessions").text
        finally:
            daemon.stop()
    assert (first["status"], second["status"]) == ("succeeded", "succeeded"), (first, second)
    assert bundle.recorded() == [bundle.line("from-app-server")]
    calls = [e["data"] for e in page.json()["items"] if e["data"].get("type") == "tool_call"]
    assert [(c["phase"], c["name"]) for c in calls] == [
        ("started", "recorder.record"),
        ("completed", "recorder.record"),
    ]
    assert not bundle.marker.exists()
    tools = [[str(t.get("name")) for t in r.get("tools", [])] for r in server.requests]
    assert "mcp__recorder" in tools[0] and "mcp__dormant" not in tools[0]
    assert "mcp__recorder" not in tools[-1]
    # Another bundle, another process; the same thread.
    assert first["childPid"] != second["childPid"]
    assert first["sessionRef"] == second["sessionRef"]
    home_files = "".join(
        p.read_text(errors="replace") for p in codex.home.rglob("*") if p.is_file()
    )
    surfaces = {
        "events page": page.text,
        "events.jsonl": Path(first["eventsLogPath"]).read_text(),
        "status body": str(first),
        "sessions": sessions,
        "daemon log": daemon.log_path.read_text(),
        "ps listing": listing,
        "CODEX_HOME": home_files,
    }
    assert [name for name, text in surfaces.items() if bundle.token in text] == []
    assert bundle.token.encode() not in database_bytes(data_dir)


@pytest.mark.slow
@pytest.mark.needs_cli("codex-acp")
async def test_an_acp_run_gets_the_bundle_in_session_new_and_the_token_stays_with_the_tool(
    tmp_path: Path, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Check 11 for `acp`: codex-acp starts the bundle server from session/new, the scripted
    model calls its tool, and the token is in no event, log line, SQLite row or `ps` listing."""
    caplog.set_level(logging.DEBUG)
    bundle = Bundle(tmp_path)
    hold: Hold[Item] = Hold(after=[Message("Recorded it.")])
    with ResponsesServer() as server:
        server.script(
            [FunctionCall("record", {"note": "from-acp"}, namespace="mcp__recorder")], hold
        )
        acp = make_acp(tmp_path, server, model=SCRIPTED_MODEL)
        async with open_service(data_dir) as service:
            started = await service.start(acp.request("Record a note.", toolBundle=bundle.spec()))
            await anyio.to_thread.run_sync(hold.wait_reached)
            listing = ps_args()
            active = (await service.get(started.id)).model_dump_json()
            hold.release()
            with anyio.fail_after(RUN_DEADLINE):
                body = await service.wait(started.id)
            events = await all_events(service, started.id)
    assert body.status == "succeeded", body
    assert bundle.recorded() == [bundle.line("from-acp")]
    calls = agent(events, "tool_call")
    assert [(c["phase"], c["name"], c["summary"]) for c in calls] == [
        ("started", "recorder.record", 'recorder.record(note="from-acp")'),
        ("completed", "recorder.record", 'recorder.record(note="from-acp")'),
    ]
    assert "recorded from-acp" in calls[1]["output"]
    assert final_answer(events) == "Recorded it."
    assert not bundle.marker.exists()
    assert "mcp__recorder" in offered(server) and "mcp__dormant" not in offered(server)
    surfaces = {
        "events.jsonl": "\n".join(str(e) for e in read_log(body.eventsLogPath or "")),
        "events": str([e.model_dump() for e in events]),
        "status body (active)": active,
        "status body": body.model_dump_json(),
        "ps listing": listing,
        "log records": caplog.text,
    }
    assert [name for name, text in surfaces.items() if bundle.token in text] == []
    assert bundle.token.encode() not in database_bytes(data_dir)


@pytest.mark.needs_cli("codex")
async def test_a_bundle_server_codex_cannot_start_fails_the_run_by_name(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller asked for the tools: a server that cannot start fails the run, naming it,
    before the model is ever called (instead of an agent quietly working without them)."""
    monkeypatch.setenv(BINARY_ENV, str(CODEX))
    spec = {"mcpServers": [{"id": "broken", "command": str(tmp_path / "no-such-server")}]}
    with ResponsesServer() as server:
        server.script([Message("never sent")])
        codex = make_codex(tmp_path, server)
        async with open_service(data_dir) as service:
            with anyio.fail_after(RUN_DEADLINE):
                started = await service.start(codex.request(toolBundle=spec))
                body = await service.wait(started.id)
    assert (body.status, body.errorCode, body.retryable) == ("failed", "TOOL_SERVER_FAILED", False)
    assert body.error is not None and "'broken'" in body.error
    assert server.requests == [] and profiles(codex.home) == []
