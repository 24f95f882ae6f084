"""The `claude` agent against the real Claude Code CLI (pinned in package.json), scripted model.

Every test runs the real `claude -p --output-format stream-json` as a child of a real
RunService (or daemon), pointed with ANTHROPIC_BASE_URL at tests/fakes/anthropic_server.py on
127.0.0.1, with a scratch HOME (Claude Code keeps its sessions there) and the variables that
keep it offline. No recorded transcripts: the CLI really runs, end to end.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

from od_runs.agents.claude import BINARY_ENV, ClaudeAdapter
from od_runs.models import Event, RunCreate, SessionRef, ToolBundle
from od_runs.redact import REDACTED
from od_runs.runs import open_service

from .agent_runs import agent, error_of, final_answer, index_of, ps_args, run_to_end
from .conftest import (
    RUN_DEADLINE,
    Daemon,
    assert_dense,
    free_port,
    process_alive,
    read_log,
    wait_terminal,
)
from .fakes.anthropic_server import (
    DUMMY_API_KEY,
    AnthropicServer,
    Block,
    Text,
    Thinking,
    ToolUse,
)
from .fakes.scripted_server import Fail, Hold

CLAUDE = Path(__file__).resolve().parents[1] / "node_modules" / ".bin" / "claude"
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.needs_cli("claude"),
]
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass
class Claude:
    """A scripted model, a scratch HOME for Claude Code's sessions, and a workspace."""

    server: AnthropicServer
    home: Path
    workdir: Path

    def env(self, api_key: str = DUMMY_API_KEY) -> dict[str, str]:
        """What a Claude Code child needs: the scripted server, a key, a HOME of its own."""
        # A HOME of its own: sessions live there, and this machine's profile must stay out.
        return {"HOME": str(self.home), **self.server.env(api_key)}

    def request(self, prompt: str = "Say hello.", **fields: Any) -> RunCreate:
        """A claude run request that reaches the scripted model and nothing else."""
        return RunCreate(
            agentId="claude", prompt=prompt, cwd=str(self.workdir), env=self.env(), **fields
        )


def make_claude(tmp_path: Path, server: AnthropicServer) -> Claude:
    """A workspace and a scratch HOME under tmp_path."""
    for name in ("work", "home"):
        (tmp_path / name).mkdir()
    return Claude(server, tmp_path / "home", tmp_path / "work")


@pytest.fixture
def claude(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Claude]:
    monkeypatch.setenv(BINARY_ENV, str(CLAUDE))
    with AnthropicServer() as server:
        yield make_claude(tmp_path, server)


# What a run shows ---------------------------------------------------------------------------


async def test_a_claude_run_succeeds_with_the_result_as_the_final_answer(
    claude: Claude, data_dir: Path
) -> None:
    """Happy path: succeeded, final answer is the result, session id on the status body."""
    claude.server.script([Text("Hello from the scripted model.")])
    async with open_service(data_dir) as service:
        body, events = await run_to_end(service, claude.request("Greet me."))
    assert (body.status, body.exitCode, body.errorCode) == ("succeeded", 0, None)
    assert final_answer(events) == "Hello from the scripted model."
    (session,) = agent(events, "session")
    assert UUID.match(session["threadId"]) and session["resumed"] is False
    assert body.sessionRef == SessionRef(threadId=session["threadId"])
    (usage,) = agent(events, "usage")
    # Cache reads count as input, as for the other agents (the server reports 120 + 20).
    assert (usage["inputTokens"], usage["cachedInputTokens"], usage["outputTokens"]) == (
        140,
        20,
        30,
    )
    assert usage["costUsd"] > 0 and usage["turns"] == 1
    # The prompt went through stdin to the model, with the dummy key and nowhere else.
    assert "Greet me." in claude.server.texts()
    assert {path for _, path in claude.server.paths} == {"/v1/messages"}
    assert claude.server.escapes == []  # offline: nothing tried to leave the machine
    log = read_log(body.eventsLogPath or "")
    assert_dense(log)
    assert [e["event"] for e in log] == [e.event for e in events]
    # Human-readable events only: no raw stream-json message passed through.
    assert not [e for e in events if e.event in ("stdout", "stderr")]


