"""Unit tests of the app-server protocol layer: notification mapping, approval policy,
failure classification, the JSON-RPC peer and the post-tool watchdog.

The notifications below have the shapes the real `codex app-server` 0.169 sends (recorded
from it against the scripted model); tests/test_app_server.py drives the real binary.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from od_runs import sessions
from od_runs.agents.app_server import CodexAppServerAdapter, thread_of
from od_runs.agents.approvals import command_stays_inside, decide, permissions_stay_inside
from od_runs.agents.base import TurnEnded
from od_runs.agents.codex import BINARY_ENV
from od_runs.agents.jsonrpc import JsonRpcPeer, Notification, PeerClosed, RpcError
from od_runs.agents.process import managed_process
from od_runs.agents.watchdog import Watchdog
from od_runs.errors import BadRequest
from od_runs.models import RunCreate, SessionRef, ToolBundle
from od_runs.runs import open_service

from .agent_runs import after_tool, ended, error_of
from .conftest import RUN_DEADLINE, apoll, process_alive

pytestmark = pytest.mark.anyio
THREAD, TURN = "thread-1", "turn-1"


def make(tmp_path: Path, **fields: Any) -> CodexAppServerAdapter:
    adapter = CodexAppServerAdapter(
        RunCreate(agentId="codex-app-server", prompt="hi", cwd=str(tmp_path), **fields)
    )
    adapter.thread_id, adapter.turn_id = THREAD, TURN
    return adapter


def note(method: str, **params: Any) -> Notification:
    return Notification(method, {"threadId": THREAD, "turnId": TURN, **params})


def item(method: str, **fields: Any) -> Notification:
    return note(method, item=fields)


def completed(status: str = "completed", error: Any = None) -> Notification:
    turn = {"id": TURN, "items": [], "status": status, "error": error}
    return Notification("turn/completed", {"threadId": THREAD, "turn": turn})


def data(events: list[tuple[str, Any]], kind: str | None = None) -> list[dict[str, Any]]:
    return [d for e, d in events if e == "agent" and (kind is None or d["type"] == kind)]


# Mapping ------------------------------------------------------------------------------------


def test_the_final_answer_is_the_last_completed_agent_message_and_deltas_are_progress(
    tmp_path: Path,
) -> None:
    adapter = make(tmp_path)
    events = adapter.translate_batch(
        [
            note("turn/started", turn={"id": TURN}),
            item("item/started", type="agentMessage", id="m1", text=""),
            note("item/agentMessage/delta", itemId="m1", delta="Looking "),
            note("item/agentMessage/delta", itemId="m1", delta="around."),
            item("item/completed", type="agentMessage", id="m1", text="Looking around."),
            item(
                "item/completed", type="agentMessage", id="m2", text="Done.", phase="final_answer"
            ),
            item("item/completed", type="agentMessage", id="m3", text="PS: bye"),
            completed(),
        ]
    )
    assert [d["delta"] for d in data(events, "text_delta")] == ["Looking ", "around."]
    # A streamed message is not repeated whole; the others are messages of their own.
    assert [d["itemId"] for d in data(events, "message") if not d.get("final")] == ["m2", "m3"]
    (final,) = [d for d in data(events, "message") if d.get("final")]
    assert (final["itemId"], final["text"]) == ("m2", "Done.")
    assert ended(adapter) and error_of(adapter.outcome(0)) is None


def test_a_shell_item_becomes_a_tool_call_with_its_output_once(tmp_path: Path) -> None:
    adapter = make(tmp_path)
    shell = {"type": "commandExecution", "id": "c1", "command": "/bin/bash -lc 'make test'"}
    events = adapter.translate_batch(
        [
            item("item/started", **shell, status="inProgress"),
            note("item/commandExecution/outputDelta", itemId="c1", delta="ok 1\n"),
        ]
    )
    assert not after_tool(adapter)
    events += adapter.translate_batch(
        [
            item(
                "item/completed",
                **shell,
                status="completed",
                exitCode=0,
                aggregatedOutput="ok 1\nok 2\n",
            )
        ]
    )
    calls = data(events, "tool_call")
    assert [(c["phase"], c["name"], c["summary"]) for c in calls] == [
        ("started", "shell", "make test"),
        ("completed", "shell", "make test"),
    ]
    assert calls[1]["exitCode"] == 0 and calls[1]["status"] == "completed"
    assert [d["text"] for d in data(events, "tool_output")] == ["ok 1\n", "ok 2\n"]
    # Silence from here on is post-tool quiet; any sign of work ends it.
    assert after_tool(adapter)
    adapter.translate_batch([note("thread/tokenUsage/updated", tokenUsage={})])
    assert after_tool(adapter)
    adapter.translate_batch([note("item/reasoning/summaryTextDelta", delta="hmm")])
    assert not after_tool(adapter)


def test_a_file_change_shows_relative_paths_and_their_kind(tmp_path: Path) -> None:
    adapter = make(tmp_path)
    change = {
        "type": "fileChange",
        "id": "f1",
        "status": "completed",
        "changes": [{"path": str(tmp_path / "src" / "a.py"), "kind": {"type": "update"}}],
    }
    events = adapter.translate_batch([item("item/completed", **change)])
    (files,) = data(events, "file_change")
    assert files["changes"] == [{"path": "src/a.py", "kind": "update"}]
    assert data(events, "tool_call")[-1]["summary"] == "update src/a.py"


def test_noise_is_counted_by_method_in_one_summary_and_usage_is_summed(tmp_path: Path) -> None:
    adapter = make(tmp_path)
    usage = {"inputTokens": 100, "outputTokens": 10, "cachedInputTokens": 0}
    usage.update(reasoningOutputTokens=2, totalTokens=110)
    events = adapter.translate_batch(
        [
            *(note("item/reasoning/summaryTextDelta", delta="x") for _ in range(5)),
            note("thread/tokenUsage/updated", tokenUsage={"last": usage, "total": usage}),
            note("thread/tokenUsage/updated", tokenUsage={"last": usage, "total": usage}),
            Notification("account/rateLimits/updated", {"rateLimits": {}}),
            note("thread/status/changed", status={"type": "active"}),
            item("item/completed", type="reasoning", id="r1", summary=["secret thoughts"]),
            Notification("some/futureNotification", {}),
        ]
    )
    assert events == []
    (summary,) = data(adapter.finish_events())
    counts = {k["kind"]: k["count"] for k in summary["kinds"]}
    assert counts == {
        "item/reasoning/summaryTextDelta": 5,
        "thread/tokenUsage/updated": 2,
        "account/rateLimits/updated": 1,
        "thread/status/changed": 1,
        "item/completed:reasoning": 1,
        "some/futureNotification": 1,
    }
    assert summary["total"] == 11 and "secret" not in json.dumps(summary)
    used = adapter.usage()
    assert used is not None
    assert (used.inputTokens, used.totalTokens) == (200, 220)


def test_notifications_of_an_earlier_turn_are_not_this_runs_events(tmp_path: Path) -> None:
    adapter = make(tmp_path)
    late = Notification("item/agentMessage/delta", {"threadId": THREAD, "turnId": "old"})
    assert adapter.translate_batch([late]) == []
    assert adapter.translate_batch([completed()]) == [] and ended(adapter)
    stale = {"threadId": THREAD, "turn": {"id": "old", "status": "interrupted"}}
    adapter2 = make(tmp_path)
    adapter2.translate_batch([Notification("turn/completed", stale)])
    assert not ended(adapter2)


def test_a_turn_aborted_marker_in_the_text_ends_the_turn_as_interrupted(tmp_path: Path) -> None:
    """Seed 003: some builds end a turn with <turn_aborted> instead of turn/completed."""
    adapter = make(tmp_path)
    adapter.translate_batch(
        [item("item/completed", type="agentMessage", id="m", text="<turn_aborted/>")]
    )
    assert adapter.progress() == TurnEnded("interrupted")


def test_a_retrying_error_is_progress_and_the_final_one_a_warning(tmp_path: Path) -> None:
    adapter = make(tmp_path)
    events = adapter.translate_batch(
        [
            note("error", error={"message": "Reconnecting... 2/5"}, willRetry=True),
            note("error", error={"message": "stream disconnected"}, willRetry=False),
        ]
    )
    (status,) = data(events, "status")
    assert status["retry"] == {"attempt": 2, "max": 5}
    assert [d["text"] for d in data(events, "warning")] == ["stream disconnected"]


@pytest.mark.parametrize(
    ("error", "code", "hint"),
    [
        ({"message": "x", "codexErrorInfo": {"httpConnectionFailed": {"httpStatusCode": 401}}},
         "PROVIDER_AUTH_FAILED", "codex login"),
        ({"message": "refresh token expired", "codexErrorInfo": "other"},
         "PROVIDER_AUTH_FAILED", "codex login"),
        ({"message": "exceeded retry limit, last status: 429 Too Many Requests",
          "codexErrorInfo": {"responseTooManyFailedAttempts": {"httpStatusCode": 429}}},
         "PROVIDER_RATE_LIMITED", "rate limiting"),
        ({"message": "overloaded", "codexErrorInfo": "serverOverloaded"},
         "PROVIDER_UNAVAILABLE", "Retry later"),
        ({"message": "too long", "codexErrorInfo": "contextWindowExceeded"},
         "PROVIDER_REJECTED", "too long"),
        ({"message": "the model declined"}, "AGENT_EXITED", "the model declined"),
    ],
    ids=["401", "oauth-text", "429", "overloaded", "context", "other"],
)  # fmt: skip
def test_a_failed_turn_is_classified_from_its_structured_error_first(
    tmp_path: Path, error: dict[str, Any], code: str, hint: str
) -> None:
    adapter = make(tmp_path)
    adapter.translate_batch([completed("failed", error)])
    result = error_of(adapter.outcome(0))
    assert result is not None and result.code == code and hint in result.message


def test_a_lost_session_says_why(tmp_path: Path) -> None:
    garbage, dead, auth = make(tmp_path), make(tmp_path), make(tmp_path)
    garbage.session_lost("<html>", None)
    dead.session_lost(None, -9)
    auth.session_lost(None, 1, "Error: token refresh failed: invalid_grant (401)")
    garbled = error_of(garbage.outcome(0))
    assert garbled is not None and garbled.code == "AGENT_PROTOCOL_ERROR"
    died = error_of(dead.outcome(0))
    assert died is not None and died.code == "AGENT_EXITED" and died.retryable
    assert "signal 9" in died.message
    refused = error_of(auth.outcome(0))
    assert refused is not None and refused.code == "PROVIDER_AUTH_FAILED"
    assert "codex login" in refused.message


def test_thread_ids_are_read_from_every_known_spelling() -> None:
    """Seed 003: tolerate thread.id, thread.sessionId, top-level threadId or sessionId."""
    assert thread_of({"thread": {"id": "a"}}) == "a"
    assert thread_of({"thread": {"sessionId": "b"}}) == "b"
    assert thread_of({"threadId": "c"}) == "c"
    assert thread_of({"sessionId": "d"}) == "d"
    assert thread_of({"thread": {}}) is None and thread_of(None) is None


def test_a_stale_thread_id_that_is_not_a_uuid_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="UUID"):
        make(tmp_path, sessionRef=SessionRef(threadId="not-a-uuid"))


def test_a_bundle_becomes_the_threads_mcp_config_and_part_of_the_process_setup(
    tmp_path: Path,
) -> None:
    """Enabled servers go to Codex as `mcp_servers` config; an SSE one is a warning; the
    servers are part of what a session's process is set up with."""
    bundle = ToolBundle.model_validate(
        {
            "mcpServers": [
                {"id": "t", "command": "x", "args": ["-v"]},
                {"id": "off", "command": "y", "enabled": False},
                {"id": "old", "transport": "sse", "url": "https://mcp.test/sse"},
            ]
        }
    )
    adapter = make(tmp_path, toolBundle=bundle)
    assert list(adapter.mcp_servers) == ["t"]
    assert adapter.mcp_servers["t"]["command"] == "x" and adapter.mcp_servers["t"]["required"]
    assert adapter.process_config() == adapter.mcp_servers
    assert make(tmp_path).process_config() == {}
    (note,) = adapter.notes()
    assert note[0] == "agent" and "old" in note[1]["text"]


