"""ACP `session/update` notifications as our `agent` events (the shapes codex.py emits).

| ACP update                          | ours                                                   |
|-------------------------------------|--------------------------------------------------------|
| agent_message_chunk                 | message {role: assistant, itemId, text} once complete; |
|                                     | delta {itemId, text} while it still grows              |
| agent_thought_chunk                 | left out (counted as `reasoning`)                      |
| tool_call                           | tool_call started {callId, name, summary, input?}      |
| tool_call_update                    | tool_output (new text); tool_call completed {status,   |
|                                     | output, exitCode?}; file_change for diffs              |
| plan                                | plan {items: [{text, done, status}]}                   |
| usage_update                        | folded into one usage event at the end of the turn     |
| user_message_chunk, commands, modes | left out; one `suppressed` event counts them by kind   |
| the prompt's response               | usage; then message {final: true}: the final answer    |

A message is complete when a chunk with another messageId, any other update, or the end of
the turn follows it. codex-acp 0.16 sends no messageId, so two assistant messages that follow
each other with nothing in between read as one.
"""

from __future__ import annotations

import json
import shlex
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from acp.schema import (
    AgentMessageChunk,
    AgentPlanUpdate,
    AgentThoughtChunk,
    ContentToolCallContent,
    FileEditToolCallContent,
    TextContentBlock,
    ToolCallProgress,
    ToolCallStart,
    Usage,
    UsageUpdate,
    UserMessageChunk,
)

from .base import EventItem
from .events import (
    agent_event,
    file_change_event,
    final_message_event,
    suppressed_events,
    tool_call_event,
)
from .text import SUMMARY_CHARS, WRAPPED_SHELLS, bounded, short

# Output fields agents put in a tool call's rawOutput, best first (codex-acp: shell commands).
_RAW_OUTPUT_KEYS = ("aggregated_output", "formatted_output", "output", "stdout")
# Updates that only describe the agent's UI state: counted, never stored.
_NOTICE_KINDS = {
    "available_commands_update",
    "current_mode_update",
    "config_option_update",
    "session_info_update",
}


@dataclass
class _Message:
    item_id: str
    parts: list[str] = field(default_factory=list)
    sent: int = 0  # parts already passed on in `delta` events


@dataclass
class _Call:
    call_id: str
    name: str
    summary: str
    kind: str | None
    raw_input: Any = None
    output_sent: int = 0
    changes: dict[str, str] = field(default_factory=dict)  # path -> add | update


