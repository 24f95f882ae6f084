"""`codex-app-server` sessions against the real `codex app-server` (pinned) and a scripted model.

A conversation is one live app-server process; each run is a turn on it. These tests drive
a real RunService (or a real daemon) whose session processes are the real Codex binary,
pointed through a scratch CODEX_HOME at tests/fakes/responses_server.py on 127.0.0.1.
Behaviour ported from seeds 003 (hermes' app-server transport: retiring wedged sessions,
the post-tool watchdog, actionable errors) and 002 (baa-conductor's codexd: sessions with
their last turn and recent events, state on disk, a smoke test through the daemon).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from od_runs.agents.codex import BINARY_ENV
from od_runs.client import DaemonClient
from od_runs.models import SessionDetail
from od_runs.runs import RunService, open_service

from .agent_runs import agent, final_answer, process_tree, run_to_end
from .codex_helpers import APP_SERVER, CODEX, Codex, codex_daemon, make_codex, scripted_codex
from .conftest import RUN_DEADLINE, call, connect, process_alive, wait_terminal
from .fakes.responses_server import (
    API_KEY_ENV,
    Fail,
    FunctionCall,
    Message,
    Reasoning,
    ResponsesServer,
    write_codex_home,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.needs_cli("codex"),
]


@pytest.fixture
def codex(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Codex]:
    monkeypatch.setenv(BINARY_ENV, str(CODEX))
    with scripted_codex(tmp_path, APP_SERVER) as made:
        yield made


def model_saw(server: ResponsesServer) -> str:
    """Everything the last model request carried, as text."""
    return str(server.requests[-1]["input"])


async def session_of(service: RunService, conversation: str = "conv-1") -> SessionDetail:
    (summary,) = await service.sessions.list(conversation_id=conversation)
    return await service.sessions.get(summary.id)


def kinds(detail: SessionDetail) -> list[str]:
    return [e.type for e in detail.recentEvents]


# Check 1: a conversation is one process and one thread ------------------------------------


async def test_two_runs_of_a_conversation_share_one_process_and_one_thread(
    codex: Codex, data_dir: Path
) -> None:
    """Check 1: both succeed on one app-server pid and one thread; run 2 sees run 1."""
    codex.server.script([Message("First answer.")], [Message("Second answer.")])
    async with open_service(data_dir) as service:
        first, events1 = await run_to_end(service, codex.request("First prompt."))
        second, events2 = await run_to_end(service, codex.request("Second prompt."))
        session = await session_of(service)
    assert (first.status, second.status) == ("succeeded", "succeeded")
    assert final_answer(events1) == "First answer." and final_answer(events2) == "Second answer."
    assert first.childPid is not None and first.childPid == second.childPid == session.pid
    assert first.sessionRef is not None and first.sessionRef == second.sessionRef
    assert session.threadId == first.sessionRef.threadId
    assert (session.status, session.lastRunId, session.lastTurnStatus) == (
        "idle",
        second.id,
        "completed",
    )
    assert kinds(session).count("spawned") == 1
    starts = [e.data for e in events1 + events2 if e.event == "start"]
    assert {s["sessionId"] for s in starts} == {session.id}
    seen = model_saw(codex.server)
    assert "First prompt." in seen and "First answer." in seen and "Second prompt." in seen
    # Deltas are progress; the completed message is the answer.
    assert "".join(d["delta"] for d in agent(events1, "text_delta")) == "First answer."
    assert first.usage is not None and first.usage.inputTokens == 120
    # The daemon stopped: the process is gone, the session is retired and keeps its thread.
    assert not process_alive(session.pid or 0)


# Check 2: cancel interrupts the turn, the session lives on --------------------------------


async def test_cancel_interrupts_the_turn_without_a_signal_and_the_session_lives_on(
    codex: Codex, data_dir: Path
) -> None:
    """Check 2: canceled via turn/interrupt (an event says so, no signal); the next run works."""
    held = codex.hold(after=[Message("too late")])
    codex.server.script([Message("One.")], held, [Message("Three.")])
    async with open_service(data_dir, grace=5.0) as service:
        first, _ = await run_to_end(service, codex.request("one"))
        started = await service.start(codex.request("two"))
        await anyio.to_thread.run_sync(held.wait_reached)
        canceled = await service.cancel(started.id)
        events, _ = await service.events(started.id, 0, 1000)
        third, events3 = await run_to_end(service, codex.request("three"))
        session = await session_of(service)
    assert (canceled.status, canceled.signal, canceled.errorCode) == ("canceled", None, None)
    (interrupt,) = agent(events, "interrupt")
    assert interrupt["via"] == "turn/interrupt" and interrupt["reason"] == "cancel"
    assert events[-1].data == {"status": "canceled", "code": None, "signal": None}
    assert third.status == "succeeded" and final_answer(events3) == "Three."
    assert first.childPid == canceled.childPid == third.childPid == session.pid
    assert "retired" not in kinds(session)
    assert "interrupt" in kinds(session)


# Check 3: a process killed between runs is replaced and resumes the thread -----------------


async def test_a_session_process_killed_between_runs_is_respawned_on_the_same_thread(
    codex: Codex, data_dir: Path
) -> None:
    """Check 3: kill -9 from outside; the next run spawns, resumes, succeeds; a retirement shows."""
    codex.server.script([Message("Before the kill.")], [Message("After the kill.")])
    async with open_service(data_dir) as service:
        first, _ = await run_to_end(service, codex.request("remember this"))
        assert first.childPid is not None
        os.killpg(first.childPid, signal.SIGKILL)
        second, events = await run_to_end(service, codex.request("still there?"))
        session = await session_of(service)
    assert (first.status, second.status) == ("succeeded", "succeeded")
    assert second.childPid is not None and second.childPid != first.childPid
    assert session.pid == second.childPid and session.threadId == first.sessionRef.threadId
    assert second.sessionRef == first.sessionRef
    assert kinds(session).count("spawned") == 2 and "thread.resumed" in kinds(session)
    (retired,) = [e for e in session.recentEvents if e.type == "retired"]
    reason = retired.data["reason"]
    assert retired.data["pid"] == first.childPid and ("died" in reason or "signal 9" in reason)
    (opened,) = agent(events, "session")
    assert opened["threadId"] == session.threadId
    seen = model_saw(codex.server)
    assert "remember this" in seen and "Before the kill." in seen


# Check 4: silence after a tool call is a stall, and retires the session -------------------


async def test_silence_after_a_tool_call_is_a_stall_within_the_post_tool_threshold(
    codex: Codex, data_dir: Path
) -> None:
    """Check 4 (seed 003): tool done, then nothing: AGENT_STALLED fast, retired, no process."""
    held = codex.hold()
    codex.server.script([FunctionCall("exec_command", {"cmd": "echo tool-ran"})], held)
    request = codex.request("run a tool", idleTimeoutMs=20_000, postToolIdleTimeoutMs=1_000)
    async with open_service(data_dir, grace=2.0) as service:
        started = await service.start(request)
        await anyio.to_thread.run_sync(held.wait_reached)
        tree = process_tree((await service.get(started.id)).childPid or 0)
        began = anyio.current_time()
        with anyio.fail_after(RUN_DEADLINE):
            body = await service.wait(started.id)
        took = anyio.current_time() - began
        events, _ = await service.events(started.id, 0, 1000)
        session = await session_of(service)
    assert (body.status, body.errorCode, body.retryable) == ("failed", "AGENT_STALLED", True)
    assert body.error is not None and "postToolIdleTimeoutMs" in body.error
    assert took < 10.0, f"the post-tool watchdog took {took:.1f} s (idle timeout is 20 s)"
    calls = agent(events, "tool_call")
    assert [c["phase"] for c in calls] == ["started", "completed"]
    assert [e.data["error"]["code"] for e in events if e.event == "error"] == ["AGENT_STALLED"]
    (interrupt,) = agent(events, "interrupt")
    assert interrupt["reason"] == "watchdog"
    assert (session.status, session.pid) == ("retired", None)
    assert "watchdog" in (session.retiredReason or "")
    assert len(tree) >= 2 and not [pid for pid in tree if process_alive(pid)]


async def test_a_turn_without_any_notification_is_stalled_after_idle_timeout(
    codex: Codex, data_dir: Path
) -> None:
    """The idle watchdog: no notification at all for idleTimeoutMs: interrupt, AGENT_STALLED."""
    held = codex.hold()
    codex.server.script(held)
    async with open_service(data_dir, grace=2.0) as service:
        body, events = await run_to_end(service, codex.request(idleTimeoutMs=1_000))
        session = await session_of(service)
    assert (body.status, body.errorCode) == ("failed", "AGENT_STALLED")
    assert body.error is not None and "idleTimeoutMs" in body.error
    assert agent(events, "interrupt")[0]["reason"] == "watchdog"
    assert session.status == "retired" and not process_alive(body.childPid or 0)


# Check 5: approvals follow the run's policy -----------------------------------------------


def touch(path: Path) -> FunctionCall:
    """A shell call that asks to leave the sandbox, so an on-request Codex asks for approval."""
    arguments = {
        "cmd": f"touch {path}",
        "sandbox_permissions": "require_escalated",
        "justification": "the task needs this file",
    }
    return FunctionCall("exec_command", arguments)


async def test_approval_requests_are_answered_by_the_runs_policy(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Check 5: Codex asks; `deny` declines (nothing runs), `allow` runs it, and the default
    allows a command inside cwd but declines one that reaches outside. Each one an event."""
    monkeypatch.setenv(BINARY_ENV, str(CODEX))
    outside = tmp_path / "outside"
    outside.mkdir()
    with ResponsesServer() as server:
        codex = make_codex(
            tmp_path, server, APP_SERVER, approval_policy="on-request", sandbox_mode="read-only"
        )
        inside = codex.workdir / "inside.txt"
        server.script(
            [touch(outside / "denied.txt")],
            [Message("Denied.")],
            [touch(outside / "allowed.txt")],
            [Message("Allowed.")],
            [touch(outside / "default-outside.txt")],
            [touch(inside)],
            [Message("Default.")],
        )
        async with open_service(data_dir) as service:
            runs = [
                await run_to_end(service, codex.request(policy, approvalPolicy=policy))
                for policy in ("deny", "allow", "default")
            ]
    deny_events, default_events = runs[0][1], runs[2][1]
    assert [r.status for r, _ in runs] == ["succeeded", "succeeded", "succeeded"]
    decisions = [
        [(a["method"], a["decision"], a["policy"]) for a in agent(events, "approval")]
        for _, events in runs
    ]
    ask = "item/commandExecution/requestApproval"
    assert decisions == [
        [(ask, "deny", "deny")],
        [(ask, "allow", "allow")],
        [(ask, "deny", "default"), (ask, "allow", "default")],
    ]
    assert not (outside / "denied.txt").exists() and (outside / "allowed.txt").exists()
    assert not (outside / "default-outside.txt").exists() and inside.exists()
    statuses = [c["status"] for c in agent(deny_events, "tool_call") if c["phase"] == "completed"]
    assert statuses == ["declined"]
    assert "outside" in agent(default_events, "approval")[0]["reason"]