# Approvals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "inside"),
    [
        ("/bin/bash -lc 'touch notes.txt'", True),
        ("/bin/bash -lc 'make test > out/log.txt'", True),
        ("ls -la", True),
        ("/bin/bash -lc 'touch /etc/passwd'", False),
        ("/bin/bash -lc 'cat ../secrets'", False),
        ("/bin/bash -lc 'echo hi >/tmp/x'", False),
        ("/bin/bash -lc 'cp a ~/b'", False),
        ("/bin/bash -lc 'curl --output=/tmp/x http://h'", False),
        ("/bin/bash -lc 'echo \"unbalanced'", False),
    ],
)
def test_the_default_policy_reads_the_paths_a_command_names(
    tmp_path: Path, command: str, inside: bool
) -> None:
    root = str(tmp_path.resolve())
    (tmp_path / "out").mkdir()
    assert command_stays_inside(command, root, root) is inside


def test_a_command_running_outside_cwd_is_outside_even_without_paths(tmp_path: Path) -> None:
    root = str((tmp_path / "work").resolve())
    assert not command_stays_inside("ls", str(tmp_path), root)


@pytest.mark.parametrize("policy", ["default", "allow", "deny"])
def test_each_policy_answers_a_command_approval(tmp_path: Path, policy: str) -> None:
    root = str(tmp_path.resolve())
    request = {"itemId": "c1", "command": "/bin/bash -lc 'rm -rf /'", "cwd": root}
    decision = decide(policy, "item/commandExecution/requestApproval", request, root, {})
    assert decision is not None
    assert decision.result == {"decision": "accept" if policy == "allow" else "decline"}
    assert decision.summary == "rm -rf /" and decision.call_id == "c1"


