"""The `acp` agent: the real codex-acp (pinned in package.json) on the scripted Responses API,
a tiny scripted ACP agent for the cases codex-acp cannot show, and the update mapping.

Check 9 of the adapters issue: an ACP run streams and succeeds, and cancel sends
`session/cancel` before any signal (invariant 9's abort step). Permission requests are
answered by the run's approvalPolicy and each decision is an event.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from acp.schema import (
    AgentMessageChunk,
    AgentPlanUpdate,
    AgentThoughtChunk,
    AvailableCommandsUpdate,
    ContentToolCallContent,
    FileEditToolCallContent,
    PlanEntry,
    TextContentBlock,
    ToolCallLocation,
    ToolCallProgress,
    ToolCallStart,
    ToolCallStatus,
    UsageUpdate,
)

from od_runs.agents.acp_permissions import decide
from od_runs.agents.acp_updates import UpdateMapper
from od_runs.models import Event, RunCreate, SessionRef
from od_runs.runs import RunService, open_service

from .agent_runs import agent, all_events, final_answer, process_tree, ps_live_pids, run_to_end
from .conftest import RUN_DEADLINE, assert_dense, process_alive, read_log
from .fakes.responses_server import (
    CustomToolCall,
    FunctionCall,
    Item,
    Message,
    ResponsesServer,
    write_codex_home,
)
from .fakes.scripted_server import Fail, Hold

ROOT = Path(__file__).resolve().parents[1]
CODEX_ACP = ROOT / "node_modules" / ".bin" / "codex-acp"
FAKES = Path(__file__).parent / "fakes"
needs_codex_acp = pytest.mark.needs_cli("codex-acp")
pytestmark = pytest.mark.anyio
# Keeps a scripted codex-acp from writing outside the workspace (and /tmp) without asking.
ASK_OUTSIDE_WORKSPACE = """
[sandbox_workspace_write]
exclude_slash_tmp = true
exclude_tmpdir_env_var = true
"""


@dataclass
class Acp:
    """A scripted model, a CODEX_HOME pointing at it, a workspace and a scratch HOME."""

    server: ResponsesServer
    home: Path
    workdir: Path

    def env(self) -> dict[str, str]:
        """What codex-acp needs: its home, the dummy key, and a HOME of its own."""
        return {
            "CODEX_HOME": str(self.home),
            # Codex runs commands in login shells: keep the machine's profile out of tests.
            "HOME": str(self.workdir.parent / "home"),
            **self.server.env(),
        }

    def request(self, prompt: str = "Say hello.", **fields: Any) -> RunCreate:
        """An acp run of the real codex-acp that reaches the scripted model and nothing else."""
        fields.setdefault("command", [str(CODEX_ACP)])
        return RunCreate(
            agentId="acp", prompt=prompt, cwd=str(self.workdir), env=self.env(), **fields
        )


def make_acp(tmp_path: Path, server: ResponsesServer, **home: Any) -> Acp:
    """A workspace, a scratch HOME and a CODEX_HOME pointing at server, under tmp_path."""
    for name in ("work", "home"):
        (tmp_path / name).mkdir()
    codex_home = write_codex_home(tmp_path / "codex-home", server, **home)
    return Acp(server, codex_home, tmp_path / "work")


@pytest.fixture
def acp(tmp_path: Path) -> Iterator[Acp]:
    with ResponsesServer() as server:
        yield make_acp(tmp_path, server)


async def wait_for_agent_event(
    service: RunService, run_id: str, predicate: Callable[[dict[str, Any]], bool]
) -> list[Event]:
    """Every event so far, once an `agent` event matching predicate has been logged."""
    with anyio.fail_after(RUN_DEADLINE):
        while True:
            events = await all_events(service, run_id)
            if any(e.event == "agent" and predicate(e.data) for e in events):
                return events
            await service.wait_for_events(run_id, events[-1].id if events else 0, 1.0)


async def wait_for_event(service: RunService, run_id: str, name: str) -> None:
    """Return once the run has logged an event of this name."""
    with anyio.fail_after(RUN_DEADLINE):
        while True:
            events = await all_events(service, run_id)
            if any(e.event == name for e in events):
                return
            await service.wait_for_events(run_id, events[-1].id if events else 0, 1.0)


# Check 9: the real codex-acp ----------------------------------------------------------------


@needs_codex_acp
@pytest.mark.slow
async def test_an_acp_run_streams_its_progress_and_succeeds_with_the_final_answer(
    acp: Acp, data_dir: Path
) -> None:
    """Check 9: tool calls and message text arrive while the turn runs; the answer is final."""
    hold: Hold[Item] = Hold(before=[Message("Almost there.")])
    acp.server.script([FunctionCall("exec_command", {"cmd": "echo acp-says-hi"})], hold)
    async with open_service(data_dir) as service:
        started = await service.start(acp.request("Run echo."))
        await anyio.to_thread.run_sync(hold.wait_reached)
        # The model holds its answer open: the run is live and already shows its progress.
        # (codex-acp may forward the held message's text only later, so the tool call is
        # what must be visible now.)
        live = await wait_for_agent_event(
            service,
            started.id,
            lambda d: d.get("type") == "tool_call" and d.get("phase") == "completed",
        )
        assert (await service.get(started.id)).status == "running"
        hold.release()
        with anyio.fail_after(RUN_DEADLINE):
            body = await service.wait(started.id)
        events = await all_events(service, started.id)
    assert (body.status, body.errorCode) == ("succeeded", None)
    (session,) = agent(live, "session")
    assert session["sessionId"] and session["agent"] == "codex-acp 0.16.0"
    calls = agent(live, "tool_call")
    assert [(c["phase"], c["name"], c["summary"]) for c in calls] == [
        ("started", "shell", "echo acp-says-hi"),
        ("completed", "shell", "echo acp-says-hi"),
    ]
    assert calls[1]["exitCode"] == 0 and "acp-says-hi" in calls[1]["output"]
    assert final_answer(events) == "Almost there."
    assert [d["stopReason"] for d in agent(events, "status") if "stopReason" in d] == ["end_turn"]
    assert "Run echo." in acp.server.user_texts()
    assert any("acp-says-hi" in out for out in acp.server.function_outputs())
    log = read_log(body.eventsLogPath or "")
    assert_dense(log)
    assert [e["event"] for e in log] == [e.event for e in events]


@needs_codex_acp
async def test_a_conversation_continues_its_acp_session_and_the_model_sees_the_past(
    acp: Acp, data_dir: Path
) -> None:
    """The second run of a conversation resumes the first run's ACP session in a new
    codex-acp process (session/resume): the model gets the earlier exchange, and the new
    run's events hold only its own turn."""
    acp.server.script([Message("First answer.")], [Message("Second answer.")])
    async with open_service(data_dir) as service:
        first, events1 = await run_to_end(service, acp.request("First prompt.", conversationId="c"))
        second, events2 = await run_to_end(
            service, acp.request("Second prompt.", conversationId="c")
        )
    assert (first.status, second.status) == ("succeeded", "succeeded")
    (opened,) = agent(events1, "session")
    (resumed,) = agent(events2, "session")
    assert "resumed" not in opened and resumed["resumed"] is True
    assert resumed["sessionId"] == opened["sessionId"]
    assert first.sessionRef == second.sessionRef == SessionRef(threadId=opened["sessionId"])
    assert first.childPid != second.childPid
    seen = str(acp.server.requests[-1]["input"])
    assert "First prompt." in seen and "First answer." in seen and "Second prompt." in seen
    assert final_answer(events2) == "Second answer."
    assert not any("First" in json.dumps(e.data) for e in events2)


