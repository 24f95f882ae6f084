"""Events and statuses as a person reads them in a terminal (plain text; see render_tty for rich).

`EventReader` decides *what* a person sees (deltas joined into paragraphs, split lines joined,
tool calls with their output, the final answer kept for the end); a sink decides *how*.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TextIO

from .models import Event, RunStatus, SessionEvent, SessionStatus

BlockKind = Literal[
    "start",
    "status",
    "text",
    "tool",
    "tool_done",
    "tool_failed",
    "output",
    "stdout",
    "stderr",
    "error",
    "final",
    "end",
    "info",
    "warning",
    "plan",
    "change",
    "other",
]


@dataclass(frozen=True, slots=True)
class Block:
    """One readable piece of a run: its kind, its text, and for `end` the final status."""

    kind: BlockKind
    text: str
    status: str | None = None


class Sink(Protocol):
    """Where a reader's output goes: streamed assistant text and whole blocks."""

    def delta(self, text: str) -> None:
        """A piece of the assistant paragraph being written."""

    def end_paragraph(self) -> None:
        """The paragraph written by delta() is complete."""

    def block(self, block: Block) -> None:
        """A complete piece of output."""


class Printer(Protocol):
    """What `od-runs tail` and `start --follow` feed events to."""

    def print(self, event: Event) -> None:
        """Render one event."""

    def flush(self) -> None:
        """Push out whatever is buffered."""

    def close(self) -> None:
        """Finish the output (half-written lines, live displays)."""


def short_time(iso: str | None) -> str:
    """An ISO-8601 timestamp to the second, as `2026-11-21 20:49:53`."""
    return iso[:19].replace("T", " ") if iso else "-"


def status_line(status: RunStatus) -> str:
    """One line per run: id, status, agent, project/conversation, created time, error."""
    where = "/".join(x for x in (status.projectId, status.conversationId) if x)
    parts = [status.id, f"{status.status:<9}", status.agentId, where or "-", status.createdAt]
    if status.errorCode:
        parts.append(status.errorCode)
    return "  ".join(parts)


RUN_COLUMNS = ("ID", "STATUS", "AGENT", "PROJECT/CONV", "CREATED", "EVENTS", "ERROR")


def run_row(status: RunStatus) -> tuple[str, ...]:
    """The cells of one run in `od-runs ls`, in RUN_COLUMNS order."""
    where = "/".join(x for x in (status.projectId, status.conversationId) if x)
    return (
        status.id,
        status.status,
        status.agentId,
        where or "-",
        short_time(status.createdAt),
        str(status.lastEventId),
        status.errorCode or "",
    )