def test_a_file_change_approval_uses_the_announced_item_and_grant_root(tmp_path: Path) -> None:
    root = str(tmp_path.resolve())
    inside = {"changes": [{"path": f"{root}/a.py", "kind": {"type": "add"}}]}
    method = "item/fileChange/requestApproval"
    ok = decide("default", method, {"itemId": "f"}, root, {"f": inside})
    assert ok is not None and ok.allowed and ok.result == {"decision": "accept"}
    grab = decide("default", method, {"itemId": "f", "grantRoot": "/"}, root, {"f": inside})
    assert grab is not None and not grab.allowed
    unknown = decide("default", method, {"itemId": "nope"}, root, {})
    assert unknown is not None and not unknown.allowed  # nothing known: nothing allowed


def test_permissions_and_elicitations_follow_the_policy(tmp_path: Path) -> None:
    root = str(tmp_path.resolve())
    assert permissions_stay_inside({"fileSystem": {"write": [f"{root}/x"]}}, root)
    assert not permissions_stay_inside({"network": {"enabled": True}}, root)
    net = {"permissions": {"network": {"enabled": True}}, "itemId": "p"}
    denied = decide("default", "item/permissions/requestApproval", net, root, {})
    assert denied is not None and denied.result == {"permissions": {}, "scope": "turn"}
    granted = decide("allow", "item/permissions/requestApproval", net, root, {})
    assert granted is not None and granted.result["permissions"] == net["permissions"]
    form = {"message": "Your name?", "mode": "form", "requestedSchema": {}}
    declined = decide("default", "mcpServer/elicitation/request", form, root, {})
    assert declined is not None and declined.result == {"action": "decline"}
    accepted = decide("allow", "mcpServer/elicitation/request", form, root, {})
    assert accepted is not None and accepted.allowed
    assert decide("allow", "item/tool/call", {}, root, {}) is None


