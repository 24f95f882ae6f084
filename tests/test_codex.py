"""The `codex` agent against the real Codex CLI (pinned in package.json) and a scripted model.

Every test runs the real `codex exec --json` as a child of a real RunService (or daemon),
pointed through a scratch CODEX_HOME at tests/fakes/responses_server.py on 127.0.0.1.
Behaviour ported from seeds 001 (takopi's exec runner) and 000 (agentrun's Codex self-test):
final-answer selection, reconnect notices as progress, failure kinds, resume, no secret leaks.
"""

from __future__ import annotations

import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from od_runs.agents.codex import BINARY_ENV
from od_runs.models import RunStatus, SessionRef
from od_runs.redact import REDACTED
from od_runs.runs import RunService, open_service

from .agent_runs import (
    agent,
    all_events,
    final_answer,
    index_of,
    process_tree,
    ps_live_pids,
    run_to_end,
)
from .codex_helpers import CODEX, Codex, make_codex, scripted_codex
from .conftest import (
    RUN_DEADLINE,
    Daemon,
    assert_dense,
    marked,
    process_alive,
    read_log,
    wait_terminal,
)
from .fakes.responses_server import (
    API_KEY_ENV,
    DUMMY_API_KEY,
    Disconnect,
    FunctionCall,
    Item,
    Message,
    Reasoning,
    ResponsesServer,
)
from .fakes.scripted_server import Fail, Hold

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.needs_cli("codex"),
]
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Codex's own stderr chatter, which must never become the error a user reads.
STDERR_NOISE = "could not create PATH aliases"


@pytest.fixture
def codex(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Codex]:
    monkeypatch.setenv(BINARY_ENV, str(CODEX))
    with scripted_codex(tmp_path) as made:
        yield made


async def wait_status(service: RunService, run_id: str, status: str) -> RunStatus:
    with anyio.fail_after(RUN_DEADLINE):
        while (body := await service.get(run_id)).status != status:
            await service.wait_for_events(run_id, body.lastEventId, 1.0)
    return body


# 1-3: what a run shows ---------------------------------------------------------------------


async def test_a_codex_run_succeeds_with_its_assistant_message_as_the_final_answer(
    codex: Codex, data_dir: Path
) -> None:
    """Check 1: one assistant message; succeeded, final answer equals it, thread on status."""
    codex.server.script([Message("Hello from the scripted model.")])
    async with open_service(data_dir) as service:
        body, events = await run_to_end(service, codex.request("Greet me."))
    assert (body.status, body.exitCode, body.errorCode) == ("succeeded", 0, None)
    assert final_answer(events) == "Hello from the scripted model."
    (session,) = agent(events, "session")
    assert UUID.match(session["threadId"]) and session["resumed"] is False
    assert body.sessionRef == SessionRef(threadId=session["threadId"])
    (usage,) = agent(events, "usage")
    assert usage["inputTokens"] == 120 and usage["outputTokens"] == 30
    assert "Greet me." in codex.server.user_texts()
    log = read_log(body.eventsLogPath or "")
    assert_dense(log)
    assert [e["event"] for e in log] == [e.event for e in events]


async def test_a_shell_tool_call_shows_start_and_completion_with_command_and_output(
    codex: Codex, data_dir: Path
) -> None:
    """Check 2: tool_call started/completed with the command and its output, before the answer."""
    codex.server.script(
        [FunctionCall("exec_command", {"cmd": "echo tool-says-hi"})],
        [Message("The command printed tool-says-hi.")],
    )
    async with open_service(data_dir) as service:
        body, events = await run_to_end(service, codex.request("Run echo."))
    assert body.status == "succeeded"
    calls = agent(events, "tool_call")
    assert [(c["phase"], c["name"], c["summary"]) for c in calls] == [
        ("started", "shell", "echo tool-says-hi"),
        ("completed", "shell", "echo tool-says-hi"),
    ]
    assert calls[0]["callId"] == calls[1]["callId"]
    assert calls[1]["exitCode"] == 0 and "tool-says-hi" in calls[1]["output"]
    assert "tool-says-hi" in "".join(d["text"] for d in agent(events, "tool_output"))
    # Human-readable: never the raw protocol item.
    assert "aggregated_output" not in str(calls) and "item.started" not in str(calls)
    started = index_of(events, lambda e: e.data.get("phase") == "started")
    completed = index_of(events, lambda e: e.data.get("phase") == "completed")
    final = index_of(events, lambda e: e.event == "agent" and e.data.get("final"))
    assert started < completed < final
    assert final_answer(events) == "The command printed tool-says-hi."
    # The model was shown the command's real output.
    assert any("tool-says-hi" in out for out in codex.server.function_outputs())


