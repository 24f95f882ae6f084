"""How od-runs talks to an ACP agent: JSON-RPC lines over its pipes, and its errors as failures.

`StdioTransport` is the message-level transport the `agent-client-protocol` library's
connection reads and writes (acp.py builds one per run); `rpc_failure` turns the error an agent
answered a request with into the failure kind a person can act on (failures.py).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream
from anyio.streams.buffered import BufferedByteReceiveStream

from ..failures import failure
from ..models import RunError
from .base import EventItem

if TYPE_CHECKING:
    from acp import RequestError

# Largest JSON-RPC message we read: a tool call's update may carry a whole file's diff.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# ACP's "authentication required" error code.
AUTH_REQUIRED = -32000
_HTTP_STATUS = re.compile(r"\b([45]\d\d)\b")
Emit = Callable[[list[EventItem]], None]


class StdioTransport:
    """ACP's stdio framing over the child's pipes: one JSON-RPC message per line.

    The ACP library's message-level transport: send() and receive() move decoded dicts.
    Every line read counts as output for the idle watchdog.
    """

    def __init__(
        self,
        send: ByteSendStream,
        receive: ByteReceiveStream,
        alive: Emit,
        garbage: Callable[..., None],
    ) -> None:
        self._send = send
        self._receive = BufferedByteReceiveStream(receive)
        self._lock = anyio.Lock()
        self._alive = alive
        self._garbage = garbage

    async def send(self, message: dict[str, Any]) -> None:
        """Write one message as a line."""
        data = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        try:
            async with self._lock:
                await self._send.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            raise ConnectionError("the agent's stdin is closed") from exc

    async def receive(self) -> dict[str, Any] | None:
        """The next message, or None at the end of the agent's output."""
        while True:
            try:
                line = await self._receive.receive_until(b"\n", MAX_MESSAGE_BYTES)
            except anyio.DelimiterNotFound:
                self._garbage("", fatal=True)
                return None
            except (
                anyio.IncompleteRead,
                anyio.EndOfStream,
                anyio.BrokenResourceError,
                anyio.ClosedResourceError,
            ):
                return None
            self._alive([])
            text = line.strip()
            if not text:
                continue
            try:
                message = json.loads(text)
            except ValueError:
                self._garbage(text.decode("utf-8", "replace"))
                continue
            if isinstance(message, dict):
                return message
            self._garbage(text.decode("utf-8", "replace"))

    async def close(self) -> None:
        """Close the agent's stdin (our half of the conversation)."""
        with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            await self._send.aclose()


def rpc_failure(step: str, exc: RequestError) -> RunError:
    """The failure kind of an error the agent answered a request with."""
    detail = exc.data.get("message") if isinstance(exc.data, dict) else exc.data
    text = " ".join(str(detail or exc).split())
    short = text if len(text) <= 200 else text[:199] + "…"
    status = _HTTP_STATUS.search(text)
    code = int(status.group(1)) if status else None
    http = f" (HTTP {code})" if code else ""
    if exc.code == AUTH_REQUIRED or code in (401, 403):
        return failure(
            "PROVIDER_AUTH_FAILED",
            f"The agent's model provider refused its credentials{http}. Log in with the agent's "
            "own CLI (for codex-acp: `codex login`) or give the daemon the provider's API key, "
            "then start the run again.",
        )
    if code == 429:
        return failure(
            "PROVIDER_RATE_LIMITED",
            f"The model provider is rate limiting the agent{http}. Wait, or check the account's "
            "usage limits, then retry.",
        )
    if code is not None and code >= 500:
        return failure(
            "PROVIDER_UNAVAILABLE",
            f"The model provider is unavailable{http}; the agent gave up. Retry later.",
        )
    if code is not None:
        return failure(
            "PROVIDER_REJECTED", f"The model provider rejected the request{http}: {short}"
        )
    if step == "session/prompt":
        return failure("AGENT_EXITED", f"The agent reported the turn failed: {short}")
    return failure("AGENT_PROTOCOL_ERROR", f"The agent refused {step}: {short}")


__all__ = ["AUTH_REQUIRED", "MAX_MESSAGE_BYTES", "Emit", "StdioTransport", "rpc_failure"]
