"""Following runs for MCP clients: resource subscriptions and progress while a tool waits.

One watcher task per watched run fans "this run changed" out to every subscriber of its
resources, at most a few times a second, and ends after the run's terminal status. The
run itself is followed through the backend's `watch`, so this works the same inside the
daemon (RunService) and in `od-runs mcp` on stdio (DaemonClient over SSE).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup

from .errors import NotFound, OdRunsError
from .mcp_budget import clip_message, result_budget
from .models import RUN_ID_PATTERN, TERMINAL_STATES, Event, RunStatus

log = logging.getLogger("od_runs.mcp")

# At most one notification per subscriber per run this often ("a few per second").
NOTIFY_INTERVAL = 0.25
# Runs watched at once for resource subscriptions; one more is refused, not queued. Each one
# holds an SSE connection of `od-runs mcp`'s HTTP pool (100 connections).
MAX_WATCHED_RUNS = 64
# How many recent events a progress message looks through for the assistant's text.
PROGRESS_LOOKBACK = 50
# Longest progress message line: clients show it in a status bar.
LINE_WIDTH = 120

RUN_URI = re.compile(r"^runs://(?P<run_id>[^/]+)(?P<events>/events)?$")
_RUN_ID_RE = re.compile(RUN_ID_PATTERN)

OnChange = Callable[[RunStatus], Awaitable[None]]
Sink = Callable[[str], Awaitable[None]]


class Watchable(Protocol):
    """What following a run needs from the runs backend."""

    async def get(self, run_id: str) -> RunStatus: ...
    async def watch(self, run_id: str, on_change: OnChange) -> None: ...
    async def events(
        self, run_id: str, after: int = 0, limit: int = 100
    ) -> tuple[list[Event], bool]: ...


class NotARunResource(ValueError):
    """The URI names no run resource (only runs://{runId} and runs://{runId}/events do)."""


def run_id_of(uri: str) -> str:
    """The run id in runs://{runId} or runs://{runId}/events; NotARunResource otherwise."""
    match = RUN_URI.match(uri)
    if match is None or match["run_id"] == "active":
        raise NotARunResource(
            f"{uri!r} is not a run resource: subscribe to runs://{{runId}} "
            "or runs://{runId}/events"
        )
    return match["run_id"]


def is_run_id(text: str) -> bool:
    """True if text looks like a run id (run-<16 hex>)."""
    return _RUN_ID_RE.match(text) is not None


def _changed(old: RunStatus, new: RunStatus) -> bool:
    return (old.status, old.lastEventId, old.cancelRequested) != (
        new.status,
        new.lastEventId,
        new.cancelRequested,
    )


@dataclass(eq=False)
class _Watch:
    run_id: str
    sinks: dict[object, tuple[str, Sink]] = field(default_factory=dict)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)


class RunWatches:
    """Resource subscriptions: tells each subscriber when the run behind its URI changes."""

    def __init__(self, backend: Callable[[], Watchable]) -> None:
        self._backend = backend
        self._watches: dict[str, _Watch] = {}
        self._tg: TaskGroup | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Own the watcher tasks; they end (cancelled) when this context exits."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                yield
            finally:
                self._tg = None
                tg.cancel_scope.cancel()

    @property
    def active(self) -> int:
        """How many runs are being watched now."""
        return len(self._watches)

    async def subscribe(self, uri: str, sink: Sink) -> Callable[[], None]:
        """Call sink(uri) whenever the run behind uri changes; returns the unsubscribe.

        Raises NotARunResource for other URIs and the backend's NotFound for unknown runs.
        A finished run never changes again, so its subscription is accepted and idle.
        """
        run_id = run_id_of(uri)
        if not is_run_id(run_id):
            raise NotFound(f"no run with id {run_id[:80]!r}")
        status = await self._backend().get(run_id)
        if status.status in TERMINAL_STATES:
            return _noop
        watch = self._watches.get(run_id)
        if watch is None:
            if self._tg is None:
                raise RuntimeError("RunWatches is not running")
            if len(self._watches) >= MAX_WATCHED_RUNS:
                raise OdRunsError(
                    f"too many runs watched at once (limit {MAX_WATCHED_RUNS})",
                    code="TOO_MANY_SUBSCRIPTIONS",
                )
            watch = self._watches[run_id] = _Watch(run_id)
            self._tg.start_soon(self._follow, watch, status)
        token = object()
        watch.sinks[token] = (uri, sink)

        def unsubscribe() -> None:
            watch.sinks.pop(token, None)
            if not watch.sinks:
                watch.scope.cancel()
                if self._watches.get(run_id) is watch:
                    del self._watches[run_id]

        return unsubscribe

    async def _follow(self, watch: _Watch, baseline: RunStatus) -> None:
        last = baseline

        async def on_change(status: RunStatus) -> None:
            nonlocal last
            if not _changed(last, status):
                return
            last = status
            # The same (uri, sink) twice would tell one client the same thing twice.
            for uri, sink in dict.fromkeys(watch.sinks.values()):
                await sink(uri)
            if status.status not in TERMINAL_STATES:
                await anyio.sleep(NOTIFY_INTERVAL)  # coalesce whatever happens meanwhile

        try:
            with watch.scope:
                await self._backend().watch(watch.run_id, on_change)
        except OdRunsError as exc:
            log.warning("stopped watching run %s: %s: %s", watch.run_id, exc.code, exc.message)
        except Exception:
            # A task boundary: one broken watch must not take the server's other work down.
            log.exception("stopped watching run %s", watch.run_id)
        finally:
            if self._watches.get(watch.run_id) is watch:
                del self._watches[watch.run_id]


