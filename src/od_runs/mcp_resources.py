"""The MCP resources of od-runs (runs://...) and the subscriptions to their changes.

Clients on the 2025 protocol revision subscribe with resources/subscribe; on the 2026 one
they hold a `subscriptions/listen` stream open. Either way a RunWatches watches the run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    EmptyResult,
    SubscribeRequestParams,
    SubscriptionsListenRequestParams,
    UnsubscribeRequestParams,
)
from pydantic import ValidationError

from . import mcp_budget as budgeting
from .errors import NotFound, OdRunsError
from .mcp_backend import GetBackend, RunListView
from .mcp_watch import NotARunResource, RunWatches, is_run_id
from .models import Event, RunStatus

log = logging.getLogger("od_runs.mcp")

# runs://{runId}/events holds at most this many of the newest events ...
RESOURCE_EVENTS = 100
# ... and at most this much text: a resource lands whole in a model's context. (The read
# itself is held to the MCP result budget too, see mcp_budget.)
RESOURCE_MAX_CHARS = 100_000
# Where a connection keeps its resources/subscribe subscriptions (uri -> unsubscribe).
_SUBSCRIPTIONS_KEY = "od_runs.subscriptions"


def events_jsonl(events: list[Event], max_chars: int = RESOURCE_MAX_CHARS) -> str:
    """Events as JSONL, newest last, dropping the oldest lines beyond max_chars."""
    lines = [event.model_dump_json() + "\n" for event in events]
    size = sum(len(line) for line in lines)
    start = 0
    while size > max_chars and start < len(lines) - 1:
        size -= len(lines[start])
        start += 1
    return "".join(lines[start:])


def _resource_error(exc: OdRunsError) -> ResourceError:
    # By code: over stdio a 404 arrives as the client's ApiError, not as NotFound.
    if exc.code == NotFound.code:
        return ResourceNotFoundError(f"{exc.code}: {exc.message}")
    return ResourceError(f"{exc.code}: {exc.message}")


def _connection_of(ctx: ServerRequestContext[Any, Any]) -> Connection | None:
    # mcp 2.3 gives request handlers no public handle on their connection, yet its
    # exit_stack is where the SDK wants per-connection cleanup. Without it, watches still
    # end with their run.
    connection = getattr(ctx.session, "_connection", None)
    return connection if isinstance(connection, Connection) else None


def _listen_uris(params: Mapping[str, Any] | None) -> list[str]:
    try:
        parsed = SubscriptionsListenRequestParams.model_validate(params or {}, by_name=False)
    except ValidationError:
        return []
    return list(parsed.notifications.resource_subscriptions or ())


def register_resources(server: MCPServer, get_backend: GetBackend) -> None:
    """Add runs://active, runs://{runId}/events and runs://{runId} to server."""
    resource = server.resource

    @resource(
        "runs://active",
        name="active_runs",
        title="Active runs",
        description="Runs that are queued or running, newest first, as JSON {runs: [...]}.",
        mime_type="application/json",
    )
    async def active_runs() -> str:
        try:
            runs = await get_backend().list(status="active")
        except OdRunsError as exc:
            raise _resource_error(exc) from None
        budget = budgeting.result_budget() - budgeting.json_size(
            {"contents": [{"uri": "runs://active", "mimeType": "application/json", "text": ""}]}
        )
        view = RunListView(runs=runs)
        kept = len(runs)
        text = view.model_dump_json(indent=1, exclude_none=True)
        # Newest first: the oldest active runs give way (runs://active counts them in leftOut).
        while kept and budgeting.json_size(text) > budget:
            kept = min(kept - 1, int(kept * budget / budgeting.json_size(text)))
            view = RunListView(runs=runs[:kept], leftOut=len(runs) - kept)
            text = view.model_dump_json(indent=1, exclude_none=True)
        return text

    # Registered before runs://{runId} so that template never sees an /events URI.
    @resource(
        "runs://{runId}/events",
        name="run_events",
        title="Recent run events",
        description=f"The run's most recent events (at most {RESOURCE_EVENTS}, and what fits "
        "the result budget: older lines give way, the final answer stays, an event too big "
        "is cut with a `cut` marker), one JSON object per line, newest last: the tail of "
        "its events.jsonl.",
        mime_type="application/jsonl",
    )
    async def run_events(runId: str) -> str:
        status = await _read_status(get_backend, runId)
        start = max(0, status.lastEventId - RESOURCE_EVENTS)
        try:
            items, _ = await get_backend().events(runId, start, RESOURCE_EVENTS)
        except OdRunsError as exc:
            raise _resource_error(exc) from None
        return budgeting.resource_jsonl(
            budgeting.RunRef(status.id, status.eventsLogPath),
            f"runs://{runId}/events",
            items[-RESOURCE_EVENTS:],
            min(budgeting.result_budget(), RESOURCE_MAX_CHARS),
            "application/jsonl",
        )

    @resource(
        "runs://{runId}",
        name="run",
        title="Run status",
        description="The run's status body as JSON: status, error and errorCode, "
        "eventsLogPath, lastEventId. Subscribe to hear about every change.",
        mime_type="application/json",
    )
    async def run_status(runId: str) -> str:
        status = await _read_status(get_backend, runId)
        return json.dumps(status.model_dump(mode="json"), indent=1)


