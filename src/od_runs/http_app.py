"""The daemon's HTTP face: REST routes, the SSE routes, the /mcp mount, the web monitor."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType
from typing import Annotated, Any, Literal, cast

import uvicorn
from fastapi import FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from . import (
    __version__,
    http_ids,  # noqa: F401  (registers the run and worktree id path convertors)
)
from .accept import Drain
from .cluster import ClusterSettings
from .config import Settings
from .errors import OdRunsError
from .http_responses import errors
from .http_worktrees import add_worktree_routes
from .idle import CountRequests, Requests, idle_exit
from .mcp_mount import McpMount
from .models import (
    RUN_ID_PATTERN,
    SESSION_ID_PATTERN,
    CancelResult,
    Event,
    EventPage,
    Health,
    RunCreate,
    RunList,
    RunStatus,
    SessionDetail,
    SessionList,
)
from .monitor import is_public, monitor_routes
from .openapi import refine
from .retention_routes import add_retention_routes
from .runs import RunService, open_service
from .security import BodyTooLarge, GuardMiddleware
from .sse import CURSOR_HEADER_PATTERN, CURSOR_PATTERN, resolve_cursor, run_stream
from .sse_response import EventStream, close_open_streams, open_stream_count
from .sse_route import FastEvents
from .sse_sink import RAW_SEND
from .status_events import status_frames


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def _allowed_methods(request: Request) -> str:
    """The Allow header of a 405: the methods of every route on this path (RFC 9110)."""
    # A Mount that raised has moved root_path in the scope; match from the app's own root.
    scope = {**request.scope, "root_path": request.scope.get("app_root_path", "")}
    methods: set[str] = set()
    for route in request.app.router.routes:
        if route.matches(scope)[0] == Match.NONE:
            continue
        if isinstance(route, Route) and route.methods:
            methods |= route.methods
        elif isinstance(route, Mount) and isinstance(route.app, StaticFiles):
            methods |= {"GET", "HEAD"}  # all StaticFiles serves
    return ", ".join(sorted(methods))


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return 400, "MALFORMED_JSON", "the request body is not valid JSON"
    if any(tuple(e.get("loc", ())) == ("body",) for e in errors):
        return 400, "INVALID_REQUEST", "the body must be a JSON object (application/json)"
    parts = []
    for err in errors[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return 422, "INVALID_REQUEST", "; ".join(parts)


# ?status= of the run lists: a run status, or active (not terminal).
StatusFilter = Annotated[
    Literal["queued", "running", "succeeded", "failed", "canceled", "active"] | None, Query()
]
# Ids in paths: any other string is a 404 (not a 422), so the pattern is documentation only.
RunId = Annotated[str, Path(json_schema_extra={"pattern": RUN_ID_PATTERN})]
SessionId = Annotated[str, Path(json_schema_extra={"pattern": SESSION_ID_PATTERN})]


class App(FastAPI):
    """The FastAPI app, leaving the server's own `send` in each HTTP scope (sse_sink.py)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[RAW_SEND] = send
        await super().__call__(scope, receive, send)