async def test_the_final_answer_is_the_last_assistant_message_only(
    codex: Codex, data_dir: Path
) -> None:
    """Check 3 (seed 001, 000): progress messages stay events, never part of the answer."""
    codex.server.script(
        [
            Reasoning("private chain of thought"),
            Message("Looking around the workspace first."),
            Reasoning("more private thinking"),
            Message("Final answer only."),
        ]
    )
    async with open_service(data_dir) as service:
        body, events = await run_to_end(service, codex.request())
    assert body.status == "succeeded"
    assert [d["text"] for d in agent(events, "message") if not d.get("final")] == [
        "Looking around the workspace first.",
        "Final answer only.",
    ]
    assert final_answer(events) == "Final answer only."
    # Reasoning is not stored; one summary counts what was left out.
    (summary,) = agent(events, "suppressed")
    assert summary["kinds"] == [{"kind": "reasoning", "count": 2}]
    assert "private" not in str([e.data for e in events])


# 4: provider failures ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failing", "code", "retryable", "hint"),
    [
        # The scripted provider is a custom one: the error names its key variable.
        (Fail(401, times=None), "PROVIDER_AUTH_FAILED", False, API_KEY_ENV),
        (Fail(429, times=None), "PROVIDER_RATE_LIMITED", True, "rate limiting"),
        (Fail(503, times=None), "PROVIDER_UNAVAILABLE", True, "Retry later"),
        (Disconnect([Message("half")], times=None), "PROVIDER_UNAVAILABLE", True, "Retry later"),
    ],
    ids=["401", "429", "503", "dropped-stream"],
)
async def test_provider_errors_become_failure_kinds(
    codex: Codex, data_dir: Path, failing: Fail | Disconnect, code: str, retryable: bool, hint: str
) -> None:
    """Check 4: 401, 429, 503 and a dropped stream on every try each fail with their kind."""
    codex.server.script(failing)
    async with open_service(data_dir) as service:
        body, events = await run_to_end(service, codex.request())
    assert (body.status, body.errorCode, body.retryable) == ("failed", code, retryable)
    assert body.error is not None and hint in body.error
    assert STDERR_NOISE not in body.error and "\n" not in body.error
    (error,) = [e.data for e in events if e.event == "error"]
    assert error["error"]["code"] == code
    assert events[-1].data["errorCode"] == code
    if code == "PROVIDER_UNAVAILABLE":
        # Codex retried first: the progress shows it, and the run still failed.
        retries = [d for d in agent(events, "status") if "retry" in d]
        assert retries and retries[0]["retry"]["attempt"] == 1
        assert retries[0]["text"].startswith("Reconnecting... 1/")
        assert len(codex.server.requests) >= 2


# 5: conversations resume the thread --------------------------------------------------------


async def test_the_next_run_of_a_conversation_resumes_the_same_thread(
    codex: Codex, data_dir: Path
) -> None:
    """Check 5: the second run of a conversation continues the first one's Codex thread."""
    codex.server.script([Message("First answer.")], [Message("Second answer.")])
    async with open_service(data_dir) as service:
        first, _ = await run_to_end(service, codex.request("First prompt.", conversationId="c-1"))
        second, events = await run_to_end(
            service, codex.request("Second prompt.", conversationId="c-1")
        )
    assert (first.status, second.status) == ("succeeded", "succeeded")
    assert first.sessionRef is not None and first.sessionRef.threadId
    assert second.sessionRef == first.sessionRef
    assert agent(events, "session")[0]["resumed"] is True
    # The model saw the earlier exchange: it really is the same thread.
    seen = str(codex.server.requests[-1]["input"])
    assert "First prompt." in seen and "First answer." in seen and "Second prompt." in seen