@needs_codex_acp
async def test_a_session_the_agent_does_not_know_fails_the_run_and_starts_none(
    acp: Acp, data_dir: Path
) -> None:
    """sessionRef naming a session codex-acp has never seen: SESSION_RESUME_FAILED, no turn."""
    gone = SessionRef(threadId=str(uuid.uuid4()))
    async with open_service(data_dir) as service:
        body, events = await run_to_end(service, acp.request("Hello?", sessionRef=gone))
    assert (body.status, body.errorCode) == ("failed", "SESSION_RESUME_FAILED")
    assert gone.threadId is not None and gone.threadId in (body.error or "")
    assert acp.server.requests == []
    assert agent(events, "session") == []


@needs_codex_acp
@pytest.mark.slow
async def test_cancel_sends_session_cancel_before_any_signal(
    acp: Acp, data_dir: Path, tmp_path: Path
) -> None:
    """Check 9, invariant 9: codex-acp sees session/cancel first and ends its turn; only then
    does a signal reach it, and no process of the run is left."""
    record = tmp_path / "seen-by-agent.txt"
    recorder = [sys.executable, str(FAKES / "stdin_recorder.py"), str(record), str(CODEX_ACP)]
    hold: Hold[Item] = Hold(after=[Message("too late")])
    acp.server.script(hold)
    grace = 10.0
    async with open_service(data_dir, grace=grace) as service:
        started = await service.start(acp.request(command=recorder))
        await anyio.to_thread.run_sync(hold.wait_reached)
        tree = process_tree((await service.get(started.id)).childPid or 0)
        began = time.monotonic()
        body = await service.cancel(started.id)
        took = time.monotonic() - began
        events = await all_events(service, started.id)
    hold.release()
    assert (body.status, body.errorCode) == ("canceled", None)
    # What the agent's side of the pipe saw, in order: the cancel, then the hang-up: stdin
    # closed, and (codex-acp does not exit on its own) a SIGTERM to the group.
    seen = record.read_text().splitlines()
    after_cancel = seen[seen.index("method session/cancel") :]
    assert after_cancel in (
        ["method session/cancel", "eof", "signal SIGTERM"],
        ["method session/cancel", "eof"],
    )
    # codex-acp honoured it: the turn ended `cancelled` over the protocol, long before the
    # grace period after which the ladder would have signalled it.
    texts = [d["text"] for d in agent(events, "status")]
    assert texts.index("Canceling the turn") < texts.index("Turn ended: cancelled")
    assert took < grace / 2, f"cancel took {took:.1f} s"
    assert not [pid for pid in tree if process_alive(pid)]
    assert not set(tree) & ps_live_pids()