class UpdateMapper:
    """Turns one session's updates into events; holds the state a turn needs."""

    def __init__(self, cwd: str) -> None:
        self.cwd = cwd.rstrip("/") or "/"
        self.suppressed: Counter[str] = Counter()
        self.messages: list[tuple[str, str]] = []  # (itemId, text) of completed messages
        self._open: _Message | None = None
        self._count = 0
        self._calls: dict[str, _Call] = {}
        self._context: dict[str, Any] | None = None

    # Updates ------------------------------------------------------------------------------

    def update(self, update: Any) -> list[EventItem]:
        """The events of one session/update (already parsed by the ACP library)."""
        if isinstance(update, AgentMessageChunk):
            return self._chunk(update)
        out = self.close_message()
        if isinstance(update, AgentThoughtChunk):
            self.suppressed["reasoning"] += 1
        elif isinstance(update, UserMessageChunk):
            self.suppressed["user_message"] += 1
        elif isinstance(update, ToolCallStart):
            out += self._tool_start(update)
        elif isinstance(update, ToolCallProgress):
            out += self._tool_progress(update)
        elif isinstance(update, AgentPlanUpdate):
            out.append(agent_event({"type": "plan", "items": _plan(update)}))
        elif isinstance(update, UsageUpdate):
            self._context = {"contextTokens": update.used, "contextWindow": update.size}
            if update.cost is not None:
                self._context["cost"] = {
                    "amount": update.cost.amount,
                    "currency": update.cost.currency,
                }
        else:
            kind = str(getattr(update, "session_update", None) or type(update).__name__)
            self.suppressed[kind if kind in _NOTICE_KINDS else "other"] += 1
        return out

    @property
    def growing(self) -> bool:
        """True while a message has text that no event carries yet."""
        return self._open is not None and self._open.sent < len(self._open.parts)

    def delta(self) -> list[EventItem]:
        """A `delta` with the text the open message gained since the last one."""
        message = self._open
        if message is None or message.sent == len(message.parts):
            return []
        text = "".join(message.parts[message.sent :])
        message.sent = len(message.parts)
        return [agent_event({"type": "delta", "itemId": message.item_id, "text": text})]

    def close_message(self) -> list[EventItem]:
        """The open message as a complete `message` event (none if it is blank)."""
        message, self._open = self._open, None
        if message is None:
            return []
        text = "".join(message.parts)
        if not text.strip():
            return []
        self.messages.append((message.item_id, text))
        return [
            agent_event(
                {"type": "message", "role": "assistant", "itemId": message.item_id, "text": text}
            )
        ]

    def end_turn(self, stop_reason: str, usage: Usage | None) -> list[EventItem]:
        """Events once the prompt is answered: the last message, usage, the final answer."""
        out = self.close_message()
        out += self._usage(usage)
        if stop_reason == "end_turn" and self.messages:
            item_id, text = self.messages[-1]
            out.append(final_message_event(item_id, text))
        return out

    def final_answer(self) -> str | None:
        """The text of the last complete assistant message."""
        return self.messages[-1][1] if self.messages else None

    def call(self, call_id: str) -> _Call | None:
        """A tool call that started and has not completed."""
        return self._calls.get(call_id)

    def summary_event(self) -> list[EventItem]:
        """One event counting what was left out, by kind."""
        return suppressed_events(self.suppressed)

    # Messages -----------------------------------------------------------------------------

    def _chunk(self, chunk: AgentMessageChunk) -> list[EventItem]:
        if not isinstance(chunk.content, TextContentBlock):
            self.suppressed[f"agent_message.{chunk.content.type}"] += 1
            return []
        out: list[EventItem] = []
        if self._open is not None and chunk.message_id and chunk.message_id != self._open.item_id:
            out = self.close_message()
        if self._open is None:
            self._count += 1
            self._open = _Message(chunk.message_id or f"msg-{self._count}")
        self._open.parts.append(chunk.content.text)
        return out

    # Tools --------------------------------------------------------------------------------

    def _tool_start(self, start: ToolCallStart) -> list[EventItem]:
        call = self._new_call(start.tool_call_id, start.kind, start.title, start.raw_input)
        out = [self._started(call)]
        out += self._progress(call, start.status, start.content, start.raw_output)
        return out

    def _tool_progress(self, update: ToolCallProgress) -> list[EventItem]:
        out: list[EventItem] = []
        call = self._calls.get(update.tool_call_id)
        if call is None:
            # An update may be the first we hear of a call.
            call = self._new_call(update.tool_call_id, update.kind, update.title, update.raw_input)
            out.append(self._started(call))
        elif update.raw_input is not None and call.raw_input is None:
            call.raw_input = update.raw_input
        return out + self._progress(call, update.status, update.content, update.raw_output)

    def _new_call(self, call_id: str, kind: str | None, title: str | None, raw: Any) -> _Call:
        name, summary = _describe(kind, title, raw)
        call = _Call(call_id, name, summary, kind, raw)
        self._calls[call_id] = call
        return call

    def _started(self, call: _Call) -> EventItem:
        tool_input = _tool_input(call.name, call.raw_input)
        extra = {"input": tool_input} if tool_input is not None else {}
        return tool_call_event("started", call.call_id, call.name, call.summary, **extra)

    def _progress(
        self, call: _Call, status: str | None, content: list[Any] | None, raw_output: Any
    ) -> list[EventItem]:
        out: list[EventItem] = []
        texts: list[str] = []
        for block in content or []:
            if isinstance(block, ContentToolCallContent) and isinstance(
                block.content, TextContentBlock
            ):
                texts.append(block.content.text)
            elif isinstance(block, FileEditToolCallContent):
                call.changes[self._relative(block.path)] = (
                    "add" if block.old_text is None else "update"
                )
        text = "\n".join(texts) or _raw_output_text(raw_output)
        if len(text) > call.output_sent:
            # Agents resend the whole output so far; pass on only what is new.
            new = text[call.output_sent :]
            call.output_sent = len(text)
            out.append(
                agent_event({"type": "tool_output", "callId": call.call_id, "text": bounded(new)})
            )
        if status not in ("completed", "failed"):
            return out
        del self._calls[call.call_id]
        done: dict[str, Any] = {"status": status, "output": bounded(text)}
        exit_code = raw_output.get("exit_code") if isinstance(raw_output, dict) else None
        if isinstance(exit_code, int):
            done["exitCode"] = exit_code
        out.append(tool_call_event("completed", call.call_id, call.name, call.summary, **done))
        if call.changes:
            changes = [{"path": p, "kind": k} for p, k in call.changes.items()]
            out.append(file_change_event(call.call_id, changes))
        return out

    def _relative(self, path: str) -> str:
        prefix = self.cwd + "/"
        return path[len(prefix) :] if path.startswith(prefix) else path

    # Usage --------------------------------------------------------------------------------

    def _usage(self, usage: Usage | None) -> list[EventItem]:
        data: dict[str, Any] = {"type": "usage"}
        if usage is not None:
            data.update(
                inputTokens=usage.input_tokens,
                cachedInputTokens=usage.cached_read_tokens,
                outputTokens=usage.output_tokens,
                reasoningOutputTokens=usage.thought_tokens,
                totalTokens=usage.total_tokens,
            )
        if self._context is not None:
            data.update(self._context)
        return [agent_event(data)] if len(data) > 1 else []