async def test_resuming_a_thread_that_does_not_exist_fails_and_starts_no_new_thread(
    codex: Codex, data_dir: Path
) -> None:
    """Check 5 (seed 000): a stale thread fails SESSION_RESUME_FAILED; the model is not called."""
    stale = str(uuid.uuid4())
    async with open_service(data_dir) as service:
        body, events = await run_to_end(
            service, codex.request(sessionRef=SessionRef(threadId=stale))
        )
    assert (body.status, body.errorCode, body.retryable) == (
        "failed",
        "SESSION_RESUME_FAILED",
        False,
    )
    assert body.sessionRef == SessionRef(threadId=stale)
    assert body.error is not None and stale in body.error and STDERR_NOISE not in body.error
    assert codex.server.requests == []
    assert agent(events, "session") == []


async def test_a_conversation_whose_thread_was_lost_fails_instead_of_starting_over(
    codex: Codex, data_dir: Path
) -> None:
    """Check 5: Codex lost the conversation's thread (sessions deleted): fail, never a new one."""
    codex.server.script([Message("Remember me.")], [Message("never sent")])
    async with open_service(data_dir) as service:
        first, _ = await run_to_end(service, codex.request(conversationId="c-lost"))
        shutil.rmtree(codex.home / "sessions")
        second, _ = await run_to_end(service, codex.request(conversationId="c-lost"))
    assert first.status == "succeeded"
    assert (second.status, second.errorCode) == ("failed", "SESSION_RESUME_FAILED")
    assert second.sessionRef == first.sessionRef
    assert len(codex.server.requests) == 1


# 6: cancel ---------------------------------------------------------------------------------


async def test_cancel_while_the_model_holds_the_response_leaves_no_codex_process(
    codex: Codex, data_dir: Path
) -> None:
    """Check 6: canceled within the grace period, and `ps` shows no process of the run."""
    hold: Hold[Item] = Hold(after=[Message("too late")])
    codex.server.script(hold)
    grace = 5.0
    async with open_service(data_dir, grace=grace) as service:
        started = await service.start(codex.request())
        await anyio.to_thread.run_sync(hold.wait_reached)
        running = await service.get(started.id)
        assert running.status == "running" and running.childPid is not None
        tree = process_tree(running.childPid)
        assert len(tree) >= 2, "expected the node wrapper and the native codex binary"
        began = time.monotonic()
        body = await service.cancel(started.id)
        took = time.monotonic() - began
    hold.release()
    assert body.status == "canceled" and body.errorCode is None
    assert took < grace, f"cancel took {took:.1f} s"
    assert not [pid for pid in tree if process_alive(pid)]
    assert not set(tree) & ps_live_pids()


# 7: missing binary and a silent codex ------------------------------------------------------