@needs_codex_acp
@pytest.mark.slow
@pytest.mark.parametrize("policy", ["default", "allow"])
async def test_a_write_outside_cwd_is_denied_by_default_and_the_decision_is_an_event(
    tmp_path: Path, data_dir: Path, policy: str
) -> None:
    """approvalPolicy default: codex-acp asks to write outside cwd, od-runs says no, the
    agent gives up (PERMISSION_DENIED) and nothing is written; `allow` lets it write."""
    outside = tmp_path / "outside" / "note.txt"
    outside.parent.mkdir()
    patch = f"*** Begin Patch\n*** Add File: {outside}\n+written by the agent\n*** End Patch\n"
    with ResponsesServer() as server:
        server.script([CustomToolCall("apply_patch", patch)], [Message("Wrote the note.")])
        acp = make_acp(
            tmp_path,
            server,
            approval_policy="on-request",
            sandbox_mode="workspace-write",
            extra_toml=ASK_OUTSIDE_WORKSPACE,
        )
        async with open_service(data_dir) as service:
            body, events = await run_to_end(
                service, acp.request("Write the note.", approvalPolicy=policy)
            )
    (approval,) = agent(events, "approval")
    assert approval["kind"] == "edit" and str(outside) in approval["summary"]
    if policy == "default":
        assert (body.status, body.errorCode) == ("failed", "PERMISSION_DENIED")
        assert approval["decision"] == "deny"
        assert f"outside the run's cwd: {outside}" in approval["reason"]
        assert body.error is not None and "approvalPolicy" in body.error
        assert not outside.exists()
        assert len(server.requests) == 1  # the model never heard back: the turn was over
    else:
        assert (body.status, body.errorCode) == ("succeeded", None)
        assert approval["decision"] == "allow"
        assert outside.read_text() == "written by the agent\n"
        assert final_answer(events) == "Wrote the note."


@needs_codex_acp
@pytest.mark.parametrize(
    ("status", "code", "hint"),
    [(401, "PROVIDER_AUTH_FAILED", "codex login"), (429, "PROVIDER_RATE_LIMITED", "rate limiting")],
)
async def test_provider_errors_reported_by_the_agent_become_failure_kinds(
    acp: Acp, data_dir: Path, status: int, code: str, hint: str
) -> None:
    """codex-acp answers session/prompt with the provider's error: the kind says what to do."""
    acp.server.script(Fail(status, times=None))
    async with open_service(data_dir) as service:
        body, events = await run_to_end(service, acp.request())
    assert (body.status, body.errorCode) == ("failed", code)
    assert body.error is not None and hint in body.error and f"HTTP {status}" in body.error
    assert events[-1].data["errorCode"] == code


# A scripted ACP agent: what codex-acp cannot show ---------------------------------------


def fake_agent(mode: str, record: Path) -> list[str]:
    return [sys.executable, str(FAKES / "acp_agent.py"), mode, str(record)]


