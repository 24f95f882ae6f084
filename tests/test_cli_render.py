"""How `od-runs tail`, `start --follow` and `ls` read to a person: plain text and on a terminal."""

from __future__ import annotations

import io
import os
import pty
import re
import subprocess
import sys
from typing import Any

from rich.console import Console

from od_runs.agents.demo_agent import session
from od_runs.models import Event, RunStatus, SessionEvent, SessionStatus
from od_runs.render import EventPrinter, runs_table, session_event_line, sessions_table
from od_runs.render_tty import TtyPrinter
from od_runs.render_tty import sessions_table as rich_sessions_table

from .conftest import RUN_DEADLINE, Daemon, wait_terminal
from .test_cli import cli_env

TS = "2026-11-21T10:00:00.000Z"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def as_events(*items: tuple[str, Any]) -> list[Event]:
    """Events with dense ids, as the daemon sends them."""
    return [
        Event(id=i, event=name, data=data, ts=TS) for i, (name, data) in enumerate(items, start=1)
    ]


def demo_run(prompt: str = "fix the tests", count: int = 30) -> list[Event]:
    """A whole demo run: start, the demo agent's real session, end."""
    return as_events(
        ("start", {"agentId": "demo", "pid": 4242}),
        *(("agent", item) for item in session(prompt, count)),
        ("end", {"status": "succeeded", "code": 0, "signal": None}),
    )


def status(state: str = "succeeded", last: int = 0) -> RunStatus:
    """A status body for a demo run in state."""
    return RunStatus(
        id="run-0123456789abcdef",
        agentId="demo",
        status=state,  # type: ignore[arg-type]
        createdAt=TS,
        updatedAt=TS,
        startedAt=TS,
        lastEventId=last,
        projectId="p-render",
    )


def plain(events: list[Event]) -> str:
    """What `tail` prints for events when stdout is not a terminal."""
    out = io.StringIO()
    printer = EventPrinter(out)
    for event in events:
        printer.print(event)
    printer.close()
    return out.getvalue()


def tty(events: list[Event], state: str = "succeeded") -> tuple[TtyPrinter, io.StringIO]:
    """A TtyPrinter on a recording 80-column colour console, fed events and closed."""
    raw = io.StringIO()
    console = Console(file=raw, force_terminal=True, record=True, width=80, color_system="standard")
    printer = TtyPrinter(status(state), console)
    for event in events:
        printer.print(event)
    printer.close()
    return printer, raw


def test_plain_output_joins_deltas_into_text_and_ends_with_the_answer_and_status() -> None:
    """Deltas become one paragraph, the tool call shows its command and output, the final
    answer comes after everything else, and the last line is the end status."""
    lines = plain(demo_run()).splitlines()
    assert lines[:3] == [
        "▶ started demo (pid 4242)",
        "… Working on: fix the tests",
        "I'll start by looking at the project layout, then make the change. ",
    ]
    assert lines[3:9] == [
        "$ ls",
        "  │ README.md",
        "  │ pyproject.toml",
        "  │ src/",
        "  │ tests/",
        "✓ shell (exit 0)",
    ]
    final = lines.index("── final answer ──")
    assert lines[final + 1].startswith("Done. I read the layout")
    assert lines[-1] == "■ succeeded (code 0)"
    assert final == len(lines) - 3


def test_plain_output_joins_split_lines_and_marks_stderr_and_errors() -> None:
    """A line the daemon split into partial pieces is printed whole; stderr is marked, and a
    failed run's error message stands before its end line."""
    text = plain(
        as_events(
            ("start", {"agentId": "command", "pid": 7}),
            ("stdout", {"text": "a very ", "partial": True}),
            ("stderr", {"text": "warning: careful"}),
            ("stdout", {"text": "long line"}),
            ("end", {"status": "failed", "code": 3, "errorCode": "AGENT_EXITED", "error": "boom"}),
        )
    )
    assert text.splitlines() == [
        "▶ started command (pid 7)",
        "stderr: warning: careful",
        "a very long line",
        "✗ boom",
        "■ failed (code 3, errorCode AGENT_EXITED)",
    ]