# Check 7: noise is counted, not stored ----------------------------------------------------


async def test_reasoning_deltas_and_token_usage_are_counted_in_one_summary_not_stored(
    codex: Codex, data_dir: Path
) -> None:
    """Check 7: no reasoning delta or usage update is an event; one summary counts them."""
    thought = "private chain of thought, forty chars..."
    assert len(thought) == 40
    codex.server.script([Reasoning(thought, deltas=10), Message("The answer.")])
    async with open_service(data_dir) as service:
        body, events = await run_to_end(service, codex.request())
    assert body.status == "succeeded" and final_answer(events) == "The answer."
    assert "private" not in str([e.data for e in events])
    types = [d["type"] for d in agent(events)]
    assert set(types) == {"session", "status", "text_delta", "message", "usage", "suppressed"}
    assert types.count("usage") == 1  # one per turn, at its end, never one per update
    (summary,) = agent(events, "suppressed")
    counts = {k["kind"]: k["count"] for k in summary["kinds"]}
    assert counts["item/reasoning/summaryTextDelta"] == 10
    assert counts["thread/tokenUsage/updated"] == 1
    assert counts["account/rateLimits/updated"] == 1
    assert summary["total"] == sum(counts.values())
    # The summary comes once, at the end of the turn, and usage lands on the status body.
    assert [e.event for e in events][-2:] == ["agent", "end"] and events[-2].data == summary
    assert body.usage is not None
    assert (body.usage.inputTokens, body.usage.outputTokens) == (120, 30)