async def test_a_bash_tool_call_shows_start_and_completion_with_command_and_output(
    claude: Claude, data_dir: Path
) -> None:
    """tool_call started/completed with the command and its output, before the final answer."""
    claude.server.script(
        [Text("Let me run it."), ToolUse("Bash", {"command": "echo tool-says-hi"})],
        [Text("The command printed tool-says-hi.")],
    )
    async with open_service(data_dir) as service:
        body, events = await run_to_end(service, claude.request("Run echo."))
    assert body.status == "succeeded"
    calls = agent(events, "tool_call")
    assert [(c["phase"], c["name"], c["summary"]) for c in calls] == [
        ("started", "Bash", "echo tool-says-hi"),
        ("completed", "Bash", "echo tool-says-hi"),
    ]
    assert calls[0]["callId"] == calls[1]["callId"]
    assert calls[0]["input"] == {"command": "echo tool-says-hi"}
    assert calls[1]["status"] == "completed" and calls[1]["output"] == "tool-says-hi"
    assert "tool_use_result" not in str(calls) and "tool_result" not in str(calls)
    started = index_of(events, lambda e: e.data.get("phase") == "started")
    completed = index_of(events, lambda e: e.data.get("phase") == "completed")
    final = index_of(events, lambda e: e.event == "agent" and e.data.get("final"))
    assert started < completed < final
    assert final_answer(events) == "The command printed tool-says-hi."
    assert claude.server.tool_results() == ["tool-says-hi"]


def writes(claude: Claude, outside: Path) -> list[list[Block]]:
    """Scripted turns: a Write inside cwd, a Write outside it, a command, then an answer."""
    return [
        [ToolUse("Write", {"file_path": str(claude.workdir / "notes.md"), "content": "hi\n"})],
        [ToolUse("Write", {"file_path": str(outside), "content": "out\n"})],
        [ToolUse("Bash", {"command": "python3 -c 'print(6 * 7)'"})],
        [Text("Done.")],
    ]


def completed_calls(events: list[Event]) -> list[tuple[str, str]]:
    """(summary, status) of every completed tool call."""
    return [
        (c["summary"], c["status"]) for c in agent(events, "tool_call") if c["phase"] != "started"
    ]


async def test_the_default_policy_allows_edits_inside_cwd_and_commands_but_no_edit_outside(
    claude: Claude, data_dir: Path, tmp_path: Path
) -> None:
    """approvalPolicy default: a Write in cwd and a command run unattended; a Write outside
    cwd is refused, shown as a warning and a `denied` tool call, and the run goes on."""
    outside = tmp_path / "outside.txt"
    claude.server.script(*writes(claude, outside))
    async with open_service(data_dir) as service:
        body, events = await run_to_end(service, claude.request("Write notes."))
    assert body.status == "succeeded"
    assert (claude.workdir / "notes.md").read_text() == "hi\n"
    assert not outside.exists()
    assert completed_calls(events) == [
        ("write notes.md", "completed"),
        (f"write {outside}", "denied"),
        ("python3 -c 'print(6 * 7)'", "completed"),
    ]
    write, denied, command = [c for c in agent(events, "tool_call") if c["phase"] != "started"]
    assert agent(events, "file_change") == [
        {
            "type": "file_change",
            "callId": write["callId"],
            "changes": [{"path": "notes.md", "kind": "add"}],
        }
    ]
    assert "permission" in denied["error"] and command["output"] == "42"
    (warning,) = agent(events, "warning")
    assert warning["callId"] == denied["callId"]
    assert warning["text"].startswith("Permission denied")