async def _read_status(get_backend: GetBackend, run_id: str) -> RunStatus:
    if not is_run_id(run_id):
        raise ResourceNotFoundError(f"NOT_FOUND: no run with id {run_id[:80]!r}")
    try:
        return await get_backend().get(run_id)
    except OdRunsError as exc:
        raise _resource_error(exc) from None


class RunSubscriptions:
    """Subscriptions to run resources, over both protocol revisions, fed by watches."""

    def __init__(self, watches: RunWatches, bus: InMemorySubscriptionBus) -> None:
        self._watches = watches
        self._bus = bus

    def install(self, lowlevel: Server[Any]) -> None:
        """resources/subscribe and unsubscribe, for clients on the 2025 protocol revision."""
        lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, self.subscribe)
        lowlevel.add_request_handler(
            "resources/unsubscribe", UnsubscribeRequestParams, self.unsubscribe
        )

    def _subscriptions_of(
        self, ctx: ServerRequestContext[Any, Any]
    ) -> dict[str, Callable[[], None]]:
        connection = _connection_of(ctx)
        if connection is None:
            return {}
        # Connection.state is untyped scratch space; only this method writes this key.
        subscriptions: dict[str, Callable[[], None]] | None = connection.state.get(
            _SUBSCRIPTIONS_KEY
        )
        if subscriptions is None:
            subscriptions = connection.state[_SUBSCRIPTIONS_KEY] = {}

            def end_all() -> None:
                for unsubscribe in subscriptions.values():
                    unsubscribe()
                subscriptions.clear()

            connection.exit_stack.callback(end_all)
        return subscriptions

    async def subscribe(
        self, ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams
    ) -> EmptyResult:
        """resources/subscribe: watch the run and tell this connection of each change."""
        subscriptions = self._subscriptions_of(ctx)
        if params.uri in subscriptions:
            return EmptyResult()
        sink = ctx.session.send_resource_updated
        data = {"uri": params.uri}
        try:
            unsubscribe = await self._watches.subscribe(params.uri, sink)
        except NotARunResource as exc:
            raise MCPError(INVALID_PARAMS, str(exc), data) from None
        except OdRunsError as exc:
            code = INVALID_PARAMS if exc.code == NotFound.code else INTERNAL_ERROR
            raise MCPError(code, f"{exc.code}: {exc.message}", data) from None
        subscriptions[params.uri] = unsubscribe
        return EmptyResult()

    async def unsubscribe(
        self, ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams
    ) -> EmptyResult:
        """resources/unsubscribe: stop telling this connection about the uri."""
        unsubscribe = self._subscriptions_of(ctx).pop(params.uri, None)
        if unsubscribe is not None:
            unsubscribe()
        return EmptyResult()

    async def watch_listened_runs(
        self,
        ctx: ServerRequestContext[Any, Any],
        call_next: Callable[[ServerRequestContext[Any, Any]], Awaitable[Any]],
    ) -> Any:
        """Middleware: while a 2026 `subscriptions/listen` stream is open, watch its runs."""
        if ctx.method != "subscriptions/listen" or ctx.request_id is None:
            return await call_next(ctx)
        unsubscribes: list[Callable[[], None]] = []
        try:
            for uri in _listen_uris(ctx.params):
                try:
                    unsubscribes.append(await self._watches.subscribe(uri, self._publish_updated))
                except (NotARunResource, OdRunsError) as exc:
                    # Honored but never fires, as the protocol has it for unknown URIs.
                    log.debug("listen: not watching %s: %s", uri, exc)
            return await call_next(ctx)
        finally:
            for unsubscribe in unsubscribes:
                unsubscribe()

    async def _publish_updated(self, uri: str) -> None:
        await self._bus.publish(ResourceUpdated(uri=uri))
