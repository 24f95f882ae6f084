"""A scripted Anthropic Messages API on 127.0.0.1, for driving the real Claude Code CLI offline.

The server answers `POST /v1/messages` (stream: true) with the SSE events Claude Code reads:
`message_start`, `content_block_start` / `content_block_delta` / `content_block_stop` for text
and tool_use blocks, `message_delta` with the stop reason and usage, `message_stop`. Each
request for the main conversation takes the next turn of a script; a turn is a list of
content blocks, an HTTP error, or a response held open until the test releases it. Every
request body is recorded, so a test can check what the model was shown (tool results, the
prompt, the earlier turns of a resumed session).

    with AnthropicServer() as server:
        server.script([ToolUse("Bash", {"command": "echo hi"})], [Text("done")])
        ... run `claude -p` with env server.env() ...
        server.tool_results()  # what the Bash tool returned to the model

Claude Code also sends small side requests (a one-word title for the session, token
counts); those never consume a scripted turn: they get a canned answer (see _is_side_request).

The server itself (threads, script queue, held responses) is scripted_server.py's.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .scripted_server import Fail, Hold, ScriptedHandler, ScriptedServer, pieces

# A dummy key: Claude Code refuses to start in print mode without some credential.
DUMMY_API_KEY = "sk-ant-scripted-dummy-key-0000"
# Usage every scripted turn reports.
USAGE = {
    "input_tokens": 120,
    "output_tokens": 30,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 20,
}
# Variables that keep Claude Code offline. Found by experiment (2.1.330): without the first,
# it opens connections to api.anthropic.com (metrics, event logging) whatever the base URL;
# DISABLE_TELEMETRY and DISABLE_ERROR_REPORTING alone do not stop them.
OFFLINE_ENV = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    # One retry, quickly: the failure tests must not sit through Claude Code's backoff.
    "CLAUDE_CODE_MAX_RETRIES": "1",
}


@dataclass
class Text:
    """An assistant text block."""

    text: str


@dataclass
class ToolUse:
    """A call of one of the tools Claude Code offered (by name), with JSON input."""

    name: str
    input: dict[str, Any]
    id: str | None = None


@dataclass
class Thinking:
    """An extended-thinking block (what Claude Code must never show)."""

    text: str


Block = Text | ToolUse | Thinking


Turn = list[Block] | Fail | Hold[Block]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class AnthropicServer(ScriptedServer[Turn]):
    """The scripted Messages API server; each main-conversation request takes the next turn."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(_Handler, host, port)
        self.side_requests: list[dict[str, Any]] = []
        # Every request as (method, path), side and unknown routes included.
        self.paths: list[tuple[str, str]] = []
        # The x-api-key / Authorization values the server was sent.
        self.credentials: list[str] = []
        # Hosts the child tried to reach through the proxy env() names (refused): the
        # traffic that would have left the machine.
        self.escapes: list[str] = []

    @property
    def base_url(self) -> str:
        """What ANTHROPIC_BASE_URL must be (Claude Code appends /v1/messages)."""
        return f"http://127.0.0.1:{self.port}"

    def env(self, api_key: str = DUMMY_API_KEY) -> dict[str, str]:
        """The environment a Claude Code child needs to reach this server and nothing else.

        This server is also the child's HTTP(S) proxy: it refuses every other host and
        records it in `escapes`.
        """
        proxy = {name: self.base_url for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")}
        return {
            "ANTHROPIC_BASE_URL": self.base_url,
            "ANTHROPIC_API_KEY": api_key,
            **OFFLINE_ENV,
            **proxy,
            "NO_PROXY": "127.0.0.1,localhost",
        }

    # What the model saw -------------------------------------------------------------------

    def messages(self, request: int = -1) -> list[dict[str, Any]]:
        """The `messages` of one recorded main request (the last by default)."""
        if not self.requests:
            return []
        return list(self.requests[request].get("messages") or [])

    def tool_results(self) -> list[str]:
        """The text of every tool_result block the model received, in order."""
        results: list[str] = []
        for block in _blocks(self.requests[-1:]):
            if block.get("type") == "tool_result":
                content = block.get("content")
                if isinstance(content, list):
                    content = "".join(
                        str(c.get("text", "")) for c in content if isinstance(c, dict)
                    )
                results.append(str(content))
        return results

    def texts(self, request: int = -1) -> list[str]:
        """Every text block (user and assistant) in one recorded request, in order."""
        if not self.requests:
            return []
        return [
            str(b["text"])
            for b in _blocks([self.requests[request]])
            if b.get("type") == "text" and isinstance(b.get("text"), str)
        ]

    def tool_names(self) -> list[str]:
        """Names of the tools Claude Code offered in the last main request."""
        if not self.requests:
            return []
        return [str(t.get("name")) for t in self.requests[-1].get("tools") or []]

    # Internals ----------------------------------------------------------------------------

    def _exhausted(self) -> Turn:
        return Fail(400, "the scripted server has no turn left")

    def _sticky_failure(self) -> Fail | None:
        with self._lock:
            turn = self._turns[0] if self._turns else None
            return turn if isinstance(turn, Fail) and turn.times is None else None

    def _record(self, method: str, path: str, credential: str) -> None:
        with self._lock:
            self.paths.append((method, path))
            if credential:
                self.credentials.append(credential)


def _blocks(requests: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for body in requests:
        for message in body.get("messages") or []:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                yield {"type": "text", "text": content}
            elif isinstance(content, list):
                yield from (b for b in content if isinstance(b, dict))


def _is_side_request(body: dict[str, Any]) -> bool:
    """A request Claude Code makes beside the conversation: no tools offered, no streaming.

    The main loop always offers tools (unless a run disables them all, which these tests
    never do) and always streams; the session-title and similar helpers do neither.
    """
    return not body.get("tools") or not body.get("stream")


class _Handler(ScriptedHandler):
    scripted: AnthropicServer

    def _credential(self) -> str:
        return self.headers.get("x-api-key") or self.headers.get("authorization") or ""

    def _escaping(self) -> bool:
        """A plain-HTTP request sent here as a proxy, for some other host: refuse it."""
        if not self.path.startswith(("http://", "https://")) or self.path.startswith(
            self.scripted.base_url + "/"
        ):
            return False
        with self.scripted._lock:
            self.scripted.escapes.append(self.path)
        self._json(403, _error_body(403, f"offline: {self.path} refused"))
        return True

    def do_GET(self) -> None:
        if self._escaping():
            return
        self.scripted._record("GET", self.path, self._credential())
        self._json(404, _error_body(404, f"no route {self.path}"))

    def do_CONNECT(self) -> None:
        with self.scripted._lock:
            self.scripted.escapes.append(self.path)
        self.close_connection = True
        self._json(403, _error_body(403, f"offline: {self.path} refused"))

    def do_HEAD(self) -> None:
        self.scripted._record("HEAD", self.path, self._credential())
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self._escaping():
            return
        path = self.path.split("?", 1)[0].rstrip("/")
        self.scripted._record("POST", path, self._credential())
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._json(400, _error_body(400, "body is not JSON"))
            return
        if path.endswith("/v1/messages/count_tokens"):
            self._json(200, {"input_tokens": 100})
            return
        if not path.endswith("/v1/messages"):
            self._json(404, _error_body(404, f"no route {path}"))
            return
        if _is_side_request(body):
            self.scripted.side_requests.append(body)
            sticky = self.scripted._sticky_failure()
            if sticky is not None:
                self._fail(sticky)
            elif body.get("stream"):
                self._stream(body, [Text("Scripted title")])
            else:
                self._json(200, self._message(body, [Text("Scripted title")]))
            return
        with self.scripted._lock:
            self.scripted.requests.append(body)
        self._answer(body)

    # Answers ------------------------------------------------------------------------------

    def _fail(self, fail: Fail) -> None:
        self._json(fail.status, _error_body(fail.status, fail.message))

    def _message(self, body: dict[str, Any], blocks: list[Block]) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for block in blocks:
            if isinstance(block, Text):
                content.append({"type": "text", "text": block.text})
            elif isinstance(block, Thinking):
                content.append({"type": "thinking", "thinking": block.text, "signature": "sig"})
            else:
                tool_id = block.id or self.scripted._new_id("toolu")
                content.append(
                    {"type": "tool_use", "id": tool_id, "name": block.name, "input": block.input}
                )
        return {
            "id": self.scripted._new_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": str(body.get("model") or "claude-scripted"),
            "content": content,
            "stop_reason": _stop_reason(blocks),
            "stop_sequence": None,
            "usage": USAGE,
        }

    def _stream(self, body: dict[str, Any], turn: list[Block] | Hold[Block]) -> None:
        self._begin_stream()
        message = {
            "id": self.scripted._new_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": str(body.get("model") or "claude-scripted"),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**USAGE, "output_tokens": 1},
        }
        blocks = turn if isinstance(turn, list) else turn.before
        index = itertools.count()
        try:
            self._event("message_start", {"message": message})
            for block in blocks:
                self._block(block, next(index))
            if isinstance(turn, Hold):
                turn.wait_released()
                for block in turn.after:
                    self._block(block, next(index))
                blocks = [*blocks, *turn.after]
            self._event(
                "message_delta",
                {
                    "delta": {"stop_reason": _stop_reason(blocks), "stop_sequence": None},
                    "usage": {"output_tokens": USAGE["output_tokens"]},
                },
            )
            self._event("message_stop", {})
            self._chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (canceled run)

    def _block(self, block: Block, index: int) -> None:
        if isinstance(block, Text):
            self._event(
                "content_block_start",
                {"index": index, "content_block": {"type": "text", "text": ""}},
            )
            for piece in pieces(block.text):
                self._event(
                    "content_block_delta",
                    {"index": index, "delta": {"type": "text_delta", "text": piece}},
                )
        elif isinstance(block, Thinking):
            self._event(
                "content_block_start",
                {"index": index, "content_block": {"type": "thinking", "thinking": ""}},
            )
            self._event(
                "content_block_delta",
                {"index": index, "delta": {"type": "thinking_delta", "thinking": block.text}},
            )
            self._event(
                "content_block_delta",
                {"index": index, "delta": {"type": "signature_delta", "signature": "c2ln"}},
            )
        else:
            start = {
                "type": "tool_use",
                "id": block.id or self.scripted._new_id("toolu"),
                "name": block.name,
                "input": {},
            }
            self._event("content_block_start", {"index": index, "content_block": start})
            for piece in pieces(json.dumps(block.input)):
                self._event(
                    "content_block_delta",
                    {"index": index, "delta": {"type": "input_json_delta", "partial_json": piece}},
                )
        self._event("content_block_stop", {"index": index})


def _error_body(status: int, message: str) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def _stop_reason(blocks: list[Block]) -> str:
    return "tool_use" if any(isinstance(b, ToolUse) for b in blocks) else "end_turn"
