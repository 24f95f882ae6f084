"""The daemon's HTTP face: REST routes, the SSE routes, the /mcp mount, the web monitor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType
from typing import Annotated, Any, Literal, cast

import uvicorn
from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .config import Settings
from .errors import OdRunsError
from .mcp_mount import McpMount
from .models import (
    ApiErrorBody,
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
from .runs import RunService, open_service
from .security import BodyTooLarge, GuardMiddleware
from .sse import resolve_cursor, run_stream
from .sse_response import EventStream, close_open_streams, open_stream_count
from .status_events import status_frames

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ApiErrorBody, "description": "Bad request"},
    404: {"model": ApiErrorBody, "description": "No such run"},
}


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


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


def create_app(settings: Settings) -> FastAPI:
    """The ASGI app of a daemon with these settings."""
    mcp = McpMount()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            open_service(
                settings.data_dir,
                grace=settings.grace,
                max_conversations=settings.max_conversations,
                database_url=settings.database_url,
            ) as service,
            mcp.serving(service),
        ):
            app.state.service = service
            yield

    app = FastAPI(
        title="od-runs",
        version=__version__,
        summary="Runs coding agents and lets everyone watch them.",
        lifespan=lifespan,
        responses=ERRORS,
    )
    app.add_middleware(
        GuardMiddleware,
        token=settings.token,
        allowed_hosts=[settings.host, *settings.allowed_hosts],
        allowed_origins=settings.allowed_origins,
        public=is_public,
    )

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
        return _error(exc.status_code, code, str(exc.detail))

    def service_of(request: Request) -> RunService:
        # Starlette's State is untyped; the lifespan stores the one RunService there.
        return cast(RunService, request.app.state.service)

    @app.get("/api/health", response_model=Health, tags=["daemon"])
    async def health(request: Request) -> Health:
        """Liveness and the number of active runs."""
        return Health(
            version=__version__,
            activeRuns=service_of(request).active_count(),
            openStreams=open_stream_count(),
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
            lambda on_drop: status_frames(
                service.status_hub,
                service.list,
                project_id=projectId,
                conversation_id=conversationId,
                status=status,
                limit=limit,
                on_drop=on_drop,
            )
        )

    @app.post("/api/runs", status_code=202, response_model=RunStatus, tags=["runs"])
    async def create_run(body: RunCreate, request: Request) -> RunStatus:
        """Create and start a run; idempotent with clientRequestId."""
        return await service_of(request).start(body)

    @app.get("/api/runs", response_model=RunList, tags=["runs"])
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

    @app.get("/api/runs/{run_id}", response_model=RunStatus, tags=["runs"])
    async def get_run(run_id: str, request: Request) -> RunStatus:
        """The status body of a run."""
        return await service_of(request).get(run_id)

    @app.get(
        "/api/runs/{run_id}/events",
        tags=["runs"],
        response_model=EventPage,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def run_events(
        run_id: str,
        request: Request,
        after: Annotated[str | None, Query(max_length=40)] = None,
        format: Annotated[Literal["sse", "json"], Query()] = "sse",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=40)] = None,
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

    @app.post("/api/runs/{run_id}/cancel", response_model=CancelResult, tags=["runs"])
    async def cancel_run(run_id: str, request: Request) -> CancelResult:
        """Cancel a run; answers once its process group is gone."""
        return CancelResult(run=await service_of(request).cancel(run_id))

    @app.get("/api/sessions", response_model=SessionList, tags=["sessions"])
    async def list_sessions(
        request: Request,
        conversationId: Annotated[str | None, Query(max_length=128)] = None,
        status: Annotated[Literal["active", "idle", "retired"] | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> SessionList:
        """Agent sessions (one live process per conversation), most recently updated first."""
        sessions = await service_of(request).list_sessions(conversationId, status, limit)
        return SessionList(sessions=sessions)

    @app.get("/api/sessions/{session_id}", response_model=SessionDetail, tags=["sessions"])
    async def get_session(session_id: str, request: Request) -> SessionDetail:
        """A session with its recent events (spawned, resumed, turns, retirements)."""
        return await service_of(request).get_session(session_id)

    @app.post(
        "/api/sessions/{session_id}/retire",
        response_model=SessionDetail,
        tags=["sessions"],
        responses={409: {"model": ApiErrorBody, "description": "A run is using the session"}},
    )
    async def retire_session(session_id: str, request: Request) -> SessionDetail:
        """Stop a session's process now; its next run resumes the thread in a new one."""
        return await service_of(request).sessions.retire(session_id)

    app.router.routes.append(mcp.route())
    app.router.routes.extend(monitor_routes())
    return app


class Server(uvicorn.Server):
    """Uvicorn, ending open SSE streams as soon as it is told to stop.

    Uvicorn waits for open responses before it shuts the app down (and so before runs are
    cancelled); a stream that follows a run to its end would hold shutdown up till then.
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        close_open_streams()
        super().handle_exit(sig, frame)
