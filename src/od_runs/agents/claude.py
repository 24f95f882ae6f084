"""The `claude` agent: Claude Code in print mode, its stream-json turned into our `agent` events.

Command line (in the run's cwd; the prompt on stdin, then stdin closed):

    claude -p --output-format stream-json --verbose --permission-mode MODE
           [--model MODEL] [--resume SESSION_ID] [--mcp-config FILE] [--allowedTools TOOLS]

The binary is `claude` on PATH, or OD_RUNS_CLAUDE_BIN. Claude Code reads its login and
settings from ~/.claude (or CLAUDE_CONFIG_DIR); the daemon passes the Anthropic variables,
CLAUDE_CONFIG_DIR and the proxy/TLS variables through when it has them.

Permissions follow the run's `approvalPolicy` (as for acp and codex-app-server; see
approvals.py). Nobody answers a prompt in print mode, so whatever would ask is denied; the
policy decides what never needs to ask:

| approvalPolicy | Claude Code flags                      | runs without asking                 |
|----------------|----------------------------------------|-------------------------------------|
| default        | acceptEdits, allowed: commands, reads  | edits inside cwd, any command,      |
|                |                                        | reads and fetches; no edit outside  |
| allow          | acceptEdits, allowed: every file tool  | edits anywhere too                  |
| deny           | default mode, nothing allowed          | only what Claude Code never asks    |
|                |                                        | about (reads and read-only commands |
|                |                                        | inside cwd)                         |

The tools of the run's tool bundle are always allowed: the caller handed them over to be
used. Claude Code's own settings (permissions.allow / deny) apply on top, as usual.

Claude Code stream-json -> `agent` event data (each `type` below is the data's "type"):

| Claude Code                            | ours                                                |
|----------------------------------------|-----------------------------------------------------|
| system init                            | session {threadId: session_id, resumed, model}      |
| system api_retry                       | status with retry {attempt, max}: progress only     |
| system permission_denied               | warning (the tool call itself fails, see below)     |
| system compact_boundary                | status "Conversation compacted"                     |
| assistant text block                   | message {role: assistant, itemId, text}             |
| assistant tool_use block               | tool_call started {callId, name, summary, input}    |
| user tool_result block                 | tool_call completed {status, output}; file_change   |
| result                                 | usage {tokens, costUsd}; message {final: true}      |
| result is_error, synthetic API error   | the run fails with a classified errorCode           |
| thinking, other system subtypes, …     | left out; one `suppressed` event counts them        |
| unknown message type, non-JSON line    | warning; the run goes on                            |

The final answer is the result's text (the last assistant text), never the progress messages
joined. A run in a conversation resumes the previous run's session with --resume; a session
Claude Code cannot find fails SESSION_RESUME_FAILED and never starts a new one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..failures import failure
from ..models import RunCreate, RunError, TokenUsage
from .base import EventItem
from .bundles import claude_mcp_config, enabled_servers, skipped_warnings
from .claude_errors import classify_result
from .claude_errors import int_or_none as _int
from .claude_tools import FILE_TOOLS, bounded_input, describe_tool, result_text, strip_tags
from .credentials import Credentials, claude_credentials
from .events import (
    agent_event,
    file_change_event,
    final_message_event,
    tool_call_event,
    warning_event,
)
from .fields import dict_field, list_field
from .jsonl import JsonLinesAdapter
from .process import NETWORK_ENV
from .text import bounded, relative, short

BINARY_ENV = "OD_RUNS_CLAUDE_BIN"
# approvalPolicy -> (--permission-mode, tools allowed without asking). acceptEdits lets
# edits (and file-writing commands) inside cwd through and refuses them outside.
_READS = ("Read", "Glob", "Grep", "WebFetch", "WebSearch")
_EDITS = ("Edit", "Write", "MultiEdit", "NotebookEdit")
PERMISSIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "default": ("acceptEdits", ("Bash", *_READS)),
    "allow": ("acceptEdits", ("Bash", *_READS, *_EDITS)),
    "deny": ("default", ()),
}
# What a Claude Code child inherits from the daemon besides the generic allowlist.
INHERITED_ENV = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_MODEL",
    "ANTHROPIC_CUSTOM_HEADERS",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "CLAUDE_CONFIG_DIR",
    "CLAUDE_CODE_USE_BEDROCK",
    "CLAUDE_CODE_USE_VERTEX",
    "CLAUDE_CODE_MAX_RETRIES",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
    "DISABLE_TELEMETRY",
    "API_TIMEOUT_MS",
    "NODE_EXTRA_CA_CERTS",
    *NETWORK_ENV,
)
# A daemon's child must not update itself halfway through a run.
DEFAULT_ENV = {"DISABLE_AUTOUPDATER": "1"}
# Claude Code prints nothing while the model thinks or a tool runs; half an hour of total
# silence means it is wedged, not busy.
IDLE_TIMEOUT_MS = 30 * 60 * 1000
# Message types that carry nothing a person needs to read; counted, never stored.
QUIET_TYPES = frozenset(
    {"stream_event", "rate_limit_event", "keep_alive", "tool_progress", "prompt_suggestion"}
)


class ClaudeAdapter(JsonLinesAdapter):
    """Drives `claude -p --output-format stream-json` and maps its messages."""

    agent_id = "claude"
    description = "Anthropic Claude Code (`claude -p`, stream-json), resumable per conversation"
    default_idle_timeout_ms = IDLE_TIMEOUT_MS
    takes_model = True
    has_sessions = True
    uuid_threads = True
    install_hint = (
        "install it with `npm install -g @anthropic-ai/claude-code`, or set OD_RUNS_CLAUDE_BIN"
    )
    agent_name = "Claude Code"
    object_noun = "a message"

    def __init__(self, request: RunCreate) -> None:
        super().__init__(request)
        self._resume = self.requested_thread("a Claude Code session id")
        self.permission_mode, self.allowed_tools = PERMISSIONS[request.approvalPolicy]
        self.session_id: str | None = None
        self.model: str | None = None
        self.result: dict[str, Any] | None = None
        self.api_error: dict[str, Any] | None = None
        self.retries = 0
        self._messages: list[tuple[str, str]] = []
        self._tools: dict[str, tuple[str, str, dict[str, Any]]] = {}
        self._denied: set[str] = set()
        self._config_dir: Path | None = None

    # Spawning -----------------------------------------------------------------------------

    def argv(self) -> list[str]:
        """claude -p --output-format stream-json --verbose … (the prompt goes to stdin)."""
        argv = [
            os.environ.get(BINARY_ENV) or "claude",
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--permission-mode",
            self.permission_mode,
        ]
        if self.request.model:
            argv += ["--model", self.request.model]
        if self._resume:
            argv += ["--resume", self._resume]
        config, skipped = claude_mcp_config(enabled_servers(self.request.toolBundle))
        self._notes = skipped_warnings(skipped)
        if config["mcpServers"]:
            argv += ["--mcp-config", str(self._write_mcp_config(config))]
        allowed = [*self.allowed_tools, *(f"mcp__{server}" for server in config["mcpServers"])]
        if allowed:
            argv += ["--allowedTools", ",".join(allowed)]
        return argv

    def env(self) -> dict[str, str]:
        """Claude Code's key, config and network settings from the daemon, then the run's env."""
        env = dict(DEFAULT_ENV)
        env.update({name: os.environ[name] for name in INHERITED_ENV if name in os.environ})
        env.update(self.provider_env())
        env.update(self.request.env)
        return env

    def credential_env(self) -> Credentials:
        """Bedrock, Vertex, Foundry and gateway settings (AWS_* included), and --pass-env."""
        return claude_credentials(self.request.env)

    def live_session(self) -> str | None:
        """The session Claude Code reported."""
        return self.session_id

    def cleanup(self) -> None:
        """Remove the private MCP config (it may hold the bundle's secrets)."""
        if self._config_dir is not None:
            shutil.rmtree(self._config_dir, ignore_errors=True)
            self._config_dir = None

    def _write_mcp_config(self, config: dict[str, Any]) -> Path:
        """The bundle as Claude Code's MCP config, in a file only the daemon's user can read.

        A file, not JSON on the command line: argv is visible to every user in `ps`.
        """
        self.cleanup()
        self._config_dir = Path(tempfile.mkdtemp(prefix="od-runs-claude-"))  # mode 0700
        path = self._config_dir / "mcp.json"
        # O_EXCL: never write through a file (or link) someone else put there.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(config, file)
        return path

    # Reading ------------------------------------------------------------------------------

    def translate_object(self, message: dict[str, Any]) -> list[EventItem]:
        """One message of Claude Code's stream-json as zero or more events."""
        kind = message["type"]
        if kind == "system":
            return self._system(message)
        if kind == "assistant":
            return self._assistant(message)
        if kind == "user":
            return self._user(message)
        if kind == "result":
            return self._result(message)
        if kind in QUIET_TYPES:
            self.suppressed[kind] += 1
            return []
        return self._unknown(kind, f"Claude Code sent a message of unknown type {kind!r}.")

    def _system(self, message: dict[str, Any]) -> list[EventItem]:
        subtype = str(message.get("subtype") or "")
        if subtype == "init":
            return self._init(message)
        if subtype == "api_retry":
            self.retries = _int(message.get("attempt")) or self.retries + 1
            status = message.get("error_status")
            why = f"HTTP {status}" if status else str(message.get("error") or "an error")
            attempt, most = self.retries, _int(message.get("max_retries"))
            return [
                agent_event(
                    {
                        "type": "status",
                        "text": f"Retrying after {why} (attempt {attempt}/{most})",
                        "retry": {"attempt": attempt, "max": most},
                    }
                )
            ]
        if subtype == "permission_denied":
            call_id = str(message.get("tool_use_id") or "")
            self._denied.add(call_id)
            text = str(message.get("message") or f"{message.get('tool_name')} was not allowed.")
            return [warning_event(f"Permission denied: {short(text, 300)}", callId=call_id)]
        if subtype == "compact_boundary":
            return [agent_event({"type": "status", "text": "Conversation compacted"})]
        self.suppressed[f"system.{subtype or 'unknown'}"] += 1
        return []

    def _init(self, message: dict[str, Any]) -> list[EventItem]:
        session = message.get("session_id")
        if not isinstance(session, str) or not session:
            return [warning_event("Claude Code started a session without an id.")]
        self.session_id = session
        self.model = str(message.get("model") or "") or None
        # Claude Code has read its MCP config by now: the secrets need not wait on disk.
        self.cleanup()
        resumed = self._resume is not None
        if resumed and session.lower() != str(self._resume).lower():
            self.fail_now(
                failure(
                    "SESSION_RESUME_FAILED",
                    f"Claude Code could not resume session {self._resume} and started a new "
                    "one instead; the run was stopped. Start a new conversation to continue "
                    "without it.",
                )
            )
        data: dict[str, Any] = {"type": "session", "threadId": session, "resumed": resumed}
        if self.model:
            data["model"] = self.model
        out = [agent_event(data)]
        failed = [
            str(s.get("name"))
            for s in message.get("mcp_servers") or []
            if isinstance(s, dict) and s.get("status") == "failed"
        ]
        if failed:
            out.append(warning_event(f"MCP server(s) failed to start: {', '.join(failed)}"))
        return out

    def _assistant(self, message: dict[str, Any]) -> list[EventItem]:
        body = dict_field(message, "message")
        content = list_field(body, "content")
        if message.get("is_api_error_message") or message.get("error"):
            # Claude Code's own stand-in for a failed API call: the result says it again.
            self.api_error = {
                "status": message.get("api_error_status"),
                "kind": message.get("error"),
                "text": " ".join(
                    str(b.get("text")) for b in content if isinstance(b, dict) and "text" in b
                ),
            }
            return []
        item_id = str(body.get("id") or message.get("uuid") or "")
        parent = message.get("parent_tool_use_id")
        out: list[EventItem] = []
        for block in content:
            if not isinstance(block, dict):
                continue
            block_type = str(block.get("type") or "")
            if block_type == "text":
                text = str(block.get("text") or "")
                if parent is None:
                    self._messages.append((item_id, text))
                data: dict[str, Any] = {"type": "message", "role": "assistant", "itemId": item_id}
                if parent:
                    data["parentCallId"] = parent
                out.append(agent_event({**data, "text": text}))
            elif block_type == "tool_use":
                out.append(self._tool_started(block, parent))
            elif block_type in ("thinking", "redacted_thinking"):
                self.suppressed["thinking"] += 1
            else:
                out += self._unknown(
                    f"block:{block_type}",
                    f"Claude Code sent a content block of unknown type {block_type!r}.",
                )
        return out

    def _tool_started(self, block: dict[str, Any], parent: Any) -> EventItem:
        call_id = str(block.get("id") or "")
        raw_name = str(block.get("name") or "tool")
        tool_input = dict_field(block, "input")
        name, summary = describe_tool(raw_name, tool_input, self.request.cwd)
        self._tools[call_id] = (raw_name, summary, tool_input)
        extra: dict[str, Any] = {"input": bounded_input(tool_input)}
        if parent:
            extra["parentCallId"] = parent
        return tool_call_event("started", call_id, name, summary, **extra)

    def _user(self, message: dict[str, Any]) -> list[EventItem]:
        body = dict_field(message, "message")
        content = body.get("content")
        if not isinstance(content, list):
            self.suppressed["user"] += 1
            return []
        out: list[EventItem] = []
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                out += self._tool_completed(block, message.get("tool_use_result"))
            else:
                self.suppressed["user"] += 1
        return out

    def _tool_completed(self, block: dict[str, Any], result: Any) -> list[EventItem]:
        call_id = str(block.get("tool_use_id") or "")
        raw_name, summary, tool_input = self._tools.pop(call_id, ("tool", "", {}))
        name, _ = describe_tool(raw_name, tool_input, self.request.cwd)
        output = result_text(block.get("content"))
        failed = bool(block.get("is_error"))
        status = "denied" if call_id in self._denied else "failed" if failed else "completed"
        extra: dict[str, Any] = {"status": status, "output": bounded(output)}
        if failed:
            extra["error"] = short(strip_tags(output), 500)
        out = [tool_call_event("completed", call_id, name, summary, **extra)]
        if not failed and raw_name in FILE_TOOLS and tool_input.get("file_path"):
            created = isinstance(result, dict) and result.get("type") == "create"
            change = {
                "path": relative(str(tool_input["file_path"]), self.request.cwd),
                "kind": "add" if created else "update",
            }
            out.append(file_change_event(call_id, [change]))
        return out

    def _result(self, message: dict[str, Any]) -> list[EventItem]:
        self.result = message
        out: list[EventItem] = []
        for denial in message.get("permission_denials") or []:
            call_id = str(denial.get("tool_use_id") or "") if isinstance(denial, dict) else ""
            if isinstance(denial, dict) and call_id not in self._denied:
                self._denied.add(call_id)
                out.append(
                    warning_event(f"Permission denied: {denial.get('tool_name')}", callId=call_id)
                )
        tokens = self.usage()
        if tokens is not None:
            out.append(
                agent_event(
                    {
                        "type": "usage",
                        "inputTokens": tokens.inputTokens,
                        "cachedInputTokens": tokens.cachedInputTokens,
                        "outputTokens": tokens.outputTokens,
                        "costUsd": message.get("total_cost_usd"),
                        "turns": message.get("num_turns"),
                        "durationMs": message.get("duration_ms"),
                    }
                )
            )
        if message.get("is_error"):
            return out
        final = self.final_answer()
        if final is not None:
            item_id, text = final
            out.append(final_message_event(item_id or None, text))
        return out

    def usage(self) -> TokenUsage | None:
        """Tokens of the whole run, from the result (every model request of it, summed).

        Anthropic counts cache reads and writes apart from input_tokens; inputTokens here
        includes them, as it does for the other agents, and cachedInputTokens is the reads.
        """
        usage = self.result.get("usage") if self.result is not None else None
        if not isinstance(usage, dict):
            return None
        fresh, read, written, output = (
            _int(usage.get(key)) or 0
            for key in (
                "input_tokens",
                "cache_read_input_tokens",
                "cache_creation_input_tokens",
                "output_tokens",
            )
        )
        return TokenUsage(
            inputTokens=fresh + read + written,
            cachedInputTokens=read,
            outputTokens=output,
            totalTokens=fresh + read + written + output,
        )

    def final_answer(self) -> tuple[str, str] | None:
        """(itemId, text): the result's text, else the last assistant text of the session."""
        text = self.result.get("result") if self.result is not None else None
        if isinstance(text, str) and text:
            item = next((i for i, t in reversed(self._messages) if t == text), "")
            return item, text
        return self._messages[-1] if self._messages else None

    # Ending -------------------------------------------------------------------------------

    def exit_error(self, returncode: int) -> RunError | None:
        """Success only with a result that is not an error and exit 0; else the closest kind."""
        if self.result is not None and self.result.get("is_error"):
            return self.classify(returncode)
        if returncode == 0:
            if self.result is not None:
                return None
            return failure(
                "AGENT_PROTOCOL_ERROR",
                "Claude Code exited without its result message; the run's outcome is unknown.",
            )
        if returncode < 0:
            return super().exit_error(returncode)
        if returncode == 127 and not self.saw_json:
            return failure(
                "AGENT_NOT_FOUND",
                f"Claude Code or its interpreter was not found (exit 127); {self.install_hint}.",
            )
        return self.classify(returncode)

    def classify(self, returncode: int) -> RunError:
        """The failure kind of a failed result (see claude_errors.py)."""
        return classify_result(
            self.result or {},
            self.api_error or {},
            returncode,
            stderr="\n".join(self.stderr_tail),
            resume=self._resume,
            session_id=self.session_id,
            retries=self.retries,
        )