# Check 6 and the sessions API: through a real daemon, across a retire, a crash, a restart ---


@pytest.mark.slow
async def test_a_session_survives_retire_crash_and_restart_and_resumes_its_thread(
    codex: Codex, data_dir: Path
) -> None:
    """Check 6 (seed 002): GET /api/sessions[/{id}], MCP list_sessions/get_session, POST
    retire; after a kill -9 of the daemon the row survives and the next run resumes the
    stored thread in a fresh process."""
    codex.server.script([Message("One.")], [Message("Two.")], [Message("Three.")])
    daemon = codex_daemon(data_dir)
    body = codex.request("first").model_dump(mode="json", exclude_unset=True)
    daemon.start()
    try:
        first = wait_terminal(daemon, daemon.create(body)["id"])
        with daemon.client() as http:
            listed = http.get("/api/sessions", params={"conversationId": "conv-1"}).json()
            (summary,) = listed["sessions"]
            detail = http.get(f"/api/sessions/{summary['id']}").json()
            assert http.get("/api/sessions/ses-0000000000000000").status_code == 404
        async with connect(daemon, "http") as client:
            via_mcp = await call(client, "list_sessions", {"conversationId": "conv-1"})
            one = await call(client, "get_session", {"sessionId": summary["id"]})
        async with DaemonClient(daemon.url) as remote:  # what `od-runs mcp` on stdio uses
            assert [s.id for s in await remote.list_sessions("conv-1")] == [summary["id"]]
            assert (await remote.get_session(summary["id"])).threadId == summary["threadId"]
        with daemon.client() as http:
            retired = http.post(f"/api/sessions/{summary['id']}/retire").json()
        second = wait_terminal(daemon, daemon.create({**body, "prompt": "second"})["id"])
        daemon.kill()  # a crash, with the session's process idle
        daemon.start()
        with daemon.client() as http:
            after_crash = http.get(f"/api/sessions/{summary['id']}").json()
        third = wait_terminal(daemon, daemon.create({**body, "prompt": "third"})["id"])
        with daemon.client() as http:
            last = http.get(f"/api/sessions/{summary['id']}").json()
    finally:
        daemon.stop()
    assert [r["status"] for r in (first, second, third)] == ["succeeded"] * 3
    thread = first["sessionRef"]["threadId"]
    assert {r["sessionRef"]["threadId"] for r in (first, second, third)} == {thread}
    assert (summary["status"], summary["pid"], summary["threadId"]) == (
        "idle",
        first["childPid"],
        thread,
    )
    assert (summary["lastRunId"], summary["lastTurnStatus"]) == (first["id"], "completed")
    assert set(summary) >= {"conversationId", "agentId", "createdAt", "updatedAt"}
    assert [e["type"] for e in detail["recentEvents"]] == [
        "spawned",
        "thread.started",
        "turn.started",
        "turn.ended",
    ]
    assert [s["id"] for s in via_mcp["sessions"]] == [summary["id"]]
    assert one["threadId"] == thread and one["recentEvents"]
    assert (retired["status"], retired["pid"]) == ("retired", None)
    assert retired["retiredReason"] == "retired on request"
    assert not process_alive(first["childPid"])
    pids = [first["childPid"], second["childPid"], third["childPid"]]
    assert len(set(pids)) == 3 and not [p for p in pids if process_alive(p)]
    assert (after_crash["status"], after_crash["retiredReason"]) == (
        "retired",
        "the daemon restarted",
    )
    assert last["pid"] == third["childPid"] and last["lastRunId"] == third["id"]
    assert [e["type"] for e in last["recentEvents"]].count("thread.resumed") == 2
    seen = model_saw(codex.server)
    assert "first" in seen and "One." in seen and "second" in seen and "Two." in seen