async def test_an_agent_that_exits_when_its_stdin_closes_is_never_signalled(
    tmp_path: Path, data_dir: Path
) -> None:
    """Hang-up is polite first: stdin closed, and an agent that then exits gets no signal."""
    record = tmp_path / "seen.txt"
    request = RunCreate(
        agentId="acp", prompt="hi", cwd=str(tmp_path), command=fake_agent("answer", record)
    )
    async with open_service(data_dir) as service:
        body, events = await run_to_end(service, request)
    assert (body.status, body.exitCode, body.signal) == ("succeeded", 0, None)
    assert final_answer(events) == "Hello from the fake agent."
    assert events[-1].data == {"status": "succeeded", "code": 0, "signal": None}
    seen = record.read_text().splitlines()
    assert seen == ["method initialize", "method session/new", "method session/prompt", "eof"]


async def test_an_agent_that_only_loads_sessions_retells_the_past_which_the_run_leaves_out(
    tmp_path: Path, data_dir: Path
) -> None:
    """Without session/resume, a conversation's next run uses session/load; the updates the
    agent replays belong to earlier runs and are not logged again."""
    record = tmp_path / "seen.txt"
    command = fake_agent("load", record)
    request = RunCreate(agentId="acp", prompt="hi", cwd=str(tmp_path), command=command)
    resumed = request.model_copy(update={"sessionRef": SessionRef(threadId="fake-session")})
    async with open_service(data_dir) as service:
        body, events = await run_to_end(service, resumed)
    assert body.status == "succeeded"
    assert body.sessionRef == SessionRef(threadId="fake-session")
    (session,) = agent(events, "session")
    assert session["sessionId"] == "fake-session" and session["resumed"] is True
    assert final_answer(events) == "Hello from the fake agent."
    assert not any("Old" in json.dumps(e.data) for e in events)
    assert record.read_text().splitlines()[:3] == [
        "method initialize",
        "method session/load",
        "method session/prompt",
    ]


async def test_an_agent_that_cannot_resume_starts_a_new_session_and_says_so(
    tmp_path: Path, data_dir: Path
) -> None:
    """An agent with neither session/resume nor session/load: a new session, and a warning
    naming the one that could not be continued (never silently)."""
    record = tmp_path / "seen.txt"
    request = RunCreate(
        agentId="acp",
        prompt="hi",
        cwd=str(tmp_path),
        command=fake_agent("answer", record),
        sessionRef=SessionRef(threadId="older-session"),
    )
    async with open_service(data_dir) as service:
        body, events = await run_to_end(service, request)
    assert body.status == "succeeded"
    (warning,) = [e.data for e in events if e.event == "agent" and e.data.get("type") == "warning"]
    assert "older-session" in warning["text"] and "new one" in warning["text"]
    assert body.sessionRef == SessionRef(threadId="fake-session")
    assert "method session/new" in record.read_text().splitlines()


async def test_an_agent_that_ignores_session_cancel_gets_the_signal_ladder_after_the_grace(
    tmp_path: Path, data_dir: Path
) -> None:
    """Invariant 9: session/cancel, then the grace, then SIGTERM to the group; canceled."""
    record = tmp_path / "seen.txt"
    request = RunCreate(
        agentId="acp", prompt="hi", cwd=str(tmp_path), command=fake_agent("ignore-cancel", record)
    )
    # A grace a loaded machine still honours: the agent handles SIGTERM, but not instantly.
    async with open_service(data_dir, grace=2.0) as service:
        started = await service.start(request)
        # The agent's plan says the turn is under way.
        await wait_for_agent_event(service, started.id, lambda d: d.get("type") == "plan")
        body = await service.cancel(started.id)
    seen = record.read_text().splitlines()
    assert seen[-2:] == ["method session/cancel", "signal SIGTERM"]
    assert (body.status, body.errorCode, body.signal) == ("canceled", None, "SIGTERM")


async def test_a_cancel_before_the_turn_starts_hangs_up_without_a_signal(
    tmp_path: Path, data_dir: Path
) -> None:
    """No turn to cancel yet: the adapter closes the agent's stdin, and it leaves by itself."""
    record = tmp_path / "seen.txt"
    request = RunCreate(
        agentId="acp", prompt="hi", cwd=str(tmp_path), command=fake_agent("mute", record)
    )
    async with open_service(data_dir, grace=10.0) as service:
        started = await service.start(request)
        await wait_for_event(service, started.id, "start")
        body = await service.cancel(started.id)
    assert (body.status, body.signal, body.exitCode) == ("canceled", None, 0)
    seen = record.read_text().splitlines()
    assert seen[-1] == "eof" and not [line for line in seen if line.startswith("signal")]