def test_a_tool_call_without_output_events_shows_its_output_and_failure() -> None:
    """A completed tool call carrying its own output prints it once; a non-zero exit is a ✗."""
    call = {"type": "tool_call", "callId": "c1", "name": "shell", "summary": "pytest -q"}
    text = plain(
        as_events(
            ("agent", {**call, "phase": "started"}),
            ("agent", {**call, "phase": "completed", "exitCode": 1, "output": "1 failed\n"}),
        )
    )
    assert text.splitlines() == ["$ pytest -q", "  │ 1 failed", "✗ shell (exit 1)"]


def test_json_output_is_one_event_per_line() -> None:
    """--json prints every event as the daemon sent it, one JSON object a line."""
    events = demo_run(count=8)
    out = io.StringIO()
    printer = EventPrinter(out, as_json=True)
    for event in events:
        printer.print(event)
    printer.close()
    assert [Event.model_validate_json(line) for line in out.getvalue().splitlines()] == events


def test_the_terminal_renderer_shows_the_same_run_with_colours_and_a_final_panel() -> None:
    """On a terminal: the same content, the tool command in cyan, stderr dimmed, errors in red,
    and the final answer in a panel before the green end line."""
    events = demo_run()[:-1] + as_events(
        ("stderr", {"text": "a warning"}),
        ("end", {"status": "failed", "code": 1, "errorCode": "AGENT_EXITED", "error": "boom"}),
    )
    events = [e.model_copy(update={"id": i}) for i, e in enumerate(events, start=1)]
    printer, _raw = tty(events)
    text = printer.console.export_text(clear=False)
    assert "▶ started demo (pid 4242)" in text
    assert "I'll start by looking at the project layout, then make the change." in text
    assert "$ ls" in text and "│ pyproject.toml" in text
    assert "╭─ final answer" in text
    lines = text.rstrip("\n").splitlines()
    assert lines[-2:] == ["✗ boom", "■ failed (code 1, errorCode AGENT_EXITED)"]
    styled = printer.console.export_text(styles=True)
    assert "\x1b[1;36m$ ls" in styled  # bold cyan tool call
    assert "\x1b[2ma warning" in styled  # dim stderr
    assert "\x1b[1;31m✗ boom" in styled  # bold red error
    assert "\x1b[1;31m■ failed" in styled


def test_the_terminal_renderer_does_not_interpret_agent_text_as_markup() -> None:
    """Brackets in agent output are printed as they are, not taken as rich markup."""
    printer, _raw = tty(as_events(("stdout", {"text": "[bold]not bold[/bold] [link=x]"})))
    assert "[bold]not bold[/bold] [link=x]" in printer.console.export_text()


def test_the_live_status_line_counts_events_while_the_run_is_active() -> None:
    """For an active run, a live line says status, agent, run id, events so far and elapsed."""
    raw = io.StringIO()
    console = Console(file=raw, force_terminal=True, width=100, color_system="standard")
    printer = TtyPrinter(status("running", last=2), console)
    try:
        for event in demo_run()[2:6]:
            printer.print(event)
        line = printer.status_line().plain
        assert line.startswith("running · demo · run-0123456789abcdef · 6 events · ")
        assert re.search(r"\d+:\d\d$", line)
    finally:
        printer.close()
    # The live line was drawn (and, being transient, taken down again).
    assert "6 events" in ANSI.sub("", raw.getvalue())


def test_a_finished_run_gets_no_live_line() -> None:
    """Replaying a finished run prints the events only: no spinner, no status line."""
    _printer, raw = tty(demo_run())
    assert " events · " not in raw.getvalue()


def test_ls_without_a_terminal_is_an_aligned_table() -> None:
    """A header and one line per run, each cell under its header."""
    runs = [status(), status("failed").model_copy(update={"id": "run-x", "errorCode": "BOOM"})]
    header, first, second = runs_table(runs).splitlines()
    assert header.split() == ["ID", "STATUS", "AGENT", "PROJECT/CONV", "CREATED", "EVENTS", "ERROR"]
    for line in (first, second):
        assert line[header.index("STATUS") :].split()[0] in ("succeeded", "failed")
        assert line[header.index("CREATED") :].startswith("2026-11-21 10:00:00")
    assert second[header.index("ERROR") :] == "BOOM"