async def test_an_unknown_request_gets_a_json_rpc_error_and_one_warning(tmp_path: Path) -> None:
    adapter = make(tmp_path)
    first, events = await adapter.answer("item/tool/call", {})
    second, again = await adapter.answer("item/tool/call", {})
    assert isinstance(first, RpcError) and first.code == -32601
    assert isinstance(second, RpcError)
    assert len(data(events, "warning")) == 1 and again == []
    result, recorded = await adapter.answer(
        "item/commandExecution/requestApproval", {"itemId": "c", "command": "ls"}
    )
    assert result == {"decision": "accept"}
    (approval,) = data(recorded, "approval")
    assert (approval["decision"], approval["policy"], approval["callId"]) == (
        "allow",
        "default",
        "c",
    )


# The JSON-RPC peer, against a tiny child that speaks it ------------------------------------

# Answers requests, sends notifications, asks a question of its own, then prints garbage.
CHILD = r"""
import json, sys
def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n"); sys.stdout.flush()
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("method") == "echo":
        send({"method": "note", "params": {"n": 1}})
        send({"method": "note", "params": {"n": 2}})
        send({"id": 7, "method": "please/approve", "params": {}})
        reply = json.loads(sys.stdin.readline())
        send({"method": "note", "params": {"reply": reply}})
        send({"id": msg["id"], "result": msg["params"]})
    elif msg.get("method") == "fail":
        send({"id": msg["id"], "error": {"code": -32000, "message": "nope"}})
    elif msg.get("method") == "garbage":
        sys.stdout.write("this is not json\n"); sys.stdout.flush()
"""