async def test_a_missing_codex_binary_fails_with_agent_not_found(
    codex: Codex, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Check 7: no such program: AGENT_NOT_FOUND with a hint on how to install it."""
    monkeypatch.setenv(BINARY_ENV, str(tmp_path / "no-such-dir" / "codex"))
    async with open_service(data_dir) as service:
        body, _ = await run_to_end(service, codex.request())
    assert (body.status, body.errorCode, body.retryable) == ("failed", "AGENT_NOT_FOUND", False)
    assert body.error is not None and "OD_RUNS_CODEX_BIN" in body.error


async def test_a_codex_that_prints_nothing_for_idle_timeout_is_stalled_and_stopped(
    codex: Codex, data_dir: Path
) -> None:
    """Check 7: the model never answers, Codex goes quiet: AGENT_STALLED, no process left.

    On a loaded machine Codex can be silent for the whole limit before it even asks the
    model; that is the same stall, so the test waits for the run's end, not for the request.
    """
    hold: Hold[Item] = Hold()
    codex.server.script(hold)
    seen: set[int] = set()
    async with open_service(data_dir) as service:
        started = await service.start(codex.request(idleTimeoutMs=1000))
        with anyio.fail_after(RUN_DEADLINE):
            while (await service.get(started.id)).status in ("queued", "running"):
                seen.update(marked(started.id))
                await anyio.sleep(0.02)
            body = await service.wait(started.id)
        events = await all_events(service, started.id)
    hold.release()
    assert (body.status, body.errorCode, body.retryable) == ("failed", "AGENT_STALLED", True)
    assert [e.data["error"]["code"] for e in events if e.event == "error"] == ["AGENT_STALLED"]
    assert seen, "no process of the run was ever seen"
    assert marked(started.id) == []
    assert not [pid for pid in seen if process_alive(pid)]


# 8: one at a time per conversation, in parallel across conversations ----------------------


async def test_two_runs_of_one_conversation_never_overlap(codex: Codex, data_dir: Path) -> None:
    """Check 8: the second run waits `queued` until the first is done, then resumes its thread."""
    hold: Hold[Item] = Hold(after=[Message("First, after a while.")])
    codex.server.script(hold, [Message("Second.")])
    async with open_service(data_dir) as service:
        first = await service.start(codex.request("one", conversationId="c-seq"))
        second = await service.start(codex.request("two", conversationId="c-seq"))
        await anyio.to_thread.run_sync(hold.wait_reached)
        waiting = await service.get(second.id)
        assert (waiting.status, waiting.childPid, waiting.lastEventId) == ("queued", None, 0)
        assert len(codex.server.requests) == 1
        hold.release()
        with anyio.fail_after(RUN_DEADLINE):
            a = await service.wait(first.id)
            b = await service.wait(second.id)
    assert (a.status, b.status) == ("succeeded", "succeeded")
    assert a.finishedAt is not None and b.startedAt is not None
    assert b.startedAt >= a.finishedAt
    assert b.sessionRef == a.sessionRef


async def test_runs_of_two_conversations_run_at_the_same_time(codex: Codex, data_dir: Path) -> None:
    """Check 8: both runs are talking to the model at once."""
    holds: list[Hold[Item]] = [Hold(after=[Message("done")]), Hold(after=[Message("done")])]
    codex.server.script(*holds)
    async with open_service(data_dir) as service:
        runs = [
            await service.start(codex.request(conversationId=conversation))
            for conversation in ("c-left", "c-right")
        ]
        for hold in holds:
            await anyio.to_thread.run_sync(hold.wait_reached)
        assert [(await service.get(r.id)).status for r in runs] == ["running", "running"]
        for hold in holds:
            hold.release()
        with anyio.fail_after(RUN_DEADLINE):
            bodies = [await service.wait(r.id) for r in runs]
    assert [b.status for b in bodies] == ["succeeded", "succeeded"]
    assert bodies[0].sessionRef != bodies[1].sessionRef


# 10: secrets -------------------------------------------------------------------------------


@pytest.mark.slow
def test_no_provider_secret_reaches_an_event_a_log_line_or_a_status_body(
    tmp_path: Path, data_dir: Path
) -> None:
    """Check 10 (invariant 8): the provider key, even when the model echoes it, is redacted."""
    secret = f"sk-scripted-{uuid.uuid4().hex}"
    with ResponsesServer() as server:
        server.script(
            [FunctionCall("exec_command", {"cmd": f"echo the key is {secret}"})],
            [Message(f"I found the key: {secret}")],
        )
        codex = make_codex(tmp_path, server)
        daemon = Daemon(data_dir)
        daemon.env.update({BINARY_ENV: str(CODEX), API_KEY_ENV: secret})
        daemon.start()
        try:
            run = daemon.create(
                {
                    "agentId": "codex",
                    "prompt": "Find the key.",
                    "cwd": str(codex.workdir),
                    "env": {**codex.env(), API_KEY_ENV: secret},
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
    assert server.requests and secret != DUMMY_API_KEY
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
    leaked = [name for name, text in surfaces.items() if secret in text]
    assert leaked == []
    assert page.status_code == 200