async def test_an_agent_that_dies_mid_turn_fails_with_its_exit_code(
    tmp_path: Path, data_dir: Path
) -> None:
    """No answer to session/prompt and a non-zero exit: AGENT_EXITED with the code."""
    request = RunCreate(
        agentId="acp", prompt="hi", cwd=str(tmp_path), command=fake_agent("die", tmp_path / "r")
    )
    async with open_service(data_dir) as service:
        body, _ = await run_to_end(service, request)
    assert (body.status, body.errorCode, body.exitCode) == ("failed", "AGENT_EXITED", 3)


async def test_a_missing_acp_agent_fails_with_agent_not_found(
    tmp_path: Path, data_dir: Path
) -> None:
    """No such program: AGENT_NOT_FOUND, with a hint on how to install or name one."""
    request = RunCreate(agentId="acp", prompt="hi", command=[str(tmp_path / "no-such-agent")])
    async with open_service(data_dir) as service:
        body, _ = await run_to_end(service, request)
    assert (body.status, body.errorCode) == ("failed", "AGENT_NOT_FOUND")
    assert body.error is not None and "OD_RUNS_ACP_COMMAND" in body.error


async def test_the_acp_library_is_loaded_only_when_an_acp_run_starts() -> None:
    """The ACP schema costs most of a second to import: a daemon without ACP runs skips it."""
    code = "import sys, od_runs.runs; print('acp' in sys.modules)"
    result = await anyio.run_process([sys.executable, "-c", code], check=True)
    assert result.stdout.decode().strip() == "False"


# The update mapping (pure) ------------------------------------------------------------------


def text(value: str, message_id: str | None = None) -> AgentMessageChunk:
    return AgentMessageChunk(
        session_update="agent_message_chunk",
        content=TextContentBlock(type="text", text=value),
        message_id=message_id,
    )