# Helpers ----------------------------------------------------------------------------------


def _plan(update: AgentPlanUpdate) -> list[dict[str, Any]]:
    return [
        {"text": entry.content, "done": entry.status == "completed", "status": entry.status}
        for entry in update.entries
    ]


def _describe(kind: str | None, title: str | None, raw: Any) -> tuple[str, str]:
    """(name, summary) of a tool call: `server.tool` for MCP, `shell` for commands."""
    if (
        isinstance(raw, dict)
        and isinstance(raw.get("server"), str)
        and isinstance(raw.get("tool"), str)
    ):
        name = f"{raw['server']}.{raw['tool']}"
        arguments = raw.get("arguments")
        preview = ""
        if isinstance(arguments, dict):
            preview = ", ".join(f"{k}={json.dumps(v)}" for k, v in arguments.items())
        return name, short(f"{name}({preview})", SUMMARY_CHARS)
    if kind == "execute":
        command = _command(raw)
        return "shell", short(command or title or "command", SUMMARY_CHARS)
    return kind or "tool", short(title or kind or "tool call", SUMMARY_CHARS)


def _tool_input(name: str, raw: Any) -> dict[str, Any] | None:
    """The part of a call's input worth showing: a command, or an MCP tool's arguments."""
    if not isinstance(raw, dict):
        return None
    if "server" in raw and "tool" in raw:
        return {"arguments": raw.get("arguments")}
    if name == "shell":
        command = _command(raw)
        return {"command": command} if command else None
    return None


def _command(raw: Any) -> str | None:
    """The command line of an execute call; `bash -lc 'make test'` reads as `make test`."""
    if not isinstance(raw, dict):
        return None
    command = raw.get("command")
    argv: list[str]  # a list command is checked to hold only strings
    if isinstance(command, list) and all(isinstance(a, str) for a in command):
        argv = command
    elif isinstance(command, str):
        try:
            argv = shlex.split(command)
        except ValueError:
            return command
    else:
        return None
    wrapped = argv[0].rsplit("/", 1)[-1] in WRAPPED_SHELLS if argv else False
    if len(argv) == 3 and wrapped and argv[1] in ("-c", "-lc", "-ic"):
        return argv[2]
    return shlex.join(argv) if isinstance(command, list) else command


def _raw_output_text(raw: Any) -> str:
    """Text output an agent put in rawOutput (codex-acp puts a command's output there)."""
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, dict):
        return ""
    for key in _RAW_OUTPUT_KEYS:
        if isinstance(raw.get(key), str) and raw[key]:
            return str(raw[key])
    content = raw.get("content")
    if isinstance(content, list):
        return "\n".join(
            str(c["text"])
            for c in content
            if isinstance(c, dict) and isinstance(c.get("text"), str)
        )
    return ""