def _noop() -> None:
    pass


def one_line(text: str, width: int = LINE_WIDTH, *, keep_end: bool = False) -> str:
    """Whitespace collapsed to single spaces, cut to width with an ellipsis.

    keep_end keeps the newest words of text that is still being written.
    """
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    if keep_end:
        return "…" + flat[-(width - 1) :].lstrip()
    return flat[: width - 1].rstrip() + "…"


def assistant_text(events: Iterable[Event]) -> str | None:
    """The latest thing the agent said: its last message, or the text deltas since.

    Reads the demo/normalised agent events (`message`, `text_delta`) and falls back to
    the last stdout line for plain commands.
    """
    text: str | None = None
    streaming = False
    for event in events:
        data: Any = event.data if isinstance(event.data, dict) else {}
        kind = data.get("type") if event.event == "agent" else None
        if kind == "text_delta" and isinstance(data.get("delta"), str):
            text = (text or "") + data["delta"] if streaming else data["delta"]
            streaming = True
            continue
        streaming = False
        if kind == "message" and data.get("role", "assistant") == "assistant":
            if isinstance(data.get("text"), str):
                text = data["text"]
        elif event.event == "stdout" and isinstance(data.get("text"), str):
            text = data["text"]
    return one_line(text, keep_end=streaming) if text and text.strip() else None


async def progress_message(backend: Watchable, status: RunStatus) -> str:
    """`<status>, <n> events: <latest assistant text>` for one progress notification."""
    count = status.lastEventId
    head = f"{status.status}, {count} event{'' if count == 1 else 's'}"
    start = max(0, status.lastEventId - PROGRESS_LOOKBACK)
    try:
        events, _ = await backend.events(status.id, start, PROGRESS_LOOKBACK)
    except OdRunsError:
        return head
    said = assistant_text(events)
    return f"{head}: {said}" if said else head


async def report_progress(
    backend: Watchable,
    run_id: str,
    report: Callable[[float, str], Awaitable[None]],
) -> None:
    """Report the run's progress (event count, status, what it said) until it is terminal.

    Progress values are the run's event count, so they only ever increase; the first report
    is the state at the start, later ones come at most every NOTIFY_INTERVAL.
    """
    reported = -1

    async def on_change(status: RunStatus) -> None:
        nonlocal reported
        if status.lastEventId <= reported:
            return
        reported = status.lastEventId
        message = clip_message(await progress_message(backend, status), result_budget())
        await report(float(status.lastEventId), message)
        if status.status not in TERMINAL_STATES:
            await anyio.sleep(NOTIFY_INTERVAL)

    try:
        await backend.watch(run_id, on_change)
    except OdRunsError as exc:
        log.info("no more progress for run %s: %s", run_id, exc.code)
    except Exception:
        # Progress is best effort: it must never fail the call it reports on.
        log.exception("no more progress for run %s", run_id)