async def test_the_peer_carries_requests_notifications_and_questions_in_order(
    tmp_path: Path,
) -> None:
    argv = [sys.executable, "-c", CHILD]
    seen: list[Any] = []
    marker = ("OD_RUNS_TEST_PEER", tmp_path.name)
    async with managed_process(argv, env={}, cwd=str(tmp_path), stdin=True, marker=marker) as child:
        process = child.process
        assert process.stdin is not None and process.stdout is not None
        peer = JsonRpcPeer(process.stdin)
        peer.on_notifications = lambda batch: seen.extend(n.params for n in batch)
        async with anyio.create_task_group() as tg:
            tg.start_soon(peer.serve, process.stdout)
            with anyio.fail_after(10):
                assert await peer.request("echo", {"x": 1}, 5) == {"x": 1}
                with pytest.raises(RpcError, match="nope"):
                    await peer.request("fail", {}, 5)
                await peer.notify("garbage")
                await peer.closed.wait()
            tg.cancel_scope.cancel()
    assert seen[:2] == [{"n": 1}, {"n": 2}]
    # Nobody handles please/approve: the child got a method-not-found error, in order.
    reply = seen[2]["reply"]
    assert reply["id"] == 7 and reply["error"]["code"] == -32601
    assert peer.garbage == "this is not json"
    with pytest.raises(PeerClosed):
        await peer.request("echo", {}, 1)


# The post-tool watchdog ---------------------------------------------------------------------


async def test_the_post_tool_limit_applies_only_while_the_agent_is_quiet_after_a_tool() -> None:
    watchdog = Watchdog(idle=5.0, timeout=None, post_tool=0.2)
    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:

            async def expire() -> None:
                assert await watchdog.expired() == "quiet"
                tg.cancel_scope.cancel()

            tg.start_soon(expire)
            await anyio.sleep(0.3)  # no tool finished yet: only the 5 s idle limit applies
            watchdog.touch(after_tool=True)  # wakes the waiter: its deadline moved earlier
            await anyio.sleep_forever()


# Retirement, against a fake app-server that misbehaves mid-turn ----------------------------


def fake_app_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """Point OD_RUNS_CODEX_BIN at a tiny app-server that does `mode` after turn/start."""
    fake = tmp_path / "fake-codex"
    fake.write_text(FAKE_APP_SERVER.format(python=sys.executable, mode=mode))
    fake.chmod(0o755)
    monkeypatch.setenv(BINARY_ENV, str(fake))


FAKE_APP_SERVER = r"""#!{python}
import json, signal, sys, time
def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n"); sys.stdout.flush()
thread = {{"id": "0199a213-81c0-7800-8aa1-bbab2a035a53"}}
for line in sys.stdin:
    msg = json.loads(line)
    method, rid = msg.get("method"), msg.get("id")
    if method == "initialize":
        send({{"id": rid, "result": {{"userAgent": "fake"}}}})
    elif method == "thread/start":
        send({{"id": rid, "result": {{"thread": thread}}}})
    elif method == "turn/start":
        send({{"id": rid, "result": {{"turn": {{"id": "t1", "status": "inProgress"}}}}}})
        if {mode!r} == "garbage":
            sys.stdout.write("<html>proxy error</html>\n"); sys.stdout.flush()
        elif {mode!r} == "exit":
            sys.exit(3)
        elif {mode!r} == "deaf":
            pass  # the turn never ends, whatever od-runs asks
        else:
            turn = {{"id": "t1", "status": "completed", "items": []}}
            done = {{"threadId": thread["id"], "turn": turn}}
            send({{"method": "turn/completed", "params": done}})
    elif method in ("thread/loaded/list", "turn/interrupt"):
        send({{"id": rid, "result": {{"data": []}}}})
if {mode!r} == "deaf":
    print("still here", file=sys.stderr, flush=True)
    signal.pause()  # even a closed stdin does not stop it: only a signal will
"""


