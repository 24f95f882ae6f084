"""A scripted OpenAI Responses API on 127.0.0.1, for driving the real Codex CLI offline.

The server answers `POST /v1/responses` (stream: true) with the SSE events Codex reads:
`response.created`, `response.output_item.added`, `response.output_text.delta`,
`response.output_item.done`, `response.completed` with usage. Each request takes the next
turn of a script; a turn is a list of output items, an HTTP error, or a response held open
until the test releases it. Every request body is recorded, so a test can check what the
model was shown (tool outputs, instructions, the prompt).

    with ResponsesServer() as server:
        server.script([FunctionCall("shell", {"command": ["echo", "hi"]})], [Message("done")])
        home = write_codex_home(tmp_path / "codex-home", server)
        ... run `codex exec` with CODEX_HOME=home and env server.env() ...
        server.function_outputs()  # what the shell tool returned to the model

The server itself (threads, script queue, held responses) is scripted_server.py's.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .scripted_server import Fail, Hold, ScriptedHandler, ScriptedServer, pieces

# The provider id written to config.toml, and the variable Codex reads its API key from.
PROVIDER_ID = "scripted"
API_KEY_ENV = "SCRIPTED_OPENAI_API_KEY"
# A dummy key: Codex refuses to call a provider whose env_key is unset.
DUMMY_API_KEY = "sk-scripted-dummy-key-0000"


@dataclass
class Message:
    """An assistant message; phase is Codex's `commentary` / `final_answer` marker."""

    text: str
    phase: str | None = None


@dataclass
class FunctionCall:
    """A call of one of the tools Codex offered (by name), with JSON arguments.

    Codex offers an MCP server's tools inside a `namespace` tool (`mcp__<server>`): a call of
    one of them names the tool and that namespace.
    """

    name: str
    arguments: dict[str, Any] | str
    call_id: str | None = None
    namespace: str | None = None


@dataclass
class CustomToolCall:
    """A call of a freeform tool with raw text input (Codex's `apply_patch` for known models)."""

    name: str
    input: str
    call_id: str | None = None


@dataclass
class Reasoning:
    """A reasoning item with a summary text (what Codex shows as `reasoning`).

    deltas=N streams the summary in N `response.reasoning_summary_text.delta` pieces
    first, as a thinking model does (the app-server passes each one on).
    """

    text: str
    deltas: int = 0


Item = Message | FunctionCall | CustomToolCall | Reasoning


@dataclass
class Disconnect:
    """Send `before` items, then drop the connection without response.completed."""

    before: list[Item] = field(default_factory=list)
    times: int | None = 1


Turn = list[Item] | Fail | Hold[Item] | Disconnect


class ResponsesServer(ScriptedServer[Turn]):
    """The scripted Responses API server; each request to /v1/responses takes the next turn."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(_Handler, host, port)
        self.paths: list[str] = []
        # Headers every model request must carry (a provider's key): else a 401, as a real
        # API answers a wrong key. What each request carried is kept in `seen_headers`.
        self.expect_headers: dict[str, str] = {}
        self.seen_headers: list[dict[str, str]] = []

    @property
    def base_url(self) -> str:
        """What Codex's provider `base_url` must be."""
        return f"http://127.0.0.1:{self.port}/v1"

    def env(self) -> dict[str, str]:
        """The environment a Codex child needs to reach this server (its dummy API key)."""
        return {API_KEY_ENV: DUMMY_API_KEY}

    # What the model saw -------------------------------------------------------------------

    def inputs(self) -> Iterator[dict[str, Any]]:
        """Every input item of every recorded request, in order."""
        for body in self.requests:
            for item in body.get("input") or []:
                if isinstance(item, dict):
                    yield item

    def function_outputs(self) -> list[str]:
        """The outputs of tool calls as the model received them."""
        outputs: list[str] = []
        for item in self.inputs():
            if item.get("type") in ("function_call_output", "custom_tool_call_output"):
                output = item.get("output")
                outputs.append(output if isinstance(output, str) else json.dumps(output))
        return outputs

    def user_texts(self) -> list[str]:
        """Texts of user messages in the last request (the prompt and any context)."""
        if not self.requests:
            return []
        texts: list[str] = []
        for item in self.requests[-1].get("input") or []:
            if isinstance(item, dict) and item.get("role") == "user":
                for part in item.get("content") or []:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        texts.append(part["text"])
        return texts

    def tool_names(self) -> list[str]:
        """Names of the tools Codex offered in the last request."""
        if not self.requests:
            return []
        names = []
        for tool in self.requests[-1].get("tools") or []:
            name = tool.get("name") or (tool.get("function") or {}).get("name")
            if name:
                names.append(str(name))
        return names

    # Internals ----------------------------------------------------------------------------

    def _exhausted(self) -> Turn:
        return Fail(400, "the scripted server has no turn left", code="script_exhausted")

    def _record(self, path: str, body: dict[str, Any]) -> None:
        with self._lock:
            self.paths.append(path)
            self.requests.append(body)


