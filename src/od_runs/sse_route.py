"""GET /api/runs/{id}/events as an SSE stream, without FastAPI's routing and dependencies.

A crowd opening a live run (500 browsers at once) pays the request setup 500 times on the
loop that also delivers the run: through FastAPI that was about 1 ms of loop per stream
(exception and exit-stack middleware, matching every route, solving the parameters, a
Request), a third of the time the last viewer waited before its first byte. This middleware
sits inside the Host/Origin/token guard and serves the plain form of the request itself:
no query parameters but `after` (and `token`, which the guard checked), `format` absent or
`sse`, cursors that parse, a run that exists. Anything else (a bad cursor, an unknown run,
a JSON page, HEAD) goes on to the route, which answers it, errors included, as before.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import OdRunsError
from .runs import RunService
from .sse import resolve_cursor, run_stream

_PATH = re.compile(r"/api/runs/([^/]+)/events")
_PLAIN_KEYS = frozenset({"after", "format", "token"})
# The route's own limit on a cursor's length (a longer one is its 422, not ours to give).
_MAX_CURSOR = 40


class FastEvents:
    """Serve the plain SSE request of a run's events; pass everything else on."""

    def __init__(self, app: ASGIApp, service: Callable[[], RunService | None]) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            match = _PATH.fullmatch(scope["path"])
            if match is not None:
                service = self.service()
                cursor = None if service is None else _plain_cursor(scope)
                if service is not None and cursor is not None:
                    run_id = match.group(1)
                    try:
                        await service.get(run_id)  # a 404 before the stream starts
                    except OdRunsError:
                        pass  # the route says so, in its own words
                    else:
                        await run_stream(service, run_id, cursor)(scope, receive, send)
                        return
        await self.app(scope, receive, send)


def _plain_cursor(scope: Scope) -> int | None:
    """The cursor of a plain SSE request; None if the route must judge the request."""
    raw = scope.get("query_string", b"").decode("latin-1")
    if "%" in raw or "+" in raw:
        query = parse_qsl(raw, keep_blank_values=True)
    else:  # nothing to unquote: a plain split is what parse_qsl would give, at a tenth
        query = [tuple(p.partition("=")[::2]) for p in raw.split("&") if p]
    keys = [key for key, _ in query]
    if len(set(keys)) != len(keys) or not _PLAIN_KEYS.issuperset(keys):
        return None
    params = dict(query)
    if params.get("format", "sse") != "sse":
        return None
    after = params.get("after")
    last_event_id = None
    for name, value in scope["headers"]:
        if name == b"last-event-id":
            if last_event_id is not None:
                return None
            last_event_id = value.decode("latin-1")
    if any(v is not None and len(v) > _MAX_CURSOR for v in (after, last_event_id)):
        return None
    try:
        return resolve_cursor(last_event_id or None, after)
    except OdRunsError:
        return None


__all__ = ["FastEvents"]
