"""How Claude Code's tool calls read to a person: names, one-line summaries, bounded input.

Pure functions of a tool_use block's name and input, and of a tool_result's content; the
`claude` adapter (claude.py) turns them into `tool_call` events.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .text import SUMMARY_CHARS, relative, short

# How much of each string in a tool's input one event carries.
MAX_INPUT_CHARS = 2000
# Tools whose successful result is a change to a file (the input's file_path).
FILE_TOOLS = frozenset({"Write", "Edit", "MultiEdit", "NotebookEdit"})
# Tools that act on one file, and the verb that says what they do to it.
_FILE_VERBS = {
    "Read": "read",
    "Write": "write",
    "Edit": "edit",
    "MultiEdit": "edit",
    "NotebookEdit": "edit",
}


def bounded_input(value: Any) -> Any:
    """A tool's input with long strings (a whole file being written) cut short."""
    if isinstance(value, str) and len(value) > MAX_INPUT_CHARS:
        return f"{value[:MAX_INPUT_CHARS]}… ({len(value)} characters)"
    if isinstance(value, dict):
        return {k: bounded_input(v) for k, v in value.items()}
    if isinstance(value, list):
        return [bounded_input(v) for v in value]
    return value


def strip_tags(text: str) -> str:
    """`<tool_use_error>No such tool</tool_use_error>` reads as `No such tool`."""
    return re.sub(r"</?[a-z_]+>", "", text)


def result_text(content: Any) -> str:
    """A tool_result's content (a string, or text and image blocks) as text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict) and block.get("type") == "text":
                parts.append(str(block.get("text") or ""))
            elif isinstance(block, dict):
                parts.append(f"[{block.get('type')}]")
        return "\n".join(parts)
    return "" if content is None else json.dumps(content)


def describe_tool(name: str, tool_input: dict[str, Any], cwd: str | None) -> tuple[str, str]:
    """(name, one-line summary) of a tool call, as a person would describe it."""

    def arg(key: str) -> str:
        value = tool_input.get(key)
        return "" if value is None else str(value)

    if name.startswith("mcp__"):
        server, _, tool = name.removeprefix("mcp__").partition("__")
        shown = f"{server}.{tool}" if tool else server
        preview = ", ".join(f"{k}={json.dumps(v)}" for k, v in tool_input.items())
        return shown, short(f"{shown}({preview})", SUMMARY_CHARS)
    if name == "Bash":
        summary = arg("command")
    elif name in _FILE_VERBS:
        path = relative(arg("file_path") or arg("notebook_path"), cwd)
        summary = f"{_FILE_VERBS[name]} {path}"
    elif name in ("Glob", "Grep"):
        where = arg("path")
        summary = f"{name.lower()} {arg('pattern')}" + (
            f" in {relative(where, cwd)}" if where else ""
        )
    elif name == "WebFetch":
        summary = f"fetch {arg('url')}"
    elif name == "WebSearch":
        summary = f"search: {arg('query')}"
    elif name in ("Task", "Agent"):
        summary = f"agent: {arg('description') or arg('prompt')}"
    else:
        preview = ", ".join(f"{k}={json.dumps(v)}" for k, v in list(tool_input.items())[:3])
        summary = f"{name}({preview})"
    return name, short(summary or name, SUMMARY_CHARS)