# Resume failures and provider failures ------------------------------------------------------


async def test_a_thread_that_cannot_be_resumed_fails_the_run_and_starts_no_new_thread(
    codex: Codex, data_dir: Path, tmp_path: Path
) -> None:
    """Seed 003 / issue: a failing resume is SESSION_RESUME_FAILED, never a silent new thread.
    Here the next run brings a CODEX_HOME that has never seen the thread."""
    codex.server.script([Message("Remember me.")], [Message("never sent")])
    async with open_service(data_dir) as service:
        first, _ = await run_to_end(service, codex.request())
        elsewhere = write_codex_home(tmp_path / "other-home", codex.server)
        moved = codex.request().model_copy(
            update={"env": {**codex.env(), "CODEX_HOME": str(elsewhere)}}
        )
        second, events = await run_to_end(service, moved)
        session = await session_of(service)
    assert first.status == "succeeded"
    assert (second.status, second.errorCode, second.retryable) == (
        "failed",
        "SESSION_RESUME_FAILED",
        False,
    )
    thread = first.sessionRef.threadId if first.sessionRef else None
    assert second.error is not None and str(thread) in second.error
    assert len(codex.server.requests) == 1  # the model never saw the second prompt
    assert session.threadId == thread and session.status == "retired"
    reasons = [e.data["reason"] for e in session.recentEvents if e.type == "retired"]
    assert reasons == [
        "the run's environment or tool bundle changed",
        "its thread could not be resumed",
    ]
    assert [e.data["error"]["code"] for e in events if e.event == "error"] == [
        "SESSION_RESUME_FAILED"
    ]


async def test_an_auth_failure_names_the_providers_key_and_a_one_off_session_is_retired(
    codex: Codex, data_dir: Path
) -> None:
    """Seed 003: a 401 is PROVIDER_AUTH_FAILED naming the custom provider's key variable (not
    `codex login`); a run without a conversation gets a session of its own, retired after."""
    codex.server.script(Fail(401, times=None))
    async with open_service(data_dir) as service:
        body, events = await run_to_end(service, codex.request(conversationId=None))
        (session,) = await service.sessions.list()
    assert (body.status, body.errorCode, body.retryable) == (
        "failed",
        "PROVIDER_AUTH_FAILED",
        False,
    )
    assert body.error is not None and API_KEY_ENV in body.error and "\n" not in body.error
    assert "codex login" not in body.error
    assert events[-1].data["errorCode"] == "PROVIDER_AUTH_FAILED"
    assert (session.conversationId, session.status, session.lastTurnStatus) == (
        None,
        "retired",
        "failed",
    )
    assert session.retiredReason == "its run had no conversation to continue"
    assert not process_alive(body.childPid or 0)