def data_of(items: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    assert all(name == "agent" for name, _ in items)
    return [d for _, d in items]


def test_message_chunks_become_one_message_and_the_last_message_is_the_final_answer() -> None:
    """Chunks join until something else happens; the answer is never a concatenation of
    messages that an update separated (seed 001's rule, ACP flavour)."""
    mapper = UpdateMapper("/work")
    assert mapper.update(text("Looking ")) == []
    assert data_of(mapper.delta()) == [{"type": "delta", "itemId": "msg-1", "text": "Looking "}]
    assert mapper.update(text("around.")) == []
    thought = AgentThoughtChunk(
        session_update="agent_thought_chunk", content=TextContentBlock(type="text", text="hmm")
    )
    assert data_of(mapper.update(thought)) == [
        {"type": "message", "role": "assistant", "itemId": "msg-1", "text": "Looking around."}
    ]
    mapper.update(text("Done", "m-7"))
    closed = data_of(mapper.update(text("Next.", "m-8")))
    assert closed == [{"type": "message", "role": "assistant", "itemId": "m-7", "text": "Done"}]
    usage = UsageUpdate(session_update="usage_update", used=150, size=1000)
    mapper.update(usage)
    end = data_of(mapper.end_turn("end_turn", None))
    assert end == [
        {"type": "usage", "contextTokens": 150, "contextWindow": 1000},
        {"type": "message", "role": "assistant", "final": True, "itemId": "m-8", "text": "Next."},
    ]
    commands = AvailableCommandsUpdate(
        session_update="available_commands_update", available_commands=[]
    )
    mapper.update(commands)
    (summary,) = data_of(mapper.summary_event())
    assert summary["kinds"] == [
        {"kind": "available_commands_update", "count": 1},
        {"kind": "reasoning", "count": 1},
    ]
    assert "hmm" not in str(summary)


def test_a_tool_call_shows_start_new_output_and_completion_with_its_file_changes() -> None:
    """tool_call / tool_call_update become the codex adapter's shapes; output is not repeated."""
    mapper = UpdateMapper("/work")
    start = ToolCallStart(
        session_update="tool_call",
        tool_call_id="c1",
        title="Edit notes.md",
        kind="edit",
        status="in_progress",
        locations=[ToolCallLocation(path="/work/notes.md")],
    )
    assert data_of(mapper.update(start)) == [
        {
            "type": "tool_call",
            "phase": "started",
            "callId": "c1",
            "name": "edit",
            "summary": "Edit notes.md",
        }
    ]

    def progress(status: ToolCallStatus | None, *content: Any) -> ToolCallProgress:
        return ToolCallProgress(
            session_update="tool_call_update",
            tool_call_id="c1",
            status=status,
            content=list(content),
        )

    def said(value: str) -> ContentToolCallContent:
        return ContentToolCallContent(
            type="content", content=TextContentBlock(type="text", text=value)
        )

    assert data_of(mapper.update(progress(None, said("line 1")))) == [
        {"type": "tool_output", "callId": "c1", "text": "line 1"}
    ]
    diff = FileEditToolCallContent(type="diff", path="/work/notes.md", new_text="hi\n")
    done = data_of(mapper.update(progress("completed", said("line 1"), diff)))
    assert done == [
        {
            "type": "tool_call",
            "phase": "completed",
            "callId": "c1",
            "name": "edit",
            "summary": "Edit notes.md",
            "status": "completed",
            "output": "line 1",
        },
        {"type": "file_change", "callId": "c1", "changes": [{"path": "notes.md", "kind": "add"}]},
    ]
    assert mapper.call("c1") is None


def test_commands_and_mcp_tools_are_named_and_summarised_for_people() -> None:
    """`bash -lc 'make test'` reads as `make test`; an MCP call as `server.tool(args)`."""
    mapper = UpdateMapper("/work")
    shell = ToolCallStart(
        session_update="tool_call",
        tool_call_id="s",
        title="make test",
        kind="execute",
        raw_input={"command": ["/bin/bash", "-lc", "make test"], "cwd": "/work"},
    )
    (started,) = data_of(mapper.update(shell))
    assert (started["name"], started["summary"], started["input"]) == (
        "shell",
        "make test",
        {"command": "make test"},
    )
    mcp = ToolCallStart(
        session_update="tool_call",
        tool_call_id="m",
        title="Tool: docs/search",
        raw_input={"server": "docs", "tool": "search", "arguments": {"q": "acp"}},
    )
    (started,) = data_of(mapper.update(mcp))
    assert (started["name"], started["summary"], started["input"]) == (
        "docs.search",
        'docs.search(q="acp")',
        {"arguments": {"q": "acp"}},
    )
    plan = AgentPlanUpdate(
        session_update="plan",
        entries=[
            PlanEntry(content="read", priority="high", status="completed"),
            PlanEntry(content="write", priority="low", status="pending"),
        ],
    )
    assert data_of(mapper.update(plan)) == [
        {
            "type": "plan",
            "items": [
                {"text": "read", "done": True, "status": "completed"},
                {"text": "write", "done": False, "status": "pending"},
            ],
        }
    ]


# approvalPolicy (pure) ----------------------------------------------------------------------


def test_the_default_policy_allows_writes_inside_cwd_only(tmp_path: Path) -> None:
    """Writes must name paths inside cwd (symlinks resolved); reads and commands in cwd pass."""
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    os.symlink(tmp_path, work / "escape")
    cwd = str(work)
    assert decide("default", cwd, "edit", [str(work / "sub" / "a.txt")]).allowed
    assert decide("default", cwd, "edit", ["sub/relative.txt"]).allowed
    outside = decide("default", cwd, "edit", [str(work / "a"), str(tmp_path / "b")])
    assert not outside.allowed and str(tmp_path / "b") in outside.reason
    assert not decide("default", cwd, "delete", [str(work / "escape" / "x")]).allowed
    assert not decide("default", cwd, "move", [str(work / ".." / "x")]).allowed
    assert not decide("default", cwd, "edit", []).allowed
    assert not decide("default", cwd, "other", ["/etc/x"], writes=True).allowed
    assert decide("default", cwd, "read", ["/etc/hosts"]).allowed
    make = ["/bin/bash", "-lc", "make -C sub test"]
    assert decide("default", cwd, "execute", command=make, workdir=str(work / "sub")).allowed
    assert not decide("default", cwd, "execute", command=make, workdir="/").allowed
    assert not decide("default", cwd, "execute", command="rm -rf ~/notes").allowed
    assert decide("allow", cwd, "edit", ["/etc/x"]).allowed
    assert not decide("deny", cwd, "read", [str(work / "a")]).allowed
