"""What the scripted model servers share: a threaded HTTP server that answers from a script.

responses_server.py (OpenAI Responses API, for Codex) and anthropic_server.py (Anthropic
Messages API, for Claude Code) build on this: start and stop in a background thread, a
queue of scripted turns (a turn that fails may repeat), held responses a test releases,
recorded request bodies, and the JSON / server-sent-events answers of a request handler.
Each server adds its own routes and the wire format of its API.

Plain stdlib threads on purpose: the server must keep answering while a test blocks in
synchronous code (httpx polling a daemon), whatever event loop the test runs.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, Self, TypeVar

# How long a held response may stay open before the server gives up on the test.
MAX_HOLD_SECONDS = 120.0

T = TypeVar("T")
TurnT = TypeVar("TurnT")


@dataclass
class Fail:
    """Answer with an HTTP error; times=None repeats it for every request from now on.

    code is the error's `code` where the API has one (the Responses API does).
    """

    status: int
    message: str = "scripted failure"
    code: str | None = None
    times: int | None = 1


@dataclass
class Hold(Generic[T]):
    """Send `before` items, then keep the response open until release() (or close)."""

    before: list[T] = field(default_factory=list)
    after: list[T] = field(default_factory=list)
    reached: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def wait_reached(self, timeout: float = 30.0) -> None:
        """Block until a request is being held here; fail after timeout seconds."""
        if not self.reached.wait(timeout):
            raise AssertionError(f"no request reached the held response within {timeout} s")

    def release(self) -> None:
        """Let the held response finish (with the `after` items)."""
        self.released.set()

    def wait_released(self) -> None:
        """In the handler: say a request got here, then wait for release() (or give up)."""
        self.reached.set()
        self.released.wait(MAX_HOLD_SECONDS)


def pieces(text: str, size: int = 16) -> list[str]:
    """text in pieces of size characters, as a model streams it (one empty piece if none)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class ScriptedHandler(BaseHTTPRequestHandler):
    """A request handler bound to one scripted server, with its JSON and SSE answers."""

    protocol_version = "HTTP/1.1"
    scripted: Any

    def log_message(self, format: str, *args: Any) -> None:
        """Say nothing: keep test output clean."""

    def _answer(self, body: dict[str, Any]) -> None:
        """Answer a scripted request with the next turn: an HTTP error, or a stream."""
        turn = self.scripted._next_turn()
        if isinstance(turn, Fail):
            self._fail(turn)
        else:
            self._stream(body, turn)

    def _fail(self, fail: Fail) -> None:
        raise NotImplementedError

    def _stream(self, body: dict[str, Any], turn: Any) -> None:
        raise NotImplementedError

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _begin_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _event(self, kind: str, payload: dict[str, Any]) -> None:
        data = json.dumps({"type": kind, **payload})
        self._chunk(f"event: {kind}\ndata: {data}\n\n".encode())

    def _chunk(self, data: bytes) -> None:
        # Chunked transfer encoding: the length line, the data, CRLF; b"" ends the body.
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


class ScriptedServer(Generic[TurnT]):
    """A scripted server on 127.0.0.1; a context manager that starts and stops it.

    A subclass passes its handler class, and says what to answer once the script is used up.
    """

    def __init__(self, handler: type[ScriptedHandler], host: str, port: int) -> None:
        self._turns: deque[TurnT] = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._holds: list[Hold[Any]] = []
        self.requests: list[dict[str, Any]] = []
        bound = type("Handler", (handler,), {"scripted": self})
        self._httpd = _QuietServer((host, port), bound)
        self._thread: threading.Thread | None = None

    # Lifecycle ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self._httpd.server_address[1])

    def start(self) -> Self:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Release held responses and stop serving."""
        for hold in self._holds:
            hold.released.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Scripting ----------------------------------------------------------------------------

    def script(self, *turns: TurnT) -> None:
        """Append turns: each scripted request consumes the next one."""
        with self._lock:
            self._turns.extend(turns)
            self._holds += [t for t in turns if isinstance(t, Hold)]

    def pending(self) -> int:
        """How many scripted turns are still unused."""
        with self._lock:
            return len(self._turns)

    # Internals ----------------------------------------------------------------------------

    def _exhausted(self) -> TurnT:
        """The answer to a request once the script is used up."""
        raise NotImplementedError

    def _next_turn(self) -> TurnT:
        with self._lock:
            if not self._turns:
                return self._exhausted()
            turn = self._turns[0]
            # A failure turn may repeat: `times` more requests, or every one (None).
            times = getattr(turn, "times", 1)
            if times is None:
                return turn  # sticky: answers every request from now on
            if times > 1:
                turn.times -= 1  # type: ignore[attr-defined]
                return turn
            return self._turns.popleft()

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):04d}"


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (a canceled or killed agent) is business as usual here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)