@pytest.mark.parametrize(
    ("policy", "expected", "inside", "outside_written"),
    [
        ("allow", ["completed", "completed", "completed"], True, True),
        ("deny", ["denied", "denied", "denied"], False, False),
    ],
)
async def test_approval_policy_allow_and_deny(
    claude: Claude,
    data_dir: Path,
    tmp_path: Path,
    policy: str,
    expected: list[str],
    inside: bool,
    outside_written: bool,
) -> None:
    """allow: edits outside cwd go ahead too; deny: anything Claude Code would ask about is
    refused, edits inside cwd and commands included."""
    outside = tmp_path / "outside.txt"
    claude.server.script(*writes(claude, outside))
    async with open_service(data_dir) as service:
        body, events = await run_to_end(service, claude.request(approvalPolicy=policy))
    assert body.status == "succeeded"
    assert [status for _, status in completed_calls(events)] == expected
    assert (claude.workdir / "notes.md").exists() is inside
    assert outside.exists() is outside_written


async def test_the_final_answer_is_the_last_assistant_message_only(
    claude: Claude, data_dir: Path
) -> None:
    """Two assistant messages: both are events, the final answer is the result (the last)."""
    claude.server.script(
        [
            Thinking("private chain of thought"),
            Text("Looking around the workspace first."),
            Text("Final answer only."),
        ]
    )
    async with open_service(data_dir) as service:
        body, events = await run_to_end(service, claude.request())
    assert body.status == "succeeded"
    assert [d["text"] for d in agent(events, "message") if not d.get("final")] == [
        "Looking around the workspace first.",
        "Final answer only.",
    ]
    assert final_answer(events) == "Final answer only."
    # Thinking is not stored; one summary counts what was left out.
    (summary,) = agent(events, "suppressed")
    assert {"kind": "thinking", "count": 1} in summary["kinds"]
    assert "private" not in str([e.data for e in events])


# Provider failures -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "retryable", "hint"),
    [
        (401, "PROVIDER_AUTH_FAILED", False, "/login"),
        (429, "PROVIDER_RATE_LIMITED", True, "rate limiting"),
        (503, "PROVIDER_UNAVAILABLE", True, "Retry later"),
        (529, "PROVIDER_UNAVAILABLE", True, "Retry later"),
    ],
)
async def test_provider_errors_become_failure_kinds(
    claude: Claude, data_dir: Path, status: int, code: str, retryable: bool, hint: str
) -> None:
    """401, 429, 503 and 529 (overloaded) on every try each fail with their kind."""
    claude.server.script(Fail(status, times=None))
    async with open_service(data_dir) as service:
        body, events = await run_to_end(service, claude.request())
    assert (body.status, body.errorCode, body.retryable) == ("failed", code, retryable)
    assert body.error is not None and hint in body.error and f"HTTP {status}" in body.error
    assert "\n" not in body.error
    (error,) = [e.data for e in events if e.event == "error"]
    assert error["error"]["code"] == code
    assert events[-1].data["errorCode"] == code
    assert final_answer(events) is None
    # Claude Code retried first (CLAUDE_CODE_MAX_RETRIES=1): the progress shows it.
    (retry,) = [d for d in agent(events, "status") if "retry" in d]
    assert retry["retry"] == {"attempt": 1, "max": 1}
    assert retry["text"] == f"Retrying after HTTP {status} (attempt 1/1)"
    assert len(claude.server.requests) == 2


async def test_an_unreachable_provider_is_unavailable(claude: Claude, data_dir: Path) -> None:
    """Connection refused (nothing listens at ANTHROPIC_BASE_URL): PROVIDER_UNAVAILABLE."""
    request = claude.request()
    request.env["ANTHROPIC_BASE_URL"] = f"http://127.0.0.1:{free_port()}"
    async with open_service(data_dir) as service:
        body, _ = await run_to_end(service, request)
    assert (body.status, body.errorCode, body.retryable) == ("failed", "PROVIDER_UNAVAILABLE", True)


async def test_a_missing_api_key_says_how_to_log_in(claude: Claude, data_dir: Path) -> None:
    """No credentials at all: PROVIDER_AUTH_FAILED, and the model is never called."""
    request = claude.request()
    del request.env["ANTHROPIC_API_KEY"]
    async with open_service(data_dir) as service:
        body, _ = await run_to_end(service, request)
    assert (body.status, body.errorCode) == ("failed", "PROVIDER_AUTH_FAILED")
    assert body.error is not None and "/login" in body.error
    assert claude.server.requests == []