def aligned(rows: list[tuple[str, ...]]) -> str:
    """Rows of cells as lines whose columns line up, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def runs_table(runs: list[RunStatus]) -> str:
    """`od-runs ls` without a terminal: a header and one aligned line per run."""
    return aligned([RUN_COLUMNS, *(run_row(run) for run in runs)])


SESSION_COLUMNS = ("ID", "STATUS", "AGENT", "CONVERSATION", "PID", "LAST RUN", "TURN", "UPDATED")


def session_row(session: SessionStatus) -> tuple[str, ...]:
    """The cells of one session in `od-runs sessions ls`, in SESSION_COLUMNS order."""
    return (
        session.id,
        session.status,
        session.agentId,
        session.conversationId or "-",
        str(session.pid) if session.pid is not None else "-",
        session.lastRunId or "-",
        session.lastTurnStatus or "-",
        short_time(session.updatedAt),
    )


def sessions_table(sessions: list[SessionStatus]) -> str:
    """`od-runs sessions ls` without a terminal: a header and one aligned line per session."""
    return aligned([SESSION_COLUMNS, *(session_row(s) for s in sessions)])


def session_line(session: SessionStatus) -> str:
    """One line per session: id, status, agent, conversation, thread, pid, why it retired."""
    parts = [
        session.id,
        f"{session.status:<7}",
        session.agentId,
        session.conversationId or "-",
        f"thread {session.threadId or '-'}",
    ]
    if session.pid is not None:
        parts.append(f"pid {session.pid}")
    if session.retiredReason and session.status == "retired":
        parts.append(f"({session.retiredReason})")
    return "  ".join(parts)


# A session event's data is small (ids, a pid, a reason); past this a value is cut short.
SESSION_VALUE_CHARS = 120


def session_event_line(event: SessionEvent) -> str:
    """`2026-11-21 20:49:53  turn.ended  runId=run-… status=completed`."""
    pairs = []
    for key, value in event.data.items():
        # Bare words stay bare; anything with spaces or structure is JSON, so pairs stay apart.
        bare = isinstance(value, str) and value != "" and not any(c.isspace() for c in value)
        text = value if bare else json.dumps(value, ensure_ascii=False)
        if len(text) > SESSION_VALUE_CHARS:
            text = text[: SESSION_VALUE_CHARS - 1] + "…"
        pairs.append(f"{key}={text}")
    # Padded to the longest type a session records (thread.resumed), so the data lines up.
    return "  ".join([short_time(event.ts), f"{event.type:<14}", " ".join(pairs)]).rstrip()


def end_summary(data: dict[str, Any]) -> str:
    """`succeeded (code 0)`, `failed (code 3, errorCode AGENT_EXITED)`, …"""
    detail = ", ".join(
        f"{k} {data[k]}" for k in ("code", "signal", "errorCode") if data.get(k) is not None
    )
    return f"{data.get('status')}" + (f" ({detail})" if detail else "")


# A completed tool call with one of these statuses did not do its job.
FAILED_TOOL_STATUSES = frozenset({"failed", "declined", "denied", "error"})


def session_text(data: dict[str, Any]) -> str:
    """`session 0199… (resumed) · model gpt-5.5`."""
    text = f"session {data.get('threadId') or data.get('sessionId') or '?'}"
    if data.get("resumed"):
        text += " (resumed)"
    if data.get("model"):
        text += f" · model {data['model']}"
    return text


def usage_text(data: dict[str, Any]) -> str:
    """`tokens: in 140 (20 cached), out 30, reasoning 5 · $0.0011`."""
    parts = []
    if data.get("inputTokens") is not None:
        cached = data.get("cachedInputTokens")
        parts.append(f"in {data['inputTokens']}" + (f" ({cached} cached)" if cached else ""))
    for key, label in (("outputTokens", "out"), ("reasoningOutputTokens", "reasoning")):
        if data.get(key) is not None:
            parts.append(f"{label} {data[key]}")
    text = "tokens: " + (", ".join(parts) or "n/a")
    cost = data.get("costUsd")
    if isinstance(cost, int | float):
        text += f" · ${cost:.4f}"
    return text


def suppressed_text(data: dict[str, Any]) -> str:
    """`12 updates not shown (reasoning 10, unknown 2)`."""
    kinds = ", ".join(
        f"{k.get('kind')} {k.get('count')}" for k in data.get("kinds") or [] if isinstance(k, dict)
    )
    return f"{data.get('total', 0)} updates not shown" + (f" ({kinds})" if kinds else "")


def plan_text(data: dict[str, Any]) -> str:
    """`plan:` and one `☑ done` / `☐ to do` line per item."""
    items = [i for i in data.get("items") or [] if isinstance(i, dict)]
    lines = [f"  {'☑' if i.get('done') else '☐'} {i.get('text', '')}" for i in items]
    return "\n".join(["plan:", *lines])


def changes_text(data: dict[str, Any]) -> str:
    """`changed: add notes.md, update src/app.py`."""
    changes = [c for c in data.get("changes") or [] if isinstance(c, dict)]
    listed = ", ".join(f"{c.get('kind', 'update')} {c.get('path', '?')}" for c in changes)
    return f"changed: {listed or 'files'}"


# Agent events shown as one informational line, by type.
INFO_LINES = {"session": session_text, "usage": usage_text, "suppressed": suppressed_text}


class EventReader:
    """Turns a run's events into what a person reads, handing it to a sink."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._in_paragraph = False
        self._partial: dict[str, list[str]] = {}
        self._final: str | None = None
        self._tool_output_seen: set[str] = set()

    def _emit(self, kind: BlockKind, text: str, status: str | None = None) -> None:
        if self._in_paragraph:
            self._sink.end_paragraph()
            self._in_paragraph = False
        self._sink.block(Block(kind, text, status))

    def feed(self, event: Event) -> None:
        """Read one event."""
        name, data = event.event, event.data
        data = data if isinstance(data, dict) else {"value": data}
        if name == "agent":
            self._agent(data)
        elif name in ("stdout", "stderr"):
            self._output(name, data)
        elif name == "start":
            self._emit("start", f"started {data.get('agentId', '')} (pid {data.get('pid')})")
        elif name == "error":
            self._emit("error", f"error: {data.get('message', data)}")
        elif name == "end":
            self._flush_partial()
            self._flush_final()
            if data.get("error"):
                self._emit("error", str(data["error"]))
            self._emit("end", end_summary(data), str(data.get("status")))
        else:
            self._emit("other", f"{name}: {data}")

    def _output(self, stream: str, data: dict[str, Any]) -> None:
        # A line longer than the daemon's piece size arrives as partial pieces: join them.
        pieces = self._partial.setdefault(stream, [])
        pieces.append(str(data.get("text", "")))
        if not data.get("partial"):
            del self._partial[stream]
            self._emit("stdout" if stream == "stdout" else "stderr", "".join(pieces))

    def _agent(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "text_delta":
            self._in_paragraph = True
            self._sink.delta(str(data.get("delta", "")))
        elif kind == "tool_call" and data.get("phase") == "started":
            self._emit("tool", str(data.get("summary") or data.get("name")))
        elif kind == "tool_call":
            self._tool_done(data)
        elif kind == "tool_output":
            self._tool_output_seen.add(str(data.get("callId")))
            self._emit("output", str(data.get("text", "")).rstrip("\n"))
        elif kind == "message" and data.get("final"):
            # Shown after everything else, just before the end line.
            self._final = str(data.get("text", ""))
        elif kind == "message":
            self._emit("text", str(data.get("text", "")))
        elif kind == "status":
            self._emit("status", str(data.get("text")))
        elif kind == "error":
            self._emit("error", f"error: {data.get('message', data)}")
        elif kind == "warning":
            self._emit("warning", str(data.get("text", "")))
        elif kind in INFO_LINES:
            self._emit("info", INFO_LINES[kind](data))
        elif kind == "plan":
            self._emit("plan", plan_text(data))
        elif kind == "file_change":
            self._emit("change", changes_text(data))
        else:
            self._emit("other", f"agent: {data}")

    def _tool_done(self, data: dict[str, Any]) -> None:
        output = data.get("output")
        if output and str(data.get("callId")) not in self._tool_output_seen:
            self._emit("output", str(output).rstrip("\n"))
        code = data.get("exitCode")
        status = data.get("status")
        failed = (
            data.get("phase") == "failed"
            or (code is not None and code != 0)
            or status in FAILED_TOOL_STATUSES
        )
        if code is not None:
            detail = f" (exit {code})"
        elif status and status != "completed":
            detail = f" ({status})"
        else:
            detail = ""
        self._emit("tool_failed" if failed else "tool_done", f"{data.get('name')}{detail}")

    def _flush_partial(self) -> None:
        for stream, pieces in list(self._partial.items()):
            del self._partial[stream]
            self._emit("stdout" if stream == "stdout" else "stderr", "".join(pieces))

    def _flush_final(self) -> None:
        if self._final is not None:
            final, self._final = self._final, None
            self._emit("final", final)

    def finish(self) -> None:
        """The stream ended: show whatever is still held back."""
        self._flush_partial()
        self._flush_final()
        if self._in_paragraph:
            self._sink.end_paragraph()
            self._in_paragraph = False


PLAIN_PREFIX: dict[str, str] = {
    "start": "▶ ",
    "status": "… ",
    "tool": "$ ",
    "tool_done": "✓ ",
    "tool_failed": "✗ ",
    "stderr": "stderr: ",
    "error": "✗ ",
    "end": "■ ",
    "info": "· ",
    "warning": "! ",
    "change": "± ",
}


class PlainSink:
    """Plain text for pipes and files: one prefix per kind, assistant text as it streams."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def delta(self, text: str) -> None:
        """Write assistant text as it comes."""
        self._out.write(text)

    def end_paragraph(self) -> None:
        """End the assistant paragraph's line."""
        self._out.write("\n")

    def block(self, block: Block) -> None:
        """Write one block with its prefix."""
        if block.kind == "output":
            self._out.write("".join(f"  │ {row}\n" for row in block.text.splitlines()))
        elif block.kind == "final":
            self._out.write(f"── final answer ──\n{block.text}\n")
        else:
            self._out.write(f"{PLAIN_PREFIX.get(block.kind, '')}{block.text}\n")


class EventPrinter:
    """Prints a run's events readably as plain text, or as JSON lines with as_json."""

    def __init__(self, out: TextIO, *, as_json: bool = False) -> None:
        self._out = out
        self._json = as_json
        self._reader = EventReader(PlainSink(out))

    def print(self, event: Event) -> None:
        """Render one event."""
        if self._json:
            self._out.write(event.model_dump_json() + "\n")
        else:
            self._reader.feed(event)

    def flush(self) -> None:
        """Push buffered output to the stream."""
        self._out.flush()

    def close(self) -> None:
        """Show what was held back and flush."""
        if not self._json:
            self._reader.finish()
        self._out.flush()