@pytest.mark.parametrize(
    ("mode", "code", "reason"),
    [
        ("garbage", "AGENT_PROTOCOL_ERROR", "not JSON-RPC"),
        ("exit", "AGENT_EXITED", "its process died"),
    ],
)
async def test_a_session_that_answers_garbage_or_dies_mid_turn_is_retired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, code: str, reason: str
) -> None:
    fake_app_server(tmp_path, monkeypatch, mode)
    request = RunCreate(agentId="codex-app-server", conversationId="c", cwd=str(tmp_path))
    async with open_service(None, grace=1.0) as service:
        started = await service.start(request)
        with anyio.fail_after(RUN_DEADLINE):
            body = await service.wait(started.id)
        (summary,) = await service.sessions.list()
        session = await service.sessions.get(summary.id)
    assert (body.status, body.errorCode) == ("failed", code)
    assert session.status == "retired" and reason in (session.retiredReason or "")
    assert not process_alive(body.childPid or 0)


async def test_idle_sessions_beyond_the_limit_are_retired_least_recently_used_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_app_server(tmp_path, monkeypatch, "complete")
    monkeypatch.setattr(sessions, "MAX_LIVE_SESSIONS", 1)
    async with open_service(None, grace=1.0) as service:
        for conversation in ("old", "new"):
            request = RunCreate(
                agentId="codex-app-server", conversationId=conversation, cwd=str(tmp_path)
            )
            started = await service.start(request)
            with anyio.fail_after(RUN_DEADLINE):
                assert (await service.wait(started.id)).status == "succeeded"

        async def settled() -> dict[str | None, str]:
            return {s.conversationId: s.status for s in await service.sessions.list()}

        # The trim runs after the second run's turn, beside it: poll until it is done.
        async def trimmed() -> bool:
            return await settled() == {"old": "retired", "new": "idle"}

        await apoll("the trim", trimmed)
        (old,) = await service.sessions.list(conversation_id="old")
    assert old.retiredReason == "more than 1 sessions were live"


async def test_a_session_idle_past_its_ttl_is_retired_and_its_process_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle session's process is stopped once it has gone unused for IDLE_TTL (30 min;
    0.3 s here); the session is retired with the reason, and keeps its thread for later."""
    fake_app_server(tmp_path, monkeypatch, "complete")
    monkeypatch.setattr(sessions, "IDLE_TTL", 0.3)
    request = RunCreate(agentId="codex-app-server", conversationId="c", cwd=str(tmp_path))
    async with open_service(None, grace=1.0) as service:
        started = await service.start(request)
        with anyio.fail_after(RUN_DEADLINE):
            body = await service.wait(started.id)
        assert body.status == "succeeded"
        assert process_alive(body.childPid or 0)  # idle, not yet past its TTL

        async def retired() -> Any:  # the janitor wakes every IDLE_TTL: poll
            first = (await service.sessions.list())[0]
            return first if first.status == "retired" else None

        summary = await apoll("the idle session to be retired", retired)
    assert summary.retiredReason == "it was idle for 0.005 minutes"
    assert summary.threadId is not None
    assert not process_alive(body.childPid or 0)


async def test_a_turn_that_ignores_the_interrupt_gets_the_signal_ladder_and_is_retired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancel asks turn/interrupt first; a turn still going after the grace period gets
    SIGTERM (then SIGKILL) to the session's group, and the session is retired."""
    fake_app_server(tmp_path, monkeypatch, "deaf")
    request = RunCreate(agentId="codex-app-server", conversationId="c", cwd=str(tmp_path))
    async with open_service(None, grace=0.5) as service:
        started = await service.start(request)
        with anyio.fail_after(RUN_DEADLINE):  # the turn is being sent once this event is in
            while (await service.get(started.id)).lastEventId < 2:
                await service.wait_for_events(started.id, 1, 1.0)
        body = await service.cancel(started.id)
        events, _ = await service.events(started.id, 0, 100)
        (summary,) = await service.sessions.list()
    assert (body.status, body.signal) == ("canceled", "SIGTERM")
    assert [d["via"] for d in data([(e.event, e.data) for e in events], "interrupt")] == [
        "turn/interrupt"
    ]
    assert summary.status == "retired"
    assert summary.retiredReason == "its turn did not stop within the grace period"
    assert not process_alive(body.childPid or 0)