# Conversations -----------------------------------------------------------------------------


async def test_the_next_run_of_a_conversation_resumes_the_same_session(
    claude: Claude, data_dir: Path
) -> None:
    """The second run of a conversation continues the first one's Claude Code session."""
    claude.server.script([Text("First answer.")], [Text("Second answer.")])
    async with open_service(data_dir) as service:
        first, _ = await run_to_end(service, claude.request("First prompt.", conversationId="c-1"))
        second, events = await run_to_end(
            service, claude.request("Second prompt.", conversationId="c-1")
        )
    assert (first.status, second.status) == ("succeeded", "succeeded")
    assert first.sessionRef is not None and first.sessionRef.threadId
    assert second.sessionRef == first.sessionRef
    assert agent(events, "session")[0]["resumed"] is True
    assert final_answer(events) == "Second answer."
    # The model saw the earlier exchange: it really is the same session.
    seen = claude.server.texts()
    assert {"First prompt.", "First answer.", "Second prompt."} <= set(seen)


async def test_resuming_a_session_that_does_not_exist_fails_and_starts_no_new_one(
    claude: Claude, data_dir: Path
) -> None:
    """A stale session id fails SESSION_RESUME_FAILED; the model is not called."""
    stale = str(uuid.uuid4())
    async with open_service(data_dir) as service:
        body, events = await run_to_end(
            service, claude.request(sessionRef=SessionRef(threadId=stale))
        )
    assert (body.status, body.errorCode, body.retryable) == (
        "failed",
        "SESSION_RESUME_FAILED",
        False,
    )
    assert body.sessionRef == SessionRef(threadId=stale)
    assert body.error is not None and stale in body.error
    assert claude.server.requests == []
    assert agent(events, "session") == []


def test_a_session_ref_that_is_not_a_claude_session_id_is_a_bad_request() -> None:
    """sessionRef.threadId must be a UUID: Claude Code would otherwise search session titles."""
    with pytest.raises(Exception, match="UUID"):
        ClaudeAdapter(RunCreate(agentId="claude", sessionRef=SessionRef(threadId="my-title")))


# Process handling --------------------------------------------------------------------------


