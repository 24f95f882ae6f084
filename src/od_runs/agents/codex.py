"""The `codex` agent: `codex exec --json`, its JSONL turned into our `agent` events.

Command line (in the run's cwd; the prompt on stdin, then stdin closed):

    codex exec --json --skip-git-repo-check [-p PROFILE] [-m MODEL] [resume THREAD_ID] -

A run's tool bundle reaches Codex as a private config profile (PROFILE, see bundles.py):
its servers' secrets never appear on the command line, and the file is deleted as soon as
Codex has started its thread (or failed to).

The binary is `codex` on PATH, or OD_RUNS_CODEX_BIN. Codex reads its own config and login
from CODEX_HOME (default ~/.codex); the daemon passes CODEX_HOME, OPENAI_API_KEY and the
proxy/TLS variables through when it has them, and the variables the configured model provider
names (`env_key`, `env_http_headers`: see credentials.py); a run whose daemon lacks the
provider's `env_key` fails before the spawn (PROVIDER_CREDENTIALS_MISSING).

Codex JSONL -> `agent` event data (each `type` below is the data's "type"):

| Codex                                | ours                                                  |
|--------------------------------------|-------------------------------------------------------|
| thread.started                       | session {threadId, resumed}                           |
| turn.started                         | status "Turn started"                                 |
| item agent_message (completed)       | message {role: assistant, itemId, text, phase?}       |
| item command_execution               | tool_call started; tool_output; tool_call completed   |
| item file_change                     | tool_call started/completed (apply_patch); file_change|
| item mcp_tool_call, web_search       | tool_call started / completed                         |
| item todo_list                       | plan {items: [{text, done}]}                          |
| item error, top-level error          | warning (Codex carries on; turn.failed decides)       |
| top-level error "Reconnecting... N/M"| status with retry {attempt, max}: progress only       |
| turn.completed                       | usage; then message {final: true}: the final answer   |
| turn.failed                          | remembered; the run fails with a classified errorCode |
| item reasoning, message updates      | left out; one `suppressed` event counts them by kind  |
| unknown item or event, non-JSON line | warning; the run goes on                              |

The final answer is the last completed assistant message, preferring one whose phase is
`final_answer`; progress messages are never concatenated into it. Failures are classified
(see failures.py for the table) from Codex's own error messages; stderr is kept as a bounded
tail to help choose the kind, and never pasted into the error a user sees.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..failures import failure
from ..models import RunCreate, RunError
from .base import EventItem
from .bundles import (
    codex_profile,
    enabled_servers,
    remove_codex_profile,
    skipped_warnings,
    write_codex_profile,
)
from .codex_errors import (
    AUTH,
    HTTP_STATUS,
    MISSING_ENV,
    RATE,
    RECONNECT,
    RESUME_GONE,
    TOOL_SERVER,
    UNAVAILABLE,
    auth_failed_message,
    missing_env_failure,
)
from .credentials import Credentials, codex_credentials, codex_home
from .events import (
    agent_event,
    file_change_event,
    final_message_event,
    tool_call_event,
    warning_event,
)
from .fields import list_field
from .jsonl import JsonLinesAdapter
from .process import NETWORK_ENV
from .text import SUMMARY_CHARS, bounded, command_summary, one_line, relative, short

BINARY_ENV = "OD_RUNS_CODEX_BIN"
# What a Codex child inherits from the daemon besides the generic allowlist.
INHERITED_ENV = (
    "CODEX_HOME",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "CODEX_API_KEY",
    *NETWORK_ENV,
)
# Codex prints nothing while the model thinks or a command runs between its polls; half an
# hour of total silence means it is wedged, not busy.
IDLE_TIMEOUT_MS = 30 * 60 * 1000


class CodexAdapter(JsonLinesAdapter):
    """Drives `codex exec --json` and maps its events."""

    agent_id = "codex"
    description = "OpenAI Codex CLI (`codex exec --json`), resumable per conversation"
    default_idle_timeout_ms = IDLE_TIMEOUT_MS
    takes_model = True
    has_sessions = True
    uuid_threads = True
    install_hint = "install it with `npm install -g @openai/codex`, or set OD_RUNS_CODEX_BIN"
    agent_name = "Codex"
    reads_config = True  # credential_env() reads config.toml

    def __init__(self, request: RunCreate) -> None:
        super().__init__(request)
        self._resume = self.requested_thread("a Codex thread id")
        self.thread_id: str | None = None
        self.turn_completed = False
        self.turn_error: str | None = None
        self.last_error: str | None = None
        self.retries = 0
        self._messages: list[tuple[str, str, str | None]] = []
        self._started: set[str] = set()
        self._output_sent: dict[str, int] = {}
        # The tool-bundle profile written for this run: (CODEX_HOME, profile name).
        self._profile: tuple[Path, str] | None = None

    # Spawning -----------------------------------------------------------------------------

    def argv(self) -> list[str]:
        """codex exec --json --skip-git-repo-check [-p PROFILE] [-m MODEL] [resume ID] -"""
        argv = [os.environ.get(BINARY_ENV) or "codex", "exec", "--json", "--skip-git-repo-check"]
        profile = self._write_profile()
        if profile:
            argv += ["-p", profile]
        if self.request.model:
            argv += ["-m", self.request.model]
        if self._resume:
            argv += ["resume", self._resume]
        argv.append("-")
        return argv

    def env(self) -> dict[str, str]:
        """Codex's home, key and network settings from the daemon, its provider's variables,
        then the run's own env."""
        env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
        env.update(self.provider_env())
        env.update(self.request.env)
        return env

    def credential_env(self) -> Credentials:
        """The variables of the provider config.toml selects (our bundle profile sets none)."""
        return codex_credentials(self.request.env)

    def codex_home(self) -> Path:
        """The CODEX_HOME the child will use: its env's, else ~/.codex of its HOME."""
        inherited = {k: os.environ[k] for k in ("CODEX_HOME", "HOME") if k in os.environ}
        return codex_home({**inherited, **self.request.env})

    def _write_profile(self) -> str | None:
        """Write the tool bundle as a private Codex profile; its name, or None if empty."""
        self.cleanup()
        text, skipped = codex_profile(enabled_servers(self.request.toolBundle))
        self._notes = skipped_warnings(skipped)
        if not text:
            return None
        home = self.codex_home()
        name = write_codex_profile(home, text)
        self._profile = (home, name)
        return name

    def cleanup(self) -> None:
        """Remove the tool-bundle profile (it holds the bundle's secrets)."""
        if self._profile is not None:
            remove_codex_profile(*self._profile)
            self._profile = None

    def live_session(self) -> str | None:
        """The thread Codex reported."""
        return self.thread_id

    # Reading ------------------------------------------------------------------------------

    def translate_object(self, event: dict[str, Any]) -> list[EventItem]:
        """One event of `codex exec --json` as zero or more of ours."""
        kind = event["type"]
        if kind == "thread.started":
            return self._thread_started(event)
        if kind == "turn.started":
            return [agent_event({"type": "status", "text": "Turn started"})]
        if kind in ("item.started", "item.updated", "item.completed"):
            item = event.get("item")
            if not isinstance(item, dict):
                return [warning_event(f"Codex sent {kind} without an item.")]
            return self._item(kind.removeprefix("item."), item)
        if kind == "turn.completed":
            return self._turn_completed(event)
        if kind == "turn.failed":
            error = event.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            self.turn_error = str(message or self.last_error or "the turn failed")
            return [agent_event({"type": "status", "text": "Turn failed"})]
        if kind == "error":
            return self._error(str(event.get("message") or ""))
        return self._unknown(f"event:{kind}", f"Codex sent an event of unknown type {kind!r}.")

    def _thread_started(self, event: dict[str, Any]) -> list[EventItem]:
        # Codex has read its config by now: the bundle's secrets need not stay on disk.
        self.cleanup()
        thread = event.get("thread_id")
        if not isinstance(thread, str) or not thread:
            return [warning_event("Codex started a thread without an id.")]
        self.thread_id = thread
        resumed = self._resume is not None
        if resumed and thread.lower() != str(self._resume).lower():
            self.fail_now(
                failure(
                    "SESSION_RESUME_FAILED",
                    f"Codex could not resume thread {self._resume} and started a new one instead; "
                    "the run was stopped. Start a new conversation to continue without it.",
                )
            )
        return [agent_event({"type": "session", "threadId": thread, "resumed": resumed})]

    def _error(self, message: str) -> list[EventItem]:
        match = RECONNECT.match(message)
        if match:
            self.retries = int(match.group(1))
            self.last_error = message
            return [
                agent_event(
                    {
                        "type": "status",
                        "text": one_line(message),
                        "retry": {"attempt": int(match.group(1)), "max": int(match.group(2))},
                    }
                )
            ]
        self.last_error = message
        return [warning_event(one_line(message) or "Codex reported an error.")]

    def _turn_completed(self, event: dict[str, Any]) -> list[EventItem]:
        self.turn_completed = True
        out: list[EventItem] = []
        usage = event.get("usage")
        if isinstance(usage, dict):
            out.append(
                agent_event(
                    {
                        "type": "usage",
                        "inputTokens": usage.get("input_tokens"),
                        "cachedInputTokens": usage.get("cached_input_tokens"),
                        "outputTokens": usage.get("output_tokens"),
                        "reasoningOutputTokens": usage.get("reasoning_output_tokens"),
                    }
                )
            )
        final = self.final_answer()
        if final is not None:
            item_id, text = final
            out.append(final_message_event(item_id, text))
        return out

    def final_answer(self) -> tuple[str, str] | None:
        """(itemId, text) of the last completed assistant message, phase final_answer first."""
        finals = [m for m in self._messages if m[2] == "final_answer"]
        chosen = (finals or self._messages)[-1:] or None
        return (chosen[0][0], chosen[0][1]) if chosen else None

    # Items --------------------------------------------------------------------------------

    def _item(self, phase: str, item: dict[str, Any]) -> list[EventItem]:
        item_type = str(item.get("type") or "")
        item_id = str(item.get("id") or "")
        if item_type == "reasoning":
            self.suppressed["reasoning"] += 1
            return []
        if item_type == "agent_message":
            if phase != "completed":
                self.suppressed[f"agent_message.{phase}"] += 1
                return []
            text = str(item.get("text") or "")
            message_phase = item.get("phase") if isinstance(item.get("phase"), str) else None
            self._messages.append((item_id, text, message_phase))
            data: dict[str, Any] = {"type": "message", "role": "assistant", "itemId": item_id}
            if message_phase:
                data["phase"] = message_phase
            data["text"] = text
            return [agent_event(data)]
        if item_type == "command_execution":
            return self._command(phase, item_id, item)
        if item_type in ("file_change", "mcp_tool_call", "web_search"):
            return self._tool(phase, item_id, item_type, item)
        if item_type == "todo_list":
            entries = list_field(item, "items")
            plan = [
                {"text": str(e.get("text") or ""), "done": bool(e.get("completed"))}
                for e in entries
                if isinstance(e, dict)
            ]
            return [agent_event({"type": "plan", "itemId": item_id, "items": plan})]
        if item_type == "error":
            if phase != "completed":
                return []
            message = str(item.get("message") or "")
            self.last_error = message
            return [warning_event(one_line(message) or "Codex reported an error.")]
        return self._unknown(
            f"item:{item_id or item_type}",
            f"Codex sent an item of unknown type {item_type!r}; it is not shown.",
        )

    def _command(self, phase: str, item_id: str, item: dict[str, Any]) -> list[EventItem]:
        command = str(item.get("command") or "")
        summary = command_summary(command)
        out: list[EventItem] = []
        if item_id not in self._started:
            self._started.add(item_id)
            out.append(
                tool_call_event("started", item_id, "shell", summary, input={"command": command})
            )
        output = str(item.get("aggregated_output") or "")
        sent = self._output_sent.get(item_id, 0)
        if len(output) > sent:
            # Codex repeats the whole output so far; pass on only what is new.
            out.append(
                agent_event(
                    {
                        "type": "tool_output",
                        "callId": item_id,
                        "text": bounded(output[sent:]),
                    }
                )
            )
            self._output_sent[item_id] = len(output)
        if phase == "completed":
            self._output_sent.pop(item_id, None)
            status = str(item.get("status") or "completed")
            out.append(
                tool_call_event(
                    "completed",
                    item_id,
                    "shell",
                    summary,
                    status=status,
                    exitCode=item.get("exit_code"),
                    output=bounded(output),
                )
            )
        return out

    def _tool(
        self, phase: str, item_id: str, item_type: str, item: dict[str, Any]
    ) -> list[EventItem]:
        name, summary, extra = _describe_tool(item_type, item, self.request.cwd)
        out: list[EventItem] = []
        if item_id not in self._started:
            self._started.add(item_id)
            out.append(tool_call_event("started", item_id, name, summary, **extra["input"]))
        if phase != "completed":
            return out
        status = str(item.get("status") or "completed")
        out.append(
            tool_call_event("completed", item_id, name, summary, status=status, **extra["result"])
        )
        if item_type == "file_change":
            out.append(file_change_event(item_id, extra["changes"]))
        return out

    # Ending -------------------------------------------------------------------------------

    def exit_error(self, returncode: int) -> RunError | None:
        """Success only with turn.completed and exit 0; otherwise the most specific kind."""
        if self.turn_error is not None:
            return self.classify(self.turn_error, returncode)
        broken = TOOL_SERVER.search("\n".join(self.stderr_tail)) if returncode else None
        if broken is not None:
            return failure(
                "TOOL_SERVER_FAILED",
                f"Codex could not start tool server {broken.group(1)!r} from the run's "
                "toolBundle; check its command, args and env (or url), or disable it.",
            )
        if returncode == 0:
            if self.turn_completed:
                return None
            return failure(
                "AGENT_PROTOCOL_ERROR",
                "Codex exited without finishing its turn (no turn.completed event).",
            )
        if returncode < 0:
            return super().exit_error(returncode)
        if returncode == 127 and not self.saw_json:
            return failure(
                "AGENT_NOT_FOUND",
                f"Codex or its interpreter (node) was not found (exit 127); {self.install_hint}.",
            )
        return self.classify(self.last_error or "", returncode)

    def classify(self, message: str, returncode: int) -> RunError:
        """The failure kind of a Codex error message, with the stderr tail as a hint only."""
        hint = "\n".join(self.stderr_tail)
        status = HTTP_STATUS.search(message)
        http = f" (HTTP {status.group(1)})" if status else ""
        if self._resume is not None and self.thread_id is None and RESUME_GONE.search(hint):
            return failure(
                "SESSION_RESUME_FAILED",
                f"Codex could not resume thread {self._resume}: it no longer exists in "
                "CODEX_HOME. Start a new conversation to continue without it.",
            )
        for text in (message, hint):
            if not text:
                continue
            missing = MISSING_ENV.search(text)
            if missing:
                return missing_env_failure(missing.group(1), self.credentials)
            if AUTH.search(text):
                return failure("PROVIDER_AUTH_FAILED", auth_failed_message(http, self.credentials))
            if RATE.search(text):
                return failure(
                    "PROVIDER_RATE_LIMITED",
                    f"The model provider is rate limiting requests{http}. Wait, or check the "
                    "account's usage limits, then retry.",
                )
            if UNAVAILABLE.search(text):
                after = f" after {self.retries} retries" if self.retries else ""
                return failure(
                    "PROVIDER_UNAVAILABLE",
                    f"The model provider is unavailable{http}; Codex gave up{after}. Retry later.",
                )
            if status:
                return failure(
                    "PROVIDER_REJECTED",
                    f"The model provider rejected the request{http}: {short(message)}",
                )
        if self.turn_error is not None:
            return failure("AGENT_EXITED", f"Codex reported the turn failed: {short(message)}")
        return failure("AGENT_EXITED", f"Codex exited with code {returncode}.")


