"""The `codex-app-server` agent: a run is one turn of a live `codex app-server` session.

sessions.py keeps one `codex app-server` process per conversation and talks JSON-RPC to it
over stdio (jsonrpc.py); this adapter speaks the protocol for one run: `initialize` and
`thread/start` / `thread/resume` when its run opens a session, then `turn/start` with the
prompt, and `turn/interrupt` when the run is canceled or stalls. The run ends on
`turn/completed`: status `completed` succeeds, `interrupted` is canceled, `failed` fails with
a classified errorCode (failures.py).

Notifications -> `agent` event data (each `type` below is the data's "type"):

| app-server                                   | ours                                          |
|----------------------------------------------|-----------------------------------------------|
| turn/started                                 | status "Turn started"                         |
| item/agentMessage/delta                      | text_delta {itemId, delta}: progress          |
| item/completed agentMessage (not streamed)   | message {role: assistant, itemId, text, phase}|
| item commandExecution                        | tool_call started; tool_output; completed     |
| item fileChange                              | tool_call started/completed; file_change      |
| item mcpToolCall, webSearch, dynamicToolCall | tool_call started / completed                 |
| item/commandExecution/outputDelta            | tool_output {callId, text}                    |
| turn/plan/updated                            | plan {items: [{text, done}]}                  |
| error (willRetry)                            | status with retry {attempt, max}              |
| error (final)                                | warning; turn/completed decides               |
| turn/completed                               | usage; message {final: true}: the answer      |
| reasoning, token usage, rate limits, status, | not stored; counted by method in one          |
| warnings, anything else                      | `suppressed` event per turn                   |

Requests from Codex (approvals) are answered by the run's `approvalPolicy`: `allow`,
`deny`, or `default`: allow a command or file change whose paths stay inside the run's cwd,
deny the rest. Each decision is an `approval` event; methods od-runs cannot answer get a
JSON-RPC error and a warning event.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import anyio

from .. import __version__
from ..failures import AgentFailure, failure
from ..models import RunCreate, RunError, TokenUsage
from .app_server_errors import classify_turn_error, lost_session_error
from .app_server_items import TOOL_ITEMS, describe_tool, tool_events
from .approvals import decide
from .base import EventItem, Failed, Going, SessionAdapter, TurnEnded
from .bundles import codex_mcp_servers, enabled_servers, skipped_warnings
from .codex import BINARY_ENV, IDLE_TIMEOUT_MS, INHERITED_ENV
from .codex_errors import RECONNECT
from .credentials import Credentials, codex_credentials
from .events import (
    agent_event,
    final_message_event,
    suppressed_events,
    warning_event,
)
from .fields import dict_field, list_field
from .jsonrpc import METHOD_NOT_FOUND, JsonRpcPeer, Notification, RpcError
from .text import bounded, one_line, short

# How long Codex may take to answer initialize, thread/start|resume, turn/start, interrupt.
RPC_TIMEOUT = 30.0
# A warm process must answer a ping this fast to be given the next turn.
PING_TIMEOUT = 5.0
# After a tool call finished, this much total silence means the agent is wedged: a model
# that is thinking streams reasoning, and anything at all resets the clock.
POST_TOOL_TIMEOUT_MS = 5 * 60 * 1000
# Notifications that show the agent is working (they end the post-tool quiet period).
PROGRESS = frozenset(
    {
        "item/started",
        "item/completed",
        "item/agentMessage/delta",
        "item/reasoning/summaryTextDelta",
        "item/reasoning/summaryPartAdded",
        "item/reasoning/textDelta",
        "item/commandExecution/outputDelta",
        "item/fileChange/outputDelta",
        "item/mcpToolCall/progress",
        "item/plan/delta",
        "turn/plan/updated",
    }
)
# Some Codex builds end a turn by writing this into the agent's text instead of turn/completed.
_ABORTED_MARKERS = ("<turn_aborted>", "<turn_aborted/>")


class CodexAppServerAdapter(SessionAdapter):
    """One turn on the conversation's `codex app-server` session."""

    agent_id = "codex-app-server"
    description = (
        "OpenAI Codex app-server: one live session per conversation, each run a turn "
        "(interruptible, resumes its thread after a restart)"
    )
    default_idle_timeout_ms = IDLE_TIMEOUT_MS
    default_post_tool_timeout_ms = POST_TOOL_TIMEOUT_MS
    takes_model = True
    has_sessions = True
    uuid_threads = True
    install_hint = "install it with `npm install -g @openai/codex`, or set OD_RUNS_CODEX_BIN"
    reads_config = True  # credential_env() reads config.toml

    def __init__(self, request: RunCreate) -> None:
        super().__init__(request)
        self._resume = self.requested_thread("a Codex thread id")
        # The bundle's servers go to Codex in thread/start or thread/resume (over the pipe,
        # never argv or a file); a run with another bundle gets a fresh process.
        self.mcp_servers, skipped = codex_mcp_servers(enabled_servers(request.toolBundle))
        self._notes = skipped_warnings(skipped)
        # Where the default approval policy draws the line.
        self.root = request.cwd or os.getcwd()
        self.thread_id: str | None = None
        self.turn_id: str | None = None
        # How the turn ended, once Codex said so (turn/completed); None while it runs.
        self._ended_as: str | None = None
        # Only chatter since a tool call finished (the post-tool watchdog's cue).
        self._after_tool = False
        self.turn_error: dict[str, Any] | None = None
        self.last_error: str | None = None
        self.retries = 0
        self.lost: RunError | None = None
        self.suppressed: Counter[str] = Counter()
        self._usage: TokenUsage | None = None
        self._messages: list[tuple[str, str, str | None]] = []
        self._started: set[str] = set()
        self._output_sent: dict[str, int] = {}
        self._items: dict[str, dict[str, Any]] = {}
        self._refused: set[str] = set()
        self._streamed: set[str] = set()

    # Spawning (once per session) ----------------------------------------------------------

    def argv(self) -> list[str]:
        """codex app-server (JSON-RPC on stdio)."""
        return [os.environ.get(BINARY_ENV) or "codex", "app-server"]

    def env(self) -> dict[str, str]:
        """Codex's home, key and network settings from the daemon, its provider's variables,
        then the run's own env."""
        env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
        env.update(self.provider_env())
        env.update(self.request.env)
        return env

    def credential_env(self) -> Credentials:
        """The variables of the provider config.toml selects (thread config sets none)."""
        return codex_credentials(self.request.env)

    def wanted_thread(self) -> str | None:
        """The thread this run asked to continue (sessionRef, or the conversation's last)."""
        return self._resume

    def live_session(self) -> str | None:
        """The thread this run's turn belongs to."""
        return self.thread_id

    def process_config(self) -> object:
        """The tool bundle's servers: Codex starts them with the thread."""
        return self.mcp_servers

    def notes(self) -> list[EventItem]:
        """Warnings for bundle servers Codex cannot start."""
        return self._notes

    async def open_session(self, peer: JsonRpcPeer, thread_id: str | None) -> str:
        """initialize, then thread/resume thread_id (never a new thread instead) or thread/start."""
        client = {"name": "od-runs", "title": "od-runs", "version": __version__}
        await peer.request("initialize", {"clientInfo": client}, RPC_TIMEOUT)
        await peer.notify("initialized")
        params: dict[str, Any] = {"cwd": self.request.cwd} if self.request.cwd else {}
        if self.request.model:
            params["model"] = self.request.model
        if self.mcp_servers:
            params["config"] = {"mcp_servers": self.mcp_servers}
        if thread_id is None:
            found = thread_of(await peer.request("thread/start", params, RPC_TIMEOUT))
            if found is None:
                raise AgentFailure(
                    failure("AGENT_PROTOCOL_ERROR", "Codex started a thread without an id.")
                )
            return found
        try:
            result = await peer.request(
                "thread/resume",
                {**params, "threadId": thread_id, "excludeTurns": True},
                RPC_TIMEOUT,
            )
        except RpcError as exc:
            raise AgentFailure(
                failure(
                    "SESSION_RESUME_FAILED",
                    f"Codex could not resume thread {thread_id} ({short(exc.message, 160)}); "
                    "no new thread was started. Start a new conversation to continue without it.",
                )
            ) from None
        found = thread_of(result)
        if found is not None and found.lower() != thread_id.lower():
            raise AgentFailure(
                failure(
                    "SESSION_RESUME_FAILED",
                    f"Codex answered thread/resume {thread_id} with another thread ({found}); "
                    "the session was retired. Start a new conversation to continue without it.",
                )
            )
        return thread_id

    # One turn -----------------------------------------------------------------------------

    async def ping(self, peer: JsonRpcPeer) -> None:
        """thread/loaded/list: cheap, harmless, and only a live process can answer it."""
        await peer.request("thread/loaded/list", {}, PING_TIMEOUT)

    async def start_turn(self, peer: JsonRpcPeer, thread_id: str) -> None:
        """turn/start with the prompt; a refusal fails the run with a classified kind."""
        self.thread_id = thread_id
        params: dict[str, Any] = {
            "threadId": thread_id,
            "input": [{"type": "text", "text": self.request.prompt}],
        }
        if self.request.cwd:
            params["cwd"] = self.request.cwd
        if self.request.model:
            params["model"] = self.request.model
        try:
            result = await peer.request("turn/start", params, RPC_TIMEOUT)
        except RpcError as exc:
            raise AgentFailure(self.classify({"message": exc.message})) from None
        turn = result.get("turn") if isinstance(result, dict) else None
        if isinstance(turn, dict) and isinstance(turn.get("id"), str) and self.turn_id is None:
            self.turn_id = turn["id"]

    async def abort_turn(self, peer: JsonRpcPeer, thread_id: str) -> None:
        """turn/interrupt: Codex stops the model and its tools and ends the turn."""
        if self.turn_id is None or self._ended_as is not None:
            return
        await peer.request(
            "turn/interrupt", {"threadId": thread_id, "turnId": self.turn_id}, RPC_TIMEOUT
        )

    def translate_batch(self, batch: list[Notification]) -> list[EventItem]:
        """A batch of notifications as events; noise is only counted."""
        out: list[EventItem] = []
        for note in batch:
            params = note.params if isinstance(note.params, dict) else {}
            out += self.translate_notification(note.method, params)
        return out

    def translate_notification(self, method: str, params: dict[str, Any]) -> list[EventItem]:
        """One notification as zero or more events."""
        if self._ended_as is not None or self._other_turn(method, params):
            self.suppressed[method] += 1
            return []
        if method in PROGRESS:
            self._after_tool = False
        if method == "turn/started":
            turn = params.get("turn")
            if self.turn_id is None and isinstance(turn, dict) and isinstance(turn.get("id"), str):
                self.turn_id = turn["id"]
            return [agent_event({"type": "status", "text": "Turn started"})]
        if method in ("item/started", "item/completed"):
            item = params.get("item")
            if not isinstance(item, dict):
                self.suppressed[method] += 1
                return []
            return self._item(method, item)
        if method == "item/agentMessage/delta":
            item_id = str(params.get("itemId") or "")
            self._streamed.add(item_id)
            delta = str(params.get("delta") or "")
            return [agent_event({"type": "text_delta", "itemId": item_id, "delta": delta})]
        if method in ("item/commandExecution/outputDelta", "item/fileChange/outputDelta"):
            item_id = str(params.get("itemId") or "")
            delta = str(params.get("delta") or "")
            self._output_sent[item_id] = self._output_sent.get(item_id, 0) + len(delta)
            return [agent_event({"type": "tool_output", "callId": item_id, "text": bounded(delta)})]
        if method == "item/mcpToolCall/progress":
            text = one_line(str(params.get("message") or ""))
            return [agent_event({"type": "status", "callId": params.get("itemId"), "text": text})]
        if method == "turn/plan/updated":
            steps = list_field(params, "plan")
            items = [
                {"text": str(s.get("step") or ""), "done": s.get("status") == "completed"}
                for s in steps
                if isinstance(s, dict)
            ]
            return [agent_event({"type": "plan", "items": items})]
        if method == "thread/tokenUsage/updated":
            self._add_usage(params.get("tokenUsage"))
        elif method == "error":
            return self._error(params)
        elif method == "turn/completed":
            return self._turn_completed(params)
        self.suppressed[method] += 1
        return []

    def _other_turn(self, method: str, params: dict[str, Any]) -> bool:
        """A notification of another thread or an earlier turn (late, after an interrupt)."""
        thread = params.get("threadId")
        if self.thread_id and isinstance(thread, str) and thread != self.thread_id:
            return True
        turn = params.get("turnId")
        if turn is None and isinstance(params.get("turn"), dict):
            turn = params["turn"].get("id")
        return bool(self.turn_id and isinstance(turn, str) and turn != self.turn_id)

    def _add_usage(self, usage: Any) -> None:
        # `last` is one model response; a turn with tool calls has several, so sum them.
        last = usage.get("last") if isinstance(usage, dict) else None
        if not isinstance(last, dict):
            return
        total = self._usage or TokenUsage()
        self._usage = TokenUsage(
            **{
                field: getattr(total, field) + int(last.get(field) or 0)
                for field in TokenUsage.model_fields
            }
        )

    def usage(self) -> TokenUsage | None:
        """Tokens of this turn (every model response of it, summed)."""
        return self._usage

    def _error(self, params: dict[str, Any]) -> list[EventItem]:
        error = dict_field(params, "error")
        message = str(error.get("message") or "")
        self.last_error = message or self.last_error
        if params.get("willRetry"):
            match = RECONNECT.match(message)
            data: dict[str, Any] = {"type": "status", "text": one_line(message) or "Retrying"}
            if match:
                self.retries = int(match.group(1))
                data["retry"] = {"attempt": int(match.group(1)), "max": int(match.group(2))}
            return [agent_event(data)]
        self.turn_error = error
        return [warning_event(one_line(message) or "Codex reported an error.")]

    def _turn_completed(self, params: dict[str, Any]) -> list[EventItem]:
        turn = dict_field(params, "turn")
        return self._end_turn(str(turn.get("status") or "failed"), turn.get("error"))

    def _end_turn(self, status: str, error: Any) -> list[EventItem]:
        self._ended_as = status
        if isinstance(error, dict):
            self.turn_error = error
        out: list[EventItem] = []
        if self._usage is not None:
            out.append(agent_event({"type": "usage", **self._usage.model_dump()}))
        final = self.final_answer()
        if status == "completed" and final is not None:
            item_id, text = final
            out.append(final_message_event(item_id, text))
        return out

    def final_answer(self) -> tuple[str, str] | None:
        """(itemId, text) of the last completed agentMessage, phase final_answer first."""
        finals = [m for m in self._messages if m[2] == "final_answer"]
        chosen = (finals or self._messages)[-1:]
        return (chosen[0][0], chosen[0][1]) if chosen else None

    # Items --------------------------------------------------------------------------------

    def _item(self, method: str, item: dict[str, Any]) -> list[EventItem]:
        kind = str(item.get("type") or "")
        item_id = str(item.get("id") or "")
        done = method == "item/completed"
        if kind == "agentMessage" and done:
            text = str(item.get("text") or "")
            phase = item.get("phase") if isinstance(item.get("phase"), str) else None
            if any(marker in text for marker in _ABORTED_MARKERS):
                return self._end_turn("interrupted", None)
            self._messages.append((item_id, text, phase))
            if item_id in self._streamed:
                return []  # its text_delta events carried it already (renderers join them)
            data: dict[str, Any] = {"type": "message", "role": "assistant", "itemId": item_id}
            if phase:
                data["phase"] = phase
            data["text"] = text
            return [agent_event(data)]
        if kind in TOOL_ITEMS:
            self._items[item_id] = item
            out = tool_events(
                done, item_id, kind, item, self.root, self._started, self._output_sent
            )
            if done:
                self._after_tool = True
            return out
        self.suppressed[f"{method}:{kind or 'unknown'}"] += 1
        return []

    # Approvals ----------------------------------------------------------------------------

    async def answer(self, method: str, params: Any) -> tuple[Any, list[EventItem]]:
        """Answer Codex's request with the run's approval policy; unknown ones with an error."""
        p = params if isinstance(params, dict) else {}
        policy = self.request.approvalPolicy
        # decide() resolves paths (symlinks) on disk: off the event loop. The reader waits
        # for this answer, so no notification changes self._items meanwhile.
        decision = await anyio.to_thread.run_sync(decide, policy, method, p, self.root, self._items)
        if decision is None:
            events: list[EventItem] = []
            if method not in self._refused:
                self._refused.add(method)
                events.append(
                    warning_event(f"Codex asked {method}, which od-runs does not answer.")
                )
            return RpcError(METHOD_NOT_FOUND, f"od-runs does not handle {method}"), events
        event = {
            "type": "approval",
            "method": method,
            "callId": decision.call_id,
            "summary": decision.summary,
            "decision": "allow" if decision.allowed else "deny",
            "policy": policy,
            "reason": decision.reason,
        }
        return decision.result, [agent_event(event)]

    # Ending -------------------------------------------------------------------------------

    def session_lost(self, garbage: str | None, returncode: int | None, stderr: str = "") -> None:
        """Remember why the turn cannot end normally: garbage, or a dead process."""
        self.lost = lost_session_error(garbage, returncode, stderr, self.credentials)

    def finish_events(self) -> list[EventItem]:
        """The turn's one summary of what was not stored, by method (never the text)."""
        return suppressed_events(self.suppressed)

    def progress(self) -> Going | Failed | TurnEnded:
        """Failed (stop now), TurnEnded once Codex ended the turn, else Going."""
        if self._stop_error is not None:
            return Failed(self._stop_error)
        if self._ended_as is not None:
            return TurnEnded(self._ended_as)
        return Going(after_tool=self._after_tool)

    def exit_error(self, returncode: int) -> RunError | None:
        """completed: None; failed: its classified error; no end at all: why."""
        status = self._ended_as
        if status == "completed":
            return None
        if status == "failed":
            return self.classify(self.turn_error)
        if self.lost is not None:
            return self.lost
        if status is None:
            return failure(
                "AGENT_PROTOCOL_ERROR",
                "The Codex app-server never finished the turn (no turn/completed).",
            )
        return failure("AGENT_EXITED", f"The turn ended as {status}.")

    def classify(self, error: dict[str, Any] | None) -> RunError:
        """The failure kind of a Codex turn error (see app_server_errors.py)."""
        return classify_turn_error(error, self.last_error, self.retries, self.credentials)


# Pure helpers -----------------------------------------------------------------------------


def thread_of(result: Any) -> str | None:
    """The thread id of a thread/start|resume answer (thread.id, or the older spellings)."""
    if not isinstance(result, dict):
        return None
    thread = dict_field(result, "thread")
    for candidate in (
        thread.get("id"),
        thread.get("sessionId"),
        result.get("threadId"),
        result.get("sessionId"),
    ):
        if isinstance(candidate, str) and candidate:
            return candidate
    return None


__all__ = ["CodexAppServerAdapter", "describe_tool", "thread_of"]
