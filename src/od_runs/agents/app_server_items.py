"""How a `codex app-server` item reads as events: tool calls, their output and file changes.

Functions of an item (`item/started` / `item/completed` params) and of the turn's record of
what was passed on already; the `codex-app-server` adapter (app_server.py) owns that record.
"""

from __future__ import annotations

from typing import Any

from .base import EventItem
from .events import agent_event, file_change_event, tool_call_event
from .fields import list_field
from .text import bounded, command_summary, relative, short

# Tool item types, and the name our tool_call events give each.
TOOL_ITEMS = ("commandExecution", "fileChange", "mcpToolCall", "webSearch", "dynamicToolCall")


def tool_events(
    done: bool,
    item_id: str,
    kind: str,
    item: dict[str, Any],
    root: str,
    started_ids: set[str],
    output_sent: dict[str, int],
) -> list[EventItem]:
    """A tool item's events: tool_call started (once per item), then when it is done the
    output not yet passed on, tool_call completed and, for a file change, file_change.

    `started_ids` (the items announced) and `output_sent` (characters of output passed on
    per item) are the turn's, and are updated here.
    """
    name, summary, started, result = describe_tool(kind, item, root)
    out: list[EventItem] = []
    if item_id not in started_ids:
        started_ids.add(item_id)
        out.append(tool_call_event("started", item_id, name, summary, **started))
    if not done:
        return out
    if kind == "commandExecution":
        output = str(item.get("aggregatedOutput") or "")
        sent = output_sent.pop(item_id, 0)
        if len(output) > sent:
            out.append(
                agent_event(
                    {"type": "tool_output", "callId": item_id, "text": bounded(output[sent:])}
                )
            )
    status = str(item.get("status") or "completed")
    out.append(tool_call_event("completed", item_id, name, summary, status=status, **result))
    if kind == "fileChange":
        out.append(file_change_event(item_id, result["changes"]))
    return out


def describe_tool(
    kind: str, item: dict[str, Any], root: str
) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    """(name, summary, extra fields when started, extra fields when completed) of a tool item."""
    if kind == "commandExecution":
        command = str(item.get("command") or "")
        return (
            "shell",
            command_summary(command),
            {"input": {"command": command}},
            {
                "exitCode": item.get("exitCode"),
                "output": bounded(str(item.get("aggregatedOutput") or "")),
            },
        )
    if kind == "fileChange":
        raw = list_field(item, "changes")
        changes = []
        for change in raw:
            if not isinstance(change, dict):
                continue
            change_kind = change.get("kind")
            label = change_kind.get("type") if isinstance(change_kind, dict) else change_kind
            changes.append(
                {"path": relative(str(change.get("path") or ""), root), "kind": str(label or "")}
            )
        summary = ", ".join(f"{c['kind']} {c['path']}" for c in changes) or "edit files"
        return "apply_patch", short(summary, 160), {}, {"changes": changes}
    if kind in ("mcpToolCall", "dynamicToolCall"):
        server = str(item.get("server") or item.get("namespace") or "")
        tool = str(item.get("tool") or "")
        name = f"{server}.{tool}" if server else tool
        result: dict[str, Any] = {}
        error = item.get("error")
        if isinstance(error, dict) and error.get("message"):
            result["error"] = short(str(error["message"]), 500)
        content = (
            item.get("result", {}).get("content") if isinstance(item.get("result"), dict) else None
        )
        content = content if isinstance(content, list) else item.get("contentItems")
        if isinstance(content, list):
            texts = [str(c.get("text")) for c in content if isinstance(c, dict) and "text" in c]
            result["output"] = bounded("\n".join(texts))
        return (
            name,
            short(f"{name}()", 160),
            {"input": {"arguments": item.get("arguments")}},
            result,
        )
    query = str(item.get("query") or "")
    summary = f"search: {query}" if query else "web search"
    return "web_search", short(summary, 160), {"input": {"query": query}}, {}


__all__ = ["TOOL_ITEMS", "describe_tool", "tool_events"]
