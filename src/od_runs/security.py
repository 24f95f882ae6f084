"""Request guards: Host and Origin checks (DNS rebinding), bearer token, body size."""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Iterable
from urllib.parse import parse_qs, urlsplit

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .config import LOOPBACK_NAMES

# Largest request body we read: a prompt of 1M characters fits with room to spare.
MAX_BODY_BYTES = 4 * 1024 * 1024


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _host_name(value: str) -> str:
    """'127.0.0.1:7780' -> '127.0.0.1', '[::1]:80' -> '::1'."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class GuardMiddleware:
    """Refuses foreign Host/Origin headers, missing tokens and oversized bodies."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        allowed_hosts: Iterable[str] = (),
        allowed_origins: Iterable[str] = (),
        public: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.app = app
        self.token = token
        # (method, path) -> True for what needs no token (the web monitor's static page).
        self.public = public or (lambda method, path: False)
        self.hosts = {h.lower().strip("[]") for h in (*LOOPBACK_NAMES, *allowed_hosts)}
        self.origins = {o.rstrip("/").lower() for o in allowed_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = _host_name(headers.get("host", ""))
        if host not in self.hosts:
            await _refuse(send, 403, "FORBIDDEN_HOST", f"Host {host[:100]!r} is not allowed")
            return
        origin = headers.get("origin")
        if origin is not None and not self._origin_ok(origin):
            await _refuse(send, 403, "FORBIDDEN_ORIGIN", f"Origin {origin[:100]!r} is not allowed")
            return
        if (
            self.token is not None
            and not self.public(scope["method"], scope["path"])
            and not self._token_ok(headers, scope)
        ):
            await _refuse(send, 401, "UNAUTHORIZED", "a valid bearer token is required")
            return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            await _refuse(
                send, 413, "BODY_TOO_LARGE", f"request bodies are limited to {MAX_BODY_BYTES} bytes"
            )
            return
        await self.app(scope, _limited(receive), send)

    def _origin_ok(self, origin: str) -> bool:
        if origin.rstrip("/").lower() in self.origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and (parts.hostname or "") in self.hosts

    def _token_ok(self, headers: dict[str, str], scope: Scope) -> bool:
        assert self.token is not None
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return hmac.compare_digest(auth[7:].strip().encode(), self.token.encode())
        # EventSource cannot send headers: the browser passes ?token= instead.
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given = query.get("token", [""])[0]
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())


def _limited(receive: Receive) -> Receive:
    """A receive that stops a chunked body past MAX_BODY_BYTES."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > MAX_BODY_BYTES:
                raise BodyTooLarge()
        return message

    return wrapped


class BodyTooLarge(HTTPException):
    """A streamed request body went past MAX_BODY_BYTES.

    An HTTPException, so FastAPI's body parsing re-raises it instead of answering 400.
    """

    def __init__(self) -> None:
        super().__init__(413, f"request bodies are limited to {MAX_BODY_BYTES} bytes")