async def test_a_missing_claude_binary_fails_with_agent_not_found(
    claude: Claude, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No such program: AGENT_NOT_FOUND with a hint on how to install it."""
    monkeypatch.setenv(BINARY_ENV, str(tmp_path / "no-such-dir" / "claude"))
    async with open_service(data_dir) as service:
        body, _ = await run_to_end(service, claude.request())
    assert (body.status, body.errorCode, body.retryable) == ("failed", "AGENT_NOT_FOUND", False)
    assert body.error is not None and "OD_RUNS_CLAUDE_BIN" in body.error


async def test_cancel_while_the_model_holds_the_response_leaves_no_claude_process(
    claude: Claude, data_dir: Path
) -> None:
    """Canceled within the grace period, and no process of the run is left."""
    hold: Hold[Block] = Hold(after=[Text("too late")])
    claude.server.script(hold)
    async with open_service(data_dir, grace=5.0) as service:
        started = await service.start(claude.request())
        await anyio.to_thread.run_sync(hold.wait_reached)
        running = await service.get(started.id)
        assert running.status == "running" and running.childPid is not None
        leader = psutil.Process(running.childPid)
        tree = [leader.pid, *(p.pid for p in leader.children(recursive=True))]
        body = await service.cancel(started.id)
    hold.release()
    assert body.status == "canceled" and body.errorCode is None
    assert not [pid for pid in tree if process_alive(pid)]


# Tool bundles ------------------------------------------------------------------------------

LEDGER_SERVER = """\
import hashlib, os
from mcp.server.mcpserver import MCPServer

server = MCPServer("ledger")


@server.tool()
def record(note: str) -> str:
    \"\"\"Append a note to the ledger.\"\"\"
    token = os.environ["LEDGER_TOKEN"]
    with open(os.environ["LEDGER_FILE"], "a") as ledger:
        ledger.write(hashlib.sha256(token.encode()).hexdigest() + " " + note + "\\n")
    return "recorded " + note


server.run()
"""


async def test_a_tool_bundle_reaches_claude_through_a_private_mcp_config(
    claude: Claude, data_dir: Path, tmp_path: Path
) -> None:
    """The bundle's stdio server gets its secret, its tool runs unattended, and the secret is
    in no event, log line, status body or `ps` listing; a disabled server is not handed over."""
    token = f"ledger-token-{uuid.uuid4().hex}"
    script = tmp_path / "ledger_server.py"
    script.write_text(LEDGER_SERVER)
    ledger = tmp_path / "ledger.txt"
    hold: Hold[Block] = Hold(after=[Text("Recorded it.")])
    claude.server.script([ToolUse("mcp__ledger__record", {"note": "first"})], hold)
    bundle = {
        "mcpServers": [
            {
                "id": "ledger",
                "command": sys.executable,
                "args": [str(script)],
                "env": {"LEDGER_TOKEN": token, "LEDGER_FILE": str(ledger)},
            },
            {"id": "off", "command": "/bin/false", "enabled": False},
        ]
    }
    async with open_service(data_dir) as service:
        started = await service.start(claude.request(toolBundle=bundle))
        await anyio.to_thread.run_sync(hold.wait_reached)
        running = await service.get(started.id)
        argv = psutil.Process(running.childPid or 0).cmdline()
        listing = await anyio.to_thread.run_sync(ps_args)
        hold.release()
        with anyio.fail_after(RUN_DEADLINE):
            body = await service.wait(started.id)
        events, _ = await service.events(started.id, 0, 1000)
    assert body.status == "succeeded", body.error
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert ledger.read_text() == f"{digest} first\n"
    (done,) = [c for c in agent(events, "tool_call") if c["phase"] == "completed"]
    assert (done["name"], done["summary"], done["status"]) == (
        "ledger.record",
        'ledger.record(note="first")',
        "completed",
    )
    assert "recorded first" in done["output"]
    # The config went by file, 0600 in a private dir, and is gone once Claude Code read it.
    config = Path(argv[argv.index("--mcp-config") + 1])
    assert not config.exists() and not config.parent.exists()
    allowed = argv[argv.index("--allowedTools") + 1].split(",")
    assert [tool for tool in allowed if tool.startswith("mcp__")] == ["mcp__ledger"]
    surfaces = {
        "ps": listing,
        "events": json.dumps([e.model_dump() for e in events]),
        "events.jsonl": Path(body.eventsLogPath or "").read_text(),
        "status body": body.model_dump_json(),
    }
    assert [name for name, text in surfaces.items() if token in text] == []


def test_the_mcp_config_skips_disabled_servers_and_is_private(tmp_path: Path) -> None:
    """The file written for --mcp-config: 0600, in a 0700 dir, enabled and complete servers
    only; cleanup removes it."""
    request = RunCreate(
        agentId="claude",
        toolBundle=ToolBundle.model_validate(
            {
                "mcpServers": [
                    {
                        "id": "web",
                        "transport": "http",
                        "url": "https://x.test/mcp",
                        "headers": {"Authorization": "Bearer s3cret-value"},
                    },
                    {"id": "off", "command": "/bin/false", "enabled": False},
                    {"id": "nowhere", "transport": "sse"},
                ]
            }
        ),
    )
    adapter = ClaudeAdapter(request)
    argv = adapter.argv()
    config = Path(argv[argv.index("--mcp-config") + 1])
    try:
        assert config.stat().st_mode & 0o777 == 0o600
        assert config.parent.stat().st_mode & 0o777 == 0o700
        assert json.loads(config.read_text()) == {
            "mcpServers": {
                "web": {
                    "type": "http",
                    "url": "https://x.test/mcp",
                    "headers": {"Authorization": "Bearer s3cret-value"},
                }
            }
        }
        allowed = argv[argv.index("--allowedTools") + 1].split(",")
        assert [tool for tool in allowed if tool.startswith("mcp__")] == ["mcp__web"]
        assert "s3cret-value" not in " ".join(argv)
        # The server that could not be handed over is named in the run's first events.
        (warning,) = [data for _, data in adapter.translate("stdout", [("", False)])]
        assert warning["type"] == "warning" and "'nowhere'" in warning["text"]
    finally:
        adapter.cleanup()
    assert not config.parent.exists()


# Secrets -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_no_provider_secret_reaches_an_event_a_log_line_or_a_status_body(
    tmp_path: Path, data_dir: Path
) -> None:
    """Invariant 8: the API key, even when the model echoes it, is redacted everywhere."""
    secret = f"sk-ant-scripted-{uuid.uuid4().hex}"
    with AnthropicServer() as server:
        server.script(
            [ToolUse("Bash", {"command": f"echo the key is {secret}"})],
            [Text(f"I found the key: {secret}")],
        )
        claude = make_claude(tmp_path, server)
        daemon = Daemon(data_dir)
        daemon.env.update({BINARY_ENV: str(CLAUDE), "ANTHROPIC_API_KEY": secret})
        daemon.start()
        try:
            run = daemon.create(
                {
                    "agentId": "claude",
                    "prompt": "Find the key.",
                    "cwd": str(claude.workdir),
                    "env": claude.env(api_key=secret),
                }
            )
            body = wait_terminal(daemon, run["id"])
            with daemon.client() as http:
                page = http.get(f"/api/runs/{run['id']}/events", params={"format": "json"})
                listing = http.get("/api/runs").text
                sse = http.get(f"/api/runs/{run['id']}/events").text
        finally:
            daemon.stop()
    # The model really was called with the key, so there was something to leak.
    assert server.credentials and set(server.credentials) == {secret}
    assert body["status"] == "succeeded", body
    log_text = Path(body["eventsLogPath"]).read_text()
    assert REDACTED in log_text
    surfaces = {
        "events.jsonl": log_text,
        "events page": page.text,
        "SSE": sse,
        "status body": str(body),
        "run list": listing,
        "daemon log": daemon.log_path.read_text(),
    }
    assert [name for name, text in surfaces.items() if secret in text] == []
    assert page.status_code == 200


# Mapping details (no CLI) ------------------------------------------------------------------


def test_lines_that_are_not_stream_json_or_of_unknown_type_are_warnings_not_failures() -> None:
    """A non-JSON line and an unknown message type each give one warning; the stream goes on."""
    adapter = ClaudeAdapter(RunCreate(agentId="claude"))
    lines = [
        ("Some banner text", False),
        (json.dumps({"type": "brand_new", "x": 1}), False),
        (json.dumps({"type": "brand_new", "x": 2}), False),
        (json.dumps({"type": "rate_limit_event"}), False),
        (json.dumps({"type": "system", "subtype": "init", "session_id": str(uuid.uuid4())}), False),
        (json.dumps({"type": "result", "is_error": False, "result": "ok"})[:20], True),
        (json.dumps({"type": "result", "is_error": False, "result": "ok"})[20:], False),
    ]
    events = adapter.translate("stdout", lines)
    kinds = [data["type"] for _, data in events]
    assert kinds == ["warning", "warning", "session", "message"]
    assert events[-1][1] == {"type": "message", "role": "assistant", "final": True, "text": "ok"}
    assert error_of(adapter.outcome(0)) is None
    (summary,) = [data for _, data in adapter.finish_events()]
    assert summary["kinds"] == [
        {"kind": "rate_limit_event", "count": 1},
        {"kind": "unknown", "count": 1},
    ]


def test_an_exit_without_a_result_is_a_protocol_error() -> None:
    """Claude Code ended cleanly but never sent its result: AGENT_PROTOCOL_ERROR."""
    adapter = ClaudeAdapter(RunCreate(agentId="claude"))
    adapter.translate(
        "stdout",
        [
            (
                json.dumps({"type": "system", "subtype": "init", "session_id": str(uuid.uuid4())}),
                False,
            )
        ],
    )
    error = error_of(adapter.outcome(0))
    assert error is not None and error.code == "AGENT_PROTOCOL_ERROR"