def create_app(settings: Settings) -> FastAPI:
    """The ASGI app of a daemon with these settings."""
    mcp = McpMount()
    requests = Requests()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            open_service(
                settings.data_dir,
                grace=settings.grace,
                max_conversations=settings.max_conversations,
                min_free=settings.min_free,
                retain=settings.retain,
                database_url=settings.database_url,
                cluster=ClusterSettings(
                    worker_id=settings.worker_id,
                    lease_seconds=settings.lease_seconds,
                    max_runs=settings.max_runs,
                ),
            ) as service,
            mcp.serving(service),
            idle_exit(settings.idle_exit, requests, service.active_count, app.state),
        ):
            app.state.service = service
            yield

    app = App(
        title="od-runs",
        version=__version__,
        summary="Runs coding agents and lets everyone watch them.",
        lifespan=lifespan,
    )
    fastapi_openapi = app.openapi

    def contract() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = refine(fastapi_openapi(), token=settings.token is not None)
        return app.openapi_schema

    app.openapi = contract  # type: ignore[method-assign]
    # Innermost, so inside the guard: the plain SSE request skips the router (sse_route.py).
    app.add_middleware(FastEvents, service=lambda: getattr(app.state, "service", None))
    app.add_middleware(
        GuardMiddleware,
        token=settings.token,
        allowed_hosts=[settings.host, *settings.allowed_hosts],
        allowed_origins=settings.allowed_origins,
        public=is_public,
    )
    if settings.idle_exit:
        app.add_middleware(CountRequests, requests=requests)

    @app.exception_handler(OdRunsError)
    async def _od_error(request: Request, exc: OdRunsError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(*_validation_message(exc))

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return _error(413, "BODY_TOO_LARGE", "the request body is too large")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first route on the path; there may be more.
            headers["Allow"] = _allowed_methods(request)
        return _error(exc.status_code, code, str(exc.detail), headers)

    def service_of(request: Request) -> RunService:
        # Starlette's State is untyped; the lifespan stores the one RunService there.
        return cast(RunService, request.app.state.service)

    @app.get("/api/health", response_model=Health, tags=["daemon"], responses=errors())
    async def health(request: Request) -> Health:
        """Liveness, the number of active runs, and (on a database) every daemon."""
        service = service_of(request)
        return Health(
            version=__version__,
            activeRuns=service.active_count(),
            openStreams=open_stream_count(),
            dataDir=await service.retention.usage(),
            workerId=service.worker_id,
            workers=await service.workers(),
        )

    # Left out of /openapi.json: it never ends, and schema-driven fuzzers wait for a body end.
    @app.get("/api/events", include_in_schema=False)
    async def status_events(
        request: Request,
        projectId: Annotated[str | None, Query(max_length=128)] = None,
        conversationId: Annotated[str | None, Query(max_length=128)] = None,
        status: StatusFilter = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> EventStream:
        """SSE of run status changes: `event: snapshot` ({runs}, filtered), then `event: run`
        (a status body) on every change of a run in the project and conversation."""
        service = service_of(request)
        return EventStream(
            lambda outlet: status_frames(
                service.status_hub,
                service.list,
                project_id=projectId,
                conversation_id=conversationId,
                status=status,
                limit=limit,
                on_drop=outlet.cancel,
            )
        )

    @app.post(
        "/api/runs",
        status_code=202,
        response_model=RunStatus,
        tags=["runs"],
        responses=errors(
            400,
            409,
            413,
            422,
            why={
                400: "Malformed JSON, a cwd that is not a directory, a field the agent rejects",
                409: "clientRequestId was used before with another payload",
            },
        ),
    )
    async def create_run(body: RunCreate, request: Request) -> RunStatus:
        """Create and start a run; idempotent with clientRequestId."""
        return await service_of(request).start(body)

    @app.get("/api/runs", response_model=RunList, tags=["runs"], responses=errors(422))
    async def list_runs(
        request: Request,
        projectId: Annotated[str | None, Query(max_length=128)] = None,
        conversationId: Annotated[str | None, Query(max_length=128)] = None,
        status: StatusFilter = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> RunList:
        """Runs, newest first; status=active means not terminal."""
        runs = await service_of(request).list(projectId, conversationId, status, limit)
        return RunList(runs=runs)

    @app.get(
        "/api/runs/{run_id:run_id}", response_model=RunStatus, tags=["runs"], responses=errors(404)
    )
    async def get_run(run_id: RunId, request: Request) -> RunStatus:
        """The status body of a run."""
        return await service_of(request).get(run_id)

    @app.get(
        "/api/runs/{run_id}/events",
        tags=["runs"],
        response_model=EventPage,
        responses={
            200: {
                "description": "The SSE stream, or with format=json a page of events",
                "content": {"text/event-stream": {}},
            },
            **errors(400, 404, 422, why={400: "A cursor that is not an event id"}),
        },
    )
    async def run_events(
        run_id: RunId,
        request: Request,
        after: Annotated[
            str | None,
            Query(
                max_length=40,
                description="Events after this id (0: all)",
                json_schema_extra={"pattern": CURSOR_PATTERN},
            ),
        ] = None,
        format: Annotated[Literal["sse", "json"], Query()] = "sse",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        last_event_id: Annotated[
            str | None,
            Header(
                alias="Last-Event-ID",
                max_length=40,
                description="Resume after this id (an EventSource sends it); wins over after",
                json_schema_extra={"pattern": CURSOR_HEADER_PATTERN},
            ),
        ] = None,
    ) -> Any:
        """SSE stream of a run's events (or a JSON page with format=json)."""
        service = service_of(request)
        cursor = resolve_cursor(last_event_id, after)
        await service.get(run_id)  # 404 before the stream starts
        if format == "json":
            # Declared here as RunService.events means them (its own `list[...]` names its
            # list method, so mypy cannot read that annotation).
            items: list[Event]
            items, more = await service.events(run_id, cursor, limit)
            return EventPage(
                items=items, nextCursor=items[-1].id if items else cursor, hasMore=more
            )
        return run_stream(service, run_id, cursor)

    @app.post(
        "/api/runs/{run_id}/cancel",
        response_model=CancelResult,
        tags=["runs"],
        responses=errors(404, 413),
    )
    async def cancel_run(run_id: RunId, request: Request) -> CancelResult:
        """Cancel a run; answers once its process group is gone."""
        return CancelResult(run=await service_of(request).cancel(run_id))

    @app.get("/api/sessions", response_model=SessionList, tags=["sessions"], responses=errors(422))
    async def list_sessions(
        request: Request,
        conversationId: Annotated[str | None, Query(max_length=128)] = None,
        status: Annotated[Literal["active", "idle", "retired"] | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> SessionList:
        """Agent sessions (one live process per conversation), most recently updated first."""
        sessions = await service_of(request).list_sessions(conversationId, status, limit)
        return SessionList(sessions=sessions)

    @app.get(
        "/api/sessions/{session_id}",
        response_model=SessionDetail,
        tags=["sessions"],
        responses=errors(404),
    )
    async def get_session(session_id: SessionId, request: Request) -> SessionDetail:
        """A session with its recent events (spawned, resumed, turns, retirements)."""
        return await service_of(request).get_session(session_id)

    @app.post(
        "/api/sessions/{session_id}/retire",
        response_model=SessionDetail,
        tags=["sessions"],
        responses=errors(404, 409, 413, why={409: "A run is using the session"}),
    )
    async def retire_session(session_id: SessionId, request: Request) -> SessionDetail:
        """Stop a session's process now; its next run resumes the thread in a new one."""
        return await service_of(request).sessions.retire(session_id)

    add_worktree_routes(app, service_of)
    add_retention_routes(app, service_of)
    app.router.routes.append(mcp.route())
    app.router.routes.extend(monitor_routes())
    return app


class Server(uvicorn.Server):
    """Uvicorn, ending open SSE streams as soon as it is told to stop.

    Uvicorn waits for open responses before it shuts the app down (and so before runs are
    cancelled); a stream that follows a run to its end would hold shutdown up till then.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        if isinstance(config.app, FastAPI):
            config.app.state.stop_server = self.stop
        self.drains: list[Drain] = []

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start as uvicorn does, then drain each listening socket's backlog (accept.py)."""
        await super().startup(sockets)
        config = self.config

        def protocol() -> asyncio.Protocol:
            # The protocol uvicorn's own server builds for each connection.
            made: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )
            return made

        for server in getattr(self, "servers", []):
            for listener in server.sockets or ():
                self.drains.append(Drain(cast(socket.socket, listener), protocol))

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop the drains with the servers, then shut down as uvicorn does."""
        for drain in self.drains:
            drain.close()
        self.drains = []
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        close_open_streams()
        super().handle_exit(sig, frame)

    def stop(self) -> None:
        """Shut down as on SIGTERM, but exit 0: nothing killed us (the idle exit)."""
        close_open_streams()
        self.should_exit = True