def test_sessions_read_as_an_aligned_table_plainly_and_in_colour_on_a_terminal() -> None:
    """`sessions ls`: one line per session, cells under their headers, `-` for what a retired
    session no longer has; on a terminal the same cells, with the status coloured."""
    idle = SessionStatus(
        id="ses-0123456789abcdef",
        conversationId="conv-1",
        agentId="codex-app-server",
        status="idle",
        pid=4242,
        lastRunId="run-0123456789abcdef",
        lastTurnStatus="completed",
        createdAt=TS,
        updatedAt=TS,
    )
    retired = SessionStatus(
        id="ses-fedcba9876543210",
        agentId="codex-app-server",
        status="retired",
        createdAt=TS,
        updatedAt=TS,
    )
    header, first, second = sessions_table([idle, retired]).splitlines()
    assert header.split() == [
        "ID", "STATUS", "AGENT", "CONVERSATION", "PID", "LAST", "RUN", "TURN", "UPDATED"
    ]  # fmt: skip
    assert first[header.index("PID") :].split()[0] == "4242"
    assert second[header.index("CONVERSATION") :].split()[:2] == ["-", "-"]
    for line in (first, second):
        assert line[header.index("UPDATED") :] == "2026-11-21 10:00:00"
    raw = io.StringIO()
    console = Console(file=raw, force_terminal=True, width=140, color_system="standard")
    console.print(rich_sessions_table([idle, retired]))
    assert "\x1b[32midle" in raw.getvalue()  # green
    rows = [line.split() for line in ANSI.sub("", raw.getvalue()).splitlines()]
    assert rows == [header.split(), first.split(), second.split()]


def test_a_session_event_is_one_line_of_time_type_and_compact_data() -> None:
    """Bare words stay bare, text with spaces and structures are JSON, long values are cut."""
    line = session_event_line(
        SessionEvent(
            ts=TS,
            type="retired",
            data={"reason": "retired on request", "pid": 7, "extra": {"a": [1]}, "long": "x" * 500},
        )
    )
    assert line.startswith("2026-11-21 10:00:00  retired  ")
    assert 'reason="retired on request" pid=7 extra={"a": [1]} long=xxx' in line
    assert line.endswith("x…") and len(line) < 250 and "\n" not in line
    bare = session_event_line(SessionEvent(ts=TS, type="turn.started", data={"runId": "run-1"}))
    assert bare == "2026-11-21 10:00:00  turn.started    runId=run-1"


def run_on_tty(url: str, *args: str) -> tuple[int, str]:
    """Run `python -m od_runs ARGS` with stdout on a pseudo-terminal; exit code and output."""
    master, slave = pty.openpty()
    env = {**cli_env(url), "COLUMNS": "100", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "od_runs", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.DEVNULL,
    )
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
    return proc.wait(timeout=RUN_DEADLINE), b"".join(chunks).decode()


def test_tail_and_ls_on_a_terminal_use_colour_and_keep_the_exit_codes(shared: Daemon) -> None:
    """Check 5 on a terminal too: tail of a succeeded run exits 0, of a failed run 1; ls is a
    table with a bold header; the output carries colours."""
    good = shared.create(
        {"prompt": "tty", "projectId": "p-tty", "demo": {"events": 20, "fast": True}}
    )
    bad = shared.create(
        {"agentId": "command", "command": [sys.executable, "-c", "import sys; sys.exit(4)"]}
    )
    wait_terminal(shared, good["id"])
    wait_terminal(shared, bad["id"])
    code, out = run_on_tty(shared.url, "tail", good["id"])
    assert code == 0, out
    assert "\x1b[" in out
    text = ANSI.sub("", out)
    assert "▶ started demo" in text and "final answer" in text
    assert text.rstrip().endswith("■ succeeded (code 0)")
    code, out = run_on_tty(shared.url, "tail", bad["id"])
    assert code == 1, out
    assert "■ failed (code 4, errorCode AGENT_EXITED)" in ANSI.sub("", out)
    code, out = run_on_tty(shared.url, "ls", "--project", "p-tty")
    assert code == 0, out
    assert "\x1b[1m" in out  # the header is bold
    text = ANSI.sub("", out)
    assert "PROJECT/CONV" in text and good["id"] in text and "succeeded" in text


