"""JSON-RPC 2.0 over a child's stdio: one JSON object per line, in both directions.

The child may send requests too (Codex's approval prompts): each one is answered by
`on_request`, or with a -32601 error when nobody handles it. Notifications are handed over
in batches, one per chunk read from the pipe, so a burst costs one log write downstream.
A line that is not a JSON-RPC message closes the peer: a child that prints garbage on its
protocol channel cannot be trusted with the next message either.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream

from .lines import READ_SIZE, LineSplitter

log = logging.getLogger("od_runs.jsonrpc")

# Largest message we assemble: a turn's final notification carries every item of the turn.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
METHOD_NOT_FOUND = -32601
INTERNAL_ERROR = -32603


@dataclass(frozen=True, slots=True)
class Notification:
    """A message the child sent without an id."""

    method: str
    params: Any


class RpcError(Exception):
    """The error object of a JSON-RPC response (ours to send, or the child's answer)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} (JSON-RPC error {code})")
        self.code = code
        self.message = message
        self.data = data


class PeerClosed(Exception):
    """The child is gone (end of output, broken pipe) or broke the protocol."""


NotificationSink = Callable[[list[Notification]], None]
# (method, params) -> the result to send back; raise RpcError to send an error instead.
RequestHandler = Callable[[str, Any], Awaitable[Any]]


class _Pending:
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: Any = None
        self.error: Exception | None = None


class JsonRpcPeer:
    """Our end of a JSON-RPC connection to a child: requests out, everything else in."""

    def __init__(self, send: ByteSendStream) -> None:
        self._send = send
        self._send_lock = anyio.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self.on_notifications: NotificationSink = _ignore
        self.on_request: RequestHandler | None = None
        self.closed = anyio.Event()
        self.close_reason: str | None = None
        # Set when the peer closed because the child sent something that is not JSON-RPC.
        self.garbage: str | None = None

    # Reading ------------------------------------------------------------------------------

    async def serve(self, receive: ByteReceiveStream) -> None:
        """Read the child's messages until its output ends or turns to garbage."""
        splitter = LineSplitter()
        parts: list[str] = []
        size = 0
        try:
            while not self.closed.is_set():
                try:
                    chunk = await receive.receive(READ_SIZE)
                except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                    break
                batch: list[Notification] = []
                for text, partial in splitter.feed(chunk):
                    parts.append(text)
                    size += len(text)
                    if size > MAX_MESSAGE_BYTES:
                        self._broken(f"a message longer than {MAX_MESSAGE_BYTES} bytes")
                        return
                    if partial:
                        continue
                    line, parts, size = "".join(parts), [], 0
                    if line.strip() and not await self._dispatch(line, batch):
                        return
                if batch:
                    self.on_notifications(batch)
        finally:
            self._close("the agent closed its output")

    async def _dispatch(self, line: str, batch: list[Notification]) -> bool:
        """Handle one message; False once the peer closed over it."""
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            self._broken(line)
            return False
        method = message.get("method")
        if isinstance(method, str):
            if "id" not in message:
                batch.append(Notification(method, message.get("params")))
                return True
            # Notifications before a request are handled before it: the order is the child's.
            if batch:
                self.on_notifications(batch[:])
                batch.clear()
            await self._answer(message["id"], method, message.get("params"))
            return True
        if "id" in message and ("result" in message or "error" in message):
            self._resolve(message)
            return True
        self._broken(line)
        return False

    def _resolve(self, message: dict[str, Any]) -> None:
        pending = self._pending.get(message["id"]) if isinstance(message["id"], int) else None
        if pending is None:
            log.debug("a response to no pending request: %.200s", message)
            return
        error = message.get("error")
        if error is not None:
            if isinstance(error, dict):
                pending.error = RpcError(
                    int(error.get("code") or INTERNAL_ERROR),
                    str(error.get("message") or "error"),
                    error.get("data"),
                )
            else:
                pending.error = RpcError(INTERNAL_ERROR, str(error))
        else:
            pending.result = message.get("result")
        pending.done.set()

    async def _answer(self, request_id: Any, method: str, params: Any) -> None:
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id}
        try:
            if self.on_request is None:
                raise RpcError(METHOD_NOT_FOUND, f"method not found: {method}")
            reply["result"] = await self.on_request(method, params)
        except RpcError as exc:
            reply["error"] = {"code": exc.code, "message": exc.message}
        except Exception:
            log.exception("answering %s failed", method)
            reply["error"] = {"code": INTERNAL_ERROR, "message": "internal error in od-runs"}
        # A closed peer is fine here: the reader notices the end of the stream next.
        with contextlib.suppress(PeerClosed):
            await self._write(reply)

    # Writing ------------------------------------------------------------------------------

    async def request(self, method: str, params: Any, timeout: float) -> Any:
        """Send a request and return its result; RpcError, PeerClosed or TimeoutError."""
        if self.closed.is_set():
            raise PeerClosed(self.close_reason or "closed")
        request_id = next(self._ids)
        pending = _Pending()
        self._pending[request_id] = pending
        try:
            await self._write(
                {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
            )
            with anyio.fail_after(timeout):
                await pending.done.wait()
        finally:
            self._pending.pop(request_id, None)
        if pending.error is not None:
            raise pending.error
        return pending.result

    async def notify(self, method: str, params: Any = None) -> None:
        """Send a notification."""
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        await self._write(message)

    async def _write(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        async with self._send_lock:
            if self.closed.is_set():
                raise PeerClosed(self.close_reason or "closed")
            try:
                await self._send.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                self._close(f"cannot write to the agent ({type(exc).__name__})")
                raise PeerClosed(self.close_reason or "closed") from None

    # Closing ------------------------------------------------------------------------------

    def _broken(self, line: str) -> None:
        self.garbage = line[:500]
        self._close("the agent sent something that is not JSON-RPC")

    def _close(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        for pending in self._pending.values():
            pending.error = PeerClosed(reason)
            pending.done.set()


def _ignore(batch: list[Notification]) -> None:
    pass
