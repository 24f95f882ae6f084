"""`od-runs serve --idle-exit`: the daemon stops by itself once nobody needs it.

Idle means no queued or running run and no HTTP request in flight (an open SSE stream or a
long poll is a request in flight) for the whole period. The daemon then shuts down as on
SIGTERM (streams closed, sessions retired, the data dir's lock released) and exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("od_runs.idle")

# The longest pause between two looks at the daemon, so a long period still ends on time.
CHECK_INTERVAL = 5.0


class Requests:
    """When the last HTTP request ended, and how many are in flight."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.in_flight = 0


class CountRequests:
    """ASGI middleware: keep a Requests up to date for every HTTP request."""

    def __init__(self, app: ASGIApp, requests: Requests) -> None:
        self.app = app
        self.requests = requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count the request in flight while the app handles it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.requests.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.requests.in_flight -= 1
            self.requests.last = time.monotonic()


async def watch_idle(
    seconds: float,
    requests: Requests,
    active_runs: Callable[[], int],
    on_idle: Callable[[], None],
) -> None:
    """Call on_idle once nothing was active for `seconds`; the quiet period restarts on use."""
    # Start-up may take longer than a short period: the daemon is idle from when it serves.
    requests.last = time.monotonic()
    while True:
        now = time.monotonic()
        if requests.in_flight or active_runs():
            # Busy now: the quiet period can only start from here.
            requests.last = now
        quiet = now - requests.last
        if quiet >= seconds:
            log.warning("no active run and no request for %g s: stopping (--idle-exit)", seconds)
            on_idle()
            return
        await anyio.sleep(min(seconds - quiet, CHECK_INTERVAL))


def _stopper(state: Any) -> Callable[[], None]:
    """The server's own stop (http_app.Server puts it in the app's state), else SIGTERM."""
    stop: Callable[[], None] | None = getattr(state, "stop_server", None)
    return stop or (lambda: os.kill(os.getpid(), signal.SIGTERM))


@asynccontextmanager
async def idle_exit(
    seconds: float | None, requests: Requests, active_runs: Callable[[], int], state: Any
) -> AsyncIterator[None]:
    """Watch for idleness while the daemon serves (nothing when seconds is None); state is
    the app's state, where the server leaves its stop function."""
    if not seconds:
        yield
        return
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch_idle, seconds, requests, active_runs, _stopper(state))
        yield
        tg.cancel_scope.cancel()