def agent_session() -> list[Event]:
    """A coding-agent run with every agent event type codex and claude emit."""
    return as_events(
        ("start", {"agentId": "claude", "pid": 99}),
        ("agent", {"type": "session", "threadId": "0199-abc", "resumed": True, "model": "opus"}),
        ("agent", {"type": "status", "text": "Retrying after HTTP 529 (attempt 1/2)"}),
        (
            "agent",
            {
                "type": "plan",
                "items": [
                    {"text": "read the code", "done": True},
                    {"text": "fix the bug", "done": False},
                ],
            },
        ),
        (
            "agent",
            {
                "type": "message",
                "role": "assistant",
                "itemId": "m1",
                "text": "Looking around first.",
            },
        ),
        (
            "agent",
            {
                "type": "tool_call",
                "phase": "started",
                "callId": "t1",
                "name": "Write",
                "summary": "write notes.md",
            },
        ),
        (
            "agent",
            {
                "type": "tool_call",
                "phase": "completed",
                "callId": "t1",
                "name": "Write",
                "summary": "write notes.md",
                "status": "completed",
                "output": "File created",
            },
        ),
        (
            "agent",
            {
                "type": "file_change",
                "callId": "t1",
                "changes": [
                    {"path": "notes.md", "kind": "add"},
                    {"path": "src/app.py", "kind": "update"},
                ],
            },
        ),
        (
            "agent",
            {
                "type": "tool_call",
                "phase": "started",
                "callId": "t2",
                "name": "Bash",
                "summary": "touch /etc/x",
            },
        ),
        ("agent", {"type": "warning", "text": "Permission denied: touch /etc/x", "callId": "t2"}),
        (
            "agent",
            {
                "type": "tool_call",
                "phase": "completed",
                "callId": "t2",
                "name": "Bash",
                "summary": "touch /etc/x",
                "status": "denied",
                "output": "needs approval",
            },
        ),
        (
            "agent",
            {
                "type": "usage",
                "inputTokens": 140,
                "cachedInputTokens": 20,
                "outputTokens": 30,
                "costUsd": 0.00108,
            },
        ),
        ("agent", {"type": "message", "role": "assistant", "final": True, "text": "All done."}),
        (
            "agent",
            {
                "type": "suppressed",
                "total": 3,
                "kinds": [
                    {"kind": "reasoning", "count": 2},
                    {"kind": "unknown", "count": 1},
                ],
            },
        ),
        ("end", {"status": "succeeded", "code": 0, "signal": None}),
    )


def test_plain_output_renders_every_agent_event_type_readably() -> None:
    """Session, retries, plan, messages, tool calls (a denied one as ✗), file changes, warnings,
    usage and the suppressed summary each read as a line of prose: no raw event data."""
    text = plain(agent_session())
    assert text.splitlines() == [
        "▶ started claude (pid 99)",
        "· session 0199-abc (resumed) · model opus",
        "… Retrying after HTTP 529 (attempt 1/2)",
        "plan:",
        "  ☑ read the code",
        "  ☐ fix the bug",
        "Looking around first.",
        "$ write notes.md",
        "  │ File created",
        "✓ Write",
        "± changed: add notes.md, update src/app.py",
        "$ touch /etc/x",
        "! Permission denied: touch /etc/x",
        "  │ needs approval",
        "✗ Bash (denied)",
        "· tokens: in 140 (20 cached), out 30 · $0.0011",
        "· 3 updates not shown (reasoning 2, unknown 1)",
        "── final answer ──",
        "All done.",
        "■ succeeded (code 0)",
    ]
    assert "agent: {" not in text and "'type'" not in text


def test_the_terminal_renderer_styles_the_agent_event_types() -> None:
    """On a terminal the same lines: warnings in yellow, a denied tool call in red, info dim."""
    printer, _raw = tty(agent_session())
    text = printer.console.export_text(clear=False)
    assert "· session 0199-abc (resumed) · model opus" in text
    assert "☑ read the code" in text and "± changed: add notes.md" in text
    assert "agent: {" not in text
    styled = printer.console.export_text(styles=True)
    assert "\x1b[33m! Permission denied" in styled  # yellow warning
    assert "\x1b[1;31m✗ Bash (denied)" in styled  # bold red failed tool call
    assert "\x1b[2m· tokens: in 140" in styled  # dim info line