class _Handler(ScriptedHandler):
    scripted: ResponsesServer

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [], "models": []})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._json(400, {"error": {"message": "body is not JSON", "type": "invalid_request"}})
            return
        if not self.path.rstrip("/").endswith("/responses"):
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        sent = {name: self.headers.get(name, "") for name in self.scripted.expect_headers}
        with self.scripted._lock:
            self.scripted.seen_headers.append(sent)
        if sent != self.scripted.expect_headers:
            error = {
                "message": "Incorrect API key provided.",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }
            self._json(401, {"error": error})
            return
        self.scripted._record(self.path, body)
        self._answer(body)

    # Answers ------------------------------------------------------------------------------

    def _fail(self, fail: Fail) -> None:
        kind = {401: "invalid_request_error", 429: "rate_limit_exceeded"}.get(
            fail.status, "server_error"
        )
        error = {"message": fail.message, "type": kind, "code": fail.code or kind}
        self._json(fail.status, {"error": error})

    def _stream(self, body: dict[str, Any], turn: list[Item] | Hold[Item] | Disconnect) -> None:
        self._begin_stream()
        server = self.scripted
        response_id = server._new_id("resp")
        model = str(body.get("model") or "scripted-model")
        self._event(
            "response.created",
            {"response": {"id": response_id, "object": "response", "status": "in_progress"}},
        )
        index = itertools.count()
        items = turn if isinstance(turn, list) else turn.before
        try:
            for item in items:
                self._item(item, next(index))
            if isinstance(turn, Disconnect):
                # No terminating chunk: the client sees the body end mid-stream.
                self.close_connection = True
                return
            if isinstance(turn, Hold):
                turn.wait_released()
                for item in turn.after:
                    self._item(item, next(index))
            usage = {
                "input_tokens": 120,
                "input_tokens_details": {"cached_tokens": 20},
                "output_tokens": 30,
                "output_tokens_details": {"reasoning_tokens": 5},
                "total_tokens": 150,
            }
            self._event(
                "response.completed",
                {
                    "response": {
                        "id": response_id,
                        "object": "response",
                        "status": "completed",
                        "model": model,
                        "usage": usage,
                    }
                },
            )
            self._chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (canceled run)

    def _item(self, item: Item, output_index: int) -> None:
        ids = self.scripted._new_id
        if isinstance(item, Message):
            item_id = ids("msg")
            started: dict[str, Any] = {
                "type": "message",
                "id": item_id,
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            }
            done = {
                **started,
                "status": "completed",
                "content": [{"type": "output_text", "text": item.text, "annotations": []}],
            }
            if item.phase is not None:
                started["phase"] = done["phase"] = item.phase
            self._added(output_index, started)
            for piece in pieces(item.text):
                self._event(
                    "response.output_text.delta",
                    {
                        "item_id": item_id,
                        "output_index": output_index,
                        "content_index": 0,
                        "delta": piece,
                    },
                )
            self._done(output_index, done)
        elif isinstance(item, FunctionCall):
            arguments = (
                item.arguments if isinstance(item.arguments, str) else json.dumps(item.arguments)
            )
            call = {
                "type": "function_call",
                "id": ids("fc"),
                "call_id": item.call_id or ids("call"),
                "name": item.name,
                "arguments": arguments,
                "status": "completed",
            }
            if item.namespace is not None:
                call["namespace"] = item.namespace
            self._added(output_index, {**call, "status": "in_progress"})
            self._done(output_index, call)
        elif isinstance(item, CustomToolCall):
            custom = {
                "type": "custom_tool_call",
                "id": ids("ctc"),
                "call_id": item.call_id or ids("call"),
                "name": item.name,
                "input": item.input,
                "status": "completed",
            }
            self._added(output_index, {**custom, "status": "in_progress"})
            self._done(output_index, custom)
        else:
            reasoning = {
                "type": "reasoning",
                "id": ids("rs"),
                "summary": [{"type": "summary_text", "text": item.text}],
            }
            if item.deltas:
                self._added(output_index, {**reasoning, "summary": []})
                where = {"item_id": reasoning["id"], "output_index": output_index}
                part = {"type": "summary_text", "text": ""}
                self._event(
                    "response.reasoning_summary_part.added",
                    {**where, "summary_index": 0, "part": part},
                )
                size = -(-len(item.text) // item.deltas)
                for piece in pieces(item.text, size):
                    self._event(
                        "response.reasoning_summary_text.delta",
                        {**where, "summary_index": 0, "delta": piece},
                    )
            else:
                self._added(output_index, reasoning)
            self._done(output_index, reasoning)

    def _added(self, output_index: int, item: dict[str, Any]) -> None:
        self._event("response.output_item.added", {"output_index": output_index, "item": item})

    def _done(self, output_index: int, item: dict[str, Any]) -> None:
        self._event("response.output_item.done", {"output_index": output_index, "item": item})


def write_codex_home(
    home: Path,
    server: ResponsesServer,
    *,
    model: str = "gpt-5.5",
    sandbox_mode: str = "danger-full-access",
    approval_policy: str = "never",
    request_max_retries: int = 1,
    stream_max_retries: int = 1,
    extra_toml: str = "",
) -> Path:
    """A scratch CODEX_HOME whose config.toml points Codex at `server`; returns home.

    Nothing in it reaches the network: the provider is the scripted server, and the
    features that call home are switched off. Pass the child `server.env()` too.
    """
    home.mkdir(parents=True, exist_ok=True)
    config = f"""\
model = "{model}"
model_provider = "{PROVIDER_ID}"
approval_policy = "{approval_policy}"
sandbox_mode = "{sandbox_mode}"

[model_providers.{PROVIDER_ID}]
name = "Scripted Responses API"
base_url = "{server.base_url}"
wire_api = "responses"
env_key = "{API_KEY_ENV}"
request_max_retries = {request_max_retries}
stream_max_retries = {stream_max_retries}
stream_idle_timeout_ms = 60000
{extra_toml}"""
    (home / "config.toml").write_text(config, encoding="utf-8")
    return home