# Helpers ----------------------------------------------------------------------------------


def _describe_tool(
    item_type: str, item: dict[str, Any], cwd: str | None
) -> tuple[str, str, dict[str, Any]]:
    """(name, summary, {"input", "result", "changes"}) of a non-shell tool item."""
    if item_type == "file_change":
        raw = list_field(item, "changes")
        changes = [
            {"path": relative(str(c.get("path") or ""), cwd), "kind": str(c.get("kind") or "")}
            for c in raw
            if isinstance(c, dict)
        ]
        summary = ", ".join(f"{c['kind']} {c['path']}" for c in changes) or "edit files"
        return (
            "apply_patch",
            short(summary, SUMMARY_CHARS),
            {"input": {}, "result": {"changes": changes}, "changes": changes},
        )
    if item_type == "mcp_tool_call":
        server, tool = str(item.get("server") or ""), str(item.get("tool") or "")
        arguments = item.get("arguments")
        preview = ""
        if isinstance(arguments, dict):
            preview = ", ".join(f"{k}={json.dumps(v)}" for k, v in arguments.items())
        result: dict[str, Any] = {}
        error = item.get("error")
        if isinstance(error, dict) and error.get("message"):
            result["error"] = short(str(error["message"]), 500)
        content = (item.get("result") or {}).get("content") if item.get("result") else None
        if isinstance(content, list):
            texts = [str(c.get("text")) for c in content if isinstance(c, dict) and "text" in c]
            result["output"] = bounded("\n".join(texts))
        return (
            f"{server}.{tool}",
            short(f"{server}.{tool}({preview})", SUMMARY_CHARS),
            {"input": {"input": {"arguments": arguments}}, "result": result, "changes": []},
        )
    query = str(item.get("query") or "")
    return (
        "web_search",
        short(f"search: {query}" if query else "web search", SUMMARY_CHARS),
        {"input": {"input": {"query": query}}, "result": {}, "changes": []},
    )
