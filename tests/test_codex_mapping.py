"""The codex adapter's JSONL mapping and failure classification, one function at a time.

The lines are what `codex exec --json` 0.169 printed against tests/fakes/responses_server.py
(or, for item types the scripted model cannot provoke, Codex's documented shapes). These
unit tests come on top of the real-CLI tests in test_codex.py, never instead of them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from od_runs.agents.base import Failed
from od_runs.agents.codex import CodexAdapter
from od_runs.errors import BadRequest
from od_runs.models import RunCreate, SessionRef

from .agent_runs import error_of

THREAD = "01a1ffe0-6416-7063-b830-6ff82dfb6818"
OTHER_THREAD = "01a1ffe0-67bd-77d2-8c7d-0a7c6d16c774"
USAGE = {"input_tokens": 120, "cached_input_tokens": 20, "output_tokens": 30}


def line(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields})


def item(step: str, **fields: Any) -> str:
    return line(f"item.{step}", item=fields)


def message(item_id: str, text: str, phase: str | None = None) -> str:
    extra = {"phase": phase} if phase else {}
    return item("completed", id=item_id, type="agent_message", text=text, **extra)


def feed(adapter: CodexAdapter, *lines: str) -> list[dict[str, Any]]:
    """Run lines through translate() as one stdout batch; the data of the events."""
    events = adapter.translate("stdout", [(text, False) for text in lines])
    assert all(name == "agent" for name, _ in events)
    return [data for _, data in events]


def adapter(**fields: Any) -> CodexAdapter:
    return CodexAdapter(RunCreate(agentId="codex", prompt="hi", **fields))


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def final(events: list[dict[str, Any]]) -> str | None:
    texts = [e["text"] for e in events if e["type"] == "message" and e.get("final")]
    return texts[-1] if texts else None


# Command line ------------------------------------------------------------------------------


def test_argv_is_exec_json_with_model_and_resume_then_stdin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OD_RUNS_CODEX_BIN", raising=False)
    plain = adapter()
    assert plain.argv() == ["codex", "exec", "--json", "--skip-git-repo-check", "-"]
    resumed = adapter(model="gpt-5.5", sessionRef=SessionRef(threadId=THREAD))
    assert resumed.argv() == [
        "codex",
        "exec",
        "--json",
        "--skip-git-repo-check",
        "-m",
        "gpt-5.5",
        "resume",
        THREAD,
        "-",
    ]
    assert resumed.stdin() == b"hi"


def test_a_conversation_session_is_resumed_unless_the_run_names_its_own() -> None:
    conversation = adapter()
    conversation.resume(SessionRef(threadId=THREAD))
    assert conversation.argv()[-3:] == ["resume", THREAD, "-"]
    explicit = adapter(sessionRef=SessionRef(threadId=OTHER_THREAD))
    explicit.resume(SessionRef(threadId=THREAD))
    assert explicit.argv()[-3:] == ["resume", OTHER_THREAD, "-"]


def test_a_thread_id_that_is_not_a_uuid_is_refused() -> None:
    # Codex would treat it as a thread *name* and quietly start a new thread when absent.
    with pytest.raises(BadRequest, match="UUID"):
        adapter(sessionRef=SessionRef(threadId="my-thread"))


# Events ------------------------------------------------------------------------------------


def test_a_warning_before_the_thread_keeps_its_place() -> None:
    """Seed 001: an early top-level error is a warning, in order, and the run goes on."""
    codex = adapter()
    events = feed(
        codex,
        line("error", message="warning one"),
        line("thread.started", thread_id=THREAD),
        message("item_0", "ok"),
        line("turn.completed", usage=USAGE),
    )
    assert kinds(events) == ["warning", "session", "message", "usage", "message"]
    assert events[0]["text"] == "warning one"
    assert final(events) == "ok"
    assert error_of(codex.outcome(0)) is None
    assert codex.session_ref() == SessionRef(threadId=THREAD)


def test_reconnect_notices_are_progress_and_not_failures() -> None:
    """Seed 001: `Reconnecting... N/M` says which attempt; the turn still completes."""
    codex = adapter()
    events = feed(
        codex,
        line("error", message="Reconnecting... 1/5 (stream disconnected)"),
        line("error", message="Reconnecting... 2/5"),
        line("thread.started", thread_id=THREAD),
        message("item_0", "ok"),
        line("turn.completed", usage=USAGE),
    )
    retries = [e["retry"] for e in events if e["type"] == "status"]
    assert retries == [{"attempt": 1, "max": 5}, {"attempt": 2, "max": 5}]
    assert "warning" not in kinds(events)
    assert error_of(codex.outcome(0)) is None


def test_the_final_answer_prefers_the_final_answer_phase() -> None:
    codex = adapter()
    events = feed(
        codex,
        line("thread.started", thread_id=THREAD),
        message("item_0", "Working through the task.", "commentary"),
        message("item_1", "Done.", "final_answer"),
        message("item_2", "One more remark.", "commentary"),
        line("turn.completed", usage=USAGE),
    )
    assert final(events) == "Done."
    progress = [e for e in events if e["type"] == "message" and not e.get("final")]
    assert [e.get("phase") for e in progress] == ["commentary", "final_answer", "commentary"]


def test_without_phases_the_final_answer_is_the_last_message_never_a_concatenation() -> None:
    events = feed(
        adapter(),
        message("item_0", "first"),
        message("item_1", "second"),
        line("turn.completed", usage=USAGE),
    )
    assert final(events) == "second"


def test_unknown_items_and_lines_are_warnings_and_the_run_goes_on() -> None:
    """Seed 001: a collab_tool_call or a future item type never breaks the stream."""
    codex = adapter()
    collab = {"id": "item_0", "type": "collab_tool_call", "tool": "spawn_agent"}
    events = feed(
        codex,
        line("thread.started", thread_id=THREAD),
        "this is not json",
        line("item.started", item={**collab, "status": "in_progress"}),
        line("item.completed", item={**collab, "status": "completed"}),
        line("thread.renamed", name="x"),
        message("item_1", "ok"),
        line("turn.completed", usage=USAGE),
    )
    warnings = [e["text"] for e in events if e["type"] == "warning"]
    assert len(warnings) == 3  # one per unknown item (not per update), line, event type
    assert "collab_tool_call" in warnings[1]
    assert final(events) == "ok" and error_of(codex.outcome(0)) is None


def test_reasoning_is_suppressed_and_counted_in_one_summary() -> None:
    codex = adapter()
    events = feed(
        codex,
        item("started", id="r1", type="reasoning", text="secret thoughts"),
        item("completed", id="r1", type="reasoning", text="secret thoughts, done"),
        item("completed", id="r2", type="reasoning", text="more"),
        message("item_3", "ok"),
        line("turn.completed", usage=USAGE),
    )
    assert "secret" not in json.dumps(events)
    (summary,) = [data for _, data in codex.finish_events()]
    assert summary == {
        "type": "suppressed",
        "total": 3,
        "kinds": [{"kind": "reasoning", "count": 3}],
    }


def test_nothing_suppressed_means_no_summary() -> None:
    codex = adapter()
    feed(codex, message("item_0", "ok"), line("turn.completed", usage=USAGE))
    assert codex.finish_events() == []


def test_command_output_is_passed_on_once_as_it_grows() -> None:
    command = {"id": "item_0", "type": "command_execution", "command": "/bin/bash -lc 'make'"}
    events = feed(
        adapter(cwd="/w"),
        item("started", **command, aggregated_output="", status="in_progress"),
        item("updated", **command, aggregated_output="building\n", status="in_progress"),
        item("completed", **command, aggregated_output="building\ndone\n", exit_code=0),
    )
    assert kinds(events) == ["tool_call", "tool_output", "tool_output", "tool_call"]
    assert [e["text"] for e in events if e["type"] == "tool_output"] == ["building\n", "done\n"]
    assert events[0]["summary"] == "make" and events[0]["phase"] == "started"
    assert events[-1]["exitCode"] == 0 and events[-1]["output"] == "building\ndone\n"


def test_file_changes_mcp_calls_searches_and_plans_are_readable_tool_events() -> None:
    events = feed(
        adapter(cwd="/w"),
        item(
            "completed",
            id="f1",
            type="file_change",
            changes=[{"path": "/w/src/a.py", "kind": "update"}, {"path": "/w/b.md", "kind": "add"}],
            status="completed",
        ),
        item(
            "completed",
            id="m1",
            type="mcp_tool_call",
            server="notes",
            tool="append",
            arguments={"text": "hi"},
            result={"content": [{"type": "text", "text": "appended"}]},
            error=None,
            status="completed",
        ),
        item("started", id="w1", type="web_search", query="anyio cancel scopes"),
        item("completed", id="w1", type="web_search", query="anyio cancel scopes"),
        item(
            "updated",
            id="t1",
            type="todo_list",
            items=[{"text": "read", "completed": True}, {"text": "write", "completed": False}],
        ),
    )
    calls = [(e["phase"], e["name"], e["summary"]) for e in events if e["type"] == "tool_call"]
    assert calls == [
        ("started", "apply_patch", "update src/a.py, add b.md"),
        ("completed", "apply_patch", "update src/a.py, add b.md"),
        ("started", "notes.append", 'notes.append(text="hi")'),
        ("completed", "notes.append", 'notes.append(text="hi")'),
        ("started", "web_search", "search: anyio cancel scopes"),
        ("completed", "web_search", "search: anyio cancel scopes"),
    ]
    (change,) = [e for e in events if e["type"] == "file_change"]
    assert change["changes"] == [
        {"path": "src/a.py", "kind": "update"},
        {"path": "b.md", "kind": "add"},
    ]
    mcp_done = [e for e in events if e.get("name") == "notes.append"][-1]
    assert mcp_done["output"] == "appended"
    (plan,) = [e for e in events if e["type"] == "plan"]
    assert plan["items"] == [{"text": "read", "done": True}, {"text": "write", "done": False}]


def test_a_line_delivered_in_pieces_is_put_back_together() -> None:
    whole = message("item_0", "x" * 1000)
    pieces = [whole[i : i + 100] for i in range(0, len(whole), 100)]
    codex = adapter()
    events = codex.translate("stdout", [(p, True) for p in pieces[:-1]] + [(pieces[-1], False)])
    assert [data["text"] for _, data in events] == ["x" * 1000]


# Outcomes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message_text", "code", "retryable"),
    [
        (
            "unexpected status 401 Unauthorized: Incorrect API key provided, url: http://h/v1",
            "PROVIDER_AUTH_FAILED",
            False,
        ),
        ("exceeded retry limit, last status: 429 Too Many Requests", "PROVIDER_RATE_LIMITED", True),
        ("You've hit your usage limit. Try again later.", "PROVIDER_RATE_LIMITED", True),
        (
            "unexpected status 503 Service Unavailable: overloaded, url: http://h/v1",
            "PROVIDER_UNAVAILABLE",
            True,
        ),
        (
            "stream disconnected before completion: Transport error: error decoding response body",
            "PROVIDER_UNAVAILABLE",
            True,
        ),
        (
            "unexpected status 400 Bad Request: context_length_exceeded",
            "PROVIDER_REJECTED",
            False,
        ),
        ("the model refused for reasons of its own", "AGENT_EXITED", False),
    ],
)
def test_a_failed_turn_is_classified_by_its_message(
    message_text: str, code: str, retryable: bool
) -> None:
    codex = adapter()
    feed(
        codex,
        line("thread.started", thread_id=THREAD),
        line("error", message=message_text),
        line("turn.failed", error={"message": message_text}),
    )
    error = error_of(codex.outcome(1))
    assert error is not None
    assert (error.code, error.retryable) == (code, retryable)
    assert "\n" not in error.message


def test_stderr_helps_classify_but_never_reaches_the_error() -> None:
    """Seed 001: the user error says what happened; stderr's wording stays out of it."""
    codex = adapter()
    codex.translate(
        "stderr", [("Not inside a trusted directory and --skip-git-repo-check was not set", False)]
    )
    error = error_of(codex.outcome(1))
    assert error is not None and error.code == "AGENT_EXITED"
    assert error.message == "Codex exited with code 1."
    codex = adapter()
    codex.translate("stderr", [("Error: 401 Unauthorized: token expired for acct 42", False)])
    error = error_of(codex.outcome(1))
    assert error is not None and error.code == "PROVIDER_AUTH_FAILED"
    assert "acct 42" not in error.message and "codex login" in error.message


