"""Our `agent` events as the adapters build them: tool calls, the final answer, warnings…"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .base import EventItem


def agent_event(data: dict[str, Any]) -> EventItem:
    """An `agent` event carrying data."""
    return ("agent", data)


def final_message_event(item_id: str | None, text: str) -> EventItem:
    """The run's final answer: an assistant message marked final (no itemId if None)."""
    data: dict[str, Any] = {"type": "message", "role": "assistant", "final": True}
    if item_id is not None:
        data["itemId"] = item_id
    return agent_event({**data, "text": text})


def tool_call_event(phase: str, call_id: str, name: str, summary: str, **fields: Any) -> EventItem:
    """A tool call `started` or `completed`, with its other fields (input, status, output…)."""
    data = {"type": "tool_call", "phase": phase, "callId": call_id, "name": name}
    return agent_event({**data, "summary": summary, **fields})


def file_change_event(call_id: str, changes: list[dict[str, Any]]) -> EventItem:
    """The files a tool call changed, each {path, kind}."""
    return agent_event({"type": "file_change", "callId": call_id, "changes": changes})


def warning_event(text: str, **extra: Any) -> EventItem:
    """An `agent` warning: something a person should know, while the run goes on."""
    return agent_event({"type": "warning", "text": text, **extra})


def suppressed_events(counts: Counter[str]) -> list[EventItem]:
    """The one event that counts what was left out, by kind (never the text); none if nothing."""
    if not counts:
        return []
    kinds = [{"kind": k, "count": n} for k, n in sorted(counts.items())]
    return [agent_event({"type": "suppressed", "total": sum(counts.values()), "kinds": kinds})]
