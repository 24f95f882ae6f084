"""Events and statuses as a person reads them in a terminal."""

from __future__ import annotations

from typing import Any, TextIO

from .models import Event, RunStatus


def status_line(status: RunStatus) -> str:
    """One line per run: id, status, agent, project/conversation, created time, error."""
    where = "/".join(x for x in (status.projectId, status.conversationId) if x)
    parts = [status.id, f"{status.status:<9}", status.agentId, where or "-", status.createdAt]
    if status.errorCode:
        parts.append(status.errorCode)
    return "  ".join(parts)


class EventPrinter:
    """Prints a run's events readably: deltas joined into text, tools as short blocks."""

    def __init__(self, out: TextIO, *, as_json: bool = False) -> None:
        self._out = out
        self._json = as_json
        self._mid_line = False

    def _line(self, text: str) -> None:
        if self._mid_line:
            self._out.write("\n")
            self._mid_line = False
        self._out.write(text + "\n")

    def print(self, event: Event) -> None:
        """Render one event."""
        if self._json:
            self._out.write(event.model_dump_json() + "\n")
        else:
            self._render(event.event, event.data)
        self._out.flush()

    def _render(self, name: str, data: Any) -> None:
        data = data if isinstance(data, dict) else {"value": data}
        if name == "start":
            self._line(f"▶ started {data.get('agentId', '')} (pid {data.get('pid')})")
        elif name == "agent":
            self._agent(data)
        elif name in ("stdout", "stderr"):
            prefix = "" if name == "stdout" else "stderr: "
            self._line(prefix + str(data.get("text", "")))
        elif name == "error":
            self._line(f"✗ error: {data.get('message', data)}")
        elif name == "end":
            detail = ", ".join(
                f"{k} {data[k]}" for k in ("code", "signal", "errorCode") if data.get(k) is not None
            )
            self._line(f"■ {data.get('status')}" + (f" ({detail})" if detail else ""))
        else:
            self._line(f"{name}: {data}")

    def _agent(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "text_delta":
            self._out.write(str(data.get("delta", "")))
            self._mid_line = True
        elif kind == "tool_call" and data.get("phase") == "started":
            self._line(f"$ {data.get('summary') or data.get('name')}")
        elif kind == "tool_call":
            self._line(f"✓ {data.get('name')} (exit {data.get('exitCode')})")
        elif kind == "tool_output":
            for row in str(data.get("text", "")).rstrip("\n").splitlines():
                self._line(f"  │ {row}")
        elif kind == "message" and data.get("final"):
            self._line("── final answer ──")
            self._line(str(data.get("text", "")))
        elif kind == "status":
            self._line(f"… {data.get('text')}")
        else:
            self._line(f"agent: {data}")

    def close(self) -> None:
        """End a half-written line."""
        if self._mid_line:
            self._out.write("\n")
            self._mid_line = False
            self._out.flush()