def test_exiting_without_turn_completed_is_a_protocol_error() -> None:
    codex = adapter()
    feed(codex, line("thread.started", thread_id=THREAD), line("turn.started"))
    error = error_of(codex.outcome(0))
    assert error is not None and error.code == "AGENT_PROTOCOL_ERROR"


def test_resume_that_starts_another_thread_stops_the_run() -> None:
    """Never silently a new thread: the adapter asks for the run to stop at once."""
    codex = adapter(sessionRef=SessionRef(threadId=THREAD))
    events = feed(codex, line("thread.started", thread_id=OTHER_THREAD))
    assert events[0] == {"type": "session", "threadId": OTHER_THREAD, "resumed": True}
    stop = codex.progress()
    assert isinstance(stop, Failed) and stop.error.code == "SESSION_RESUME_FAILED"
    assert error_of(codex.outcome(0)) == stop.error


def test_resume_of_a_missing_thread_is_classified_from_codex_stderr() -> None:
    codex = adapter(sessionRef=SessionRef(threadId=THREAD))
    codex.translate(
        "stderr",
        [(f"Error: thread/resume: thread/resume failed: no rollout found for {THREAD}", False)],
    )
    error = error_of(codex.outcome(1))
    assert error is not None and error.code == "SESSION_RESUME_FAILED"
    assert codex.session_ref() == SessionRef(threadId=THREAD)


def test_exit_127_before_any_event_means_codex_or_node_is_missing() -> None:
    codex = adapter()
    codex.translate("stderr", [("/usr/bin/env: 'node': No such file or directory", False)])
    error = error_of(codex.outcome(127))
    assert error is not None and error.code == "AGENT_NOT_FOUND"
