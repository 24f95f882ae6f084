"""Async HTTP client of the daemon's REST/SSE API, used by the CLI and by stdio MCP."""

from __future__ import annotations

import builtins
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import httpx
from httpx_sse import aconnect_sse

from .errors import OdRunsError
from .models import (
    TERMINAL_STATES,
    DiffPage,
    Event,
    Health,
    RunCreate,
    RunList,
    RunStatus,
    SessionDetail,
    SessionList,
    SessionStatus,
    WorktreeEntry,
    WorktreeList,
)
from .retention_models import DeleteResult, PruneRequest, PruneResult

# A request that is not a long poll or a stream should answer well within this.
REQUEST_TIMEOUT = 30.0
# Pause before re-following a stream that ended without news, so a broken one cannot spin.
RESUME_BACKOFF = 0.5


class DaemonUnavailable(OdRunsError):
    """Nothing answers at the daemon URL."""

    status = 503
    code = "DAEMON_UNAVAILABLE"


class ApiError(OdRunsError):
    """The daemon answered with an error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message, code=code)
        self.status = status


class DaemonClient:
    """The REST/SSE API as async methods; usable as an async context manager."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=REQUEST_TIMEOUT, trust_env=False
        )

    async def __aenter__(self) -> DaemonClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise DaemonUnavailable(
                f"cannot reach the od-runs daemon at {self.base_url} ({type(exc).__name__}); "
                "start it with `od-runs serve`"
            ) from exc
        if response.status_code >= 400:
            raise _api_error(response.status_code, response.content)
        return response.json()

    async def health(self) -> Health:
        """GET /api/health."""
        return Health.model_validate(await self._request("GET", "/api/health"))

    async def start(self, request: RunCreate) -> RunStatus:
        """POST /api/runs."""
        body = request.model_dump(mode="json", exclude_unset=True)
        return RunStatus.model_validate(await self._request("POST", "/api/runs", json=body))

    async def get(self, run_id: str) -> RunStatus:
        """GET /api/runs/{id}."""
        return RunStatus.model_validate(await self._request("GET", f"/api/runs/{run_id}"))

    async def list(
        self,
        project_id: str | None = None,
        conversation_id: str | None = None,
        status: str | None = None,
        limit: int = 200,
    ) -> list[RunStatus]:
        """GET /api/runs with filters."""
        params = _query(
            projectId=project_id, conversationId=conversation_id, status=status, limit=limit
        )
        return RunList.model_validate(await self._request("GET", "/api/runs", params=params)).runs

    async def list_sessions(
        self, conversation_id: str | None = None, status: str | None = None, limit: int = 200
    ) -> builtins.list[SessionStatus]:  # bare `list` here names the method above
        """GET /api/sessions with filters."""
        params = _query(conversationId=conversation_id, status=status, limit=limit)
        body = await self._request("GET", "/api/sessions", params=params)
        return SessionList.model_validate(body).sessions

    async def get_session(self, session_id: str) -> SessionDetail:
        """GET /api/sessions/{id}."""
        return SessionDetail.model_validate(
            await self._request("GET", f"/api/sessions/{session_id}")
        )

    async def retire_session(self, session_id: str) -> SessionDetail:
        """POST /api/sessions/{id}/retire (409 SESSION_BUSY while a run uses it)."""
        return SessionDetail.model_validate(
            await self._request("POST", f"/api/sessions/{session_id}/retire", timeout=None)
        )

    async def diff(
        self, run_id: str, path: str | None = None, offset: int = 0, max_bytes: int | None = None
    ) -> DiffPage:
        """GET /api/runs/{id}/diff?format=json: a page of the worktree's diff against base."""
        params = _query(path=path, offset=offset, maxBytes=max_bytes, format="json")
        body = await self._request("GET", f"/api/runs/{run_id}/diff", params=params)
        return DiffPage.model_validate(body)

    async def list_worktrees(self) -> builtins.list[WorktreeEntry]:
        """GET /api/worktrees."""
        return WorktreeList.model_validate(await self._request("GET", "/api/worktrees")).worktrees

    async def remove_worktree(self, worktree_id: str, force: bool = False) -> WorktreeEntry:
        """DELETE /api/worktrees/{id} (409 WORKTREE_DIRTY with uncommitted changes)."""
        params = {"force": "true"} if force else {}
        body = await self._request("DELETE", f"/api/worktrees/{worktree_id}", params=params)
        return WorktreeEntry.model_validate(body)

    async def prune_worktrees(self) -> builtins.list[WorktreeEntry]:
        """POST /api/worktrees/prune: the worktrees it removed."""
        body = await self._request("POST", "/api/worktrees/prune", timeout=None)
        return WorktreeList.model_validate(body).worktrees

    async def cancel(self, run_id: str, grace: float | None = None) -> RunStatus:
        """POST /api/runs/{id}/cancel (returns once the process group is gone)."""
        body = await self._request("POST", f"/api/runs/{run_id}/cancel", timeout=None)
        return RunStatus.model_validate(body["run"])

    async def delete(self, run_id: str, force: bool = False) -> DeleteResult:
        """DELETE /api/runs/{id} (409 RUN_ACTIVE while it runs)."""
        params = {"force": "true"} if force else None
        body = await self._request("DELETE", f"/api/runs/{run_id}", params=params, timeout=None)
        return DeleteResult.model_validate(body)

    async def prune(self, request: PruneRequest) -> PruneResult:
        """POST /api/runs/prune."""
        body = await self._request(
            "POST", "/api/runs/prune", json=request.model_dump(exclude_none=True), timeout=None
        )
        return PruneResult.model_validate(body)

    async def events(
        self, run_id: str, after: int = 0, limit: int = 100
    ) -> tuple[builtins.list[Event], bool]:
        """A JSON page of events after a cursor, and whether more exist."""
        page = await self._request(
            "GET",
            f"/api/runs/{run_id}/events",
            params={"format": "json", "after": after, "limit": limit},
        )
        return [Event.model_validate(e) for e in page["items"]], bool(page["hasMore"])

    async def stream(self, run_id: str, after: int = 0) -> AsyncIterator[Event]:
        """Follow a run's SSE stream from a cursor until its end event."""
        try:
            async with aconnect_sse(
                self._http,
                "GET",
                f"/api/runs/{run_id}/events",
                params={"after": after},
                timeout=httpx.Timeout(REQUEST_TIMEOUT, read=None),
            ) as source:
                if source.response.status_code >= 400:
                    await source.response.aread()
                    raise _api_error(source.response.status_code, source.response.content)
                async for sse in source.aiter_sse():
                    if sse.data:
                        yield Event.model_validate_json(sse.data)
        except httpx.TransportError as exc:
            raise DaemonUnavailable(f"lost the od-runs daemon at {self.base_url}: {exc}") from exc

    async def wait_for_events(self, run_id: str, after: int, timeout: float) -> RunStatus:
        """Return when the run has events after `after`, is terminal, or timeout passes."""
        with anyio.move_on_after(timeout):
            async for _event in self.stream(run_id, after):
                break
        return await self.get(run_id)

    async def wait(self, run_id: str, timeout: float | None = None) -> RunStatus:
        """The status once terminal (or when timeout passes)."""
        status = await self.get(run_id)
        if status.status in TERMINAL_STATES:
            return status
        with anyio.move_on_after(timeout):
            async for event in self.stream(run_id, status.lastEventId):
                if event.event == "end":
                    break
        return await self.get(run_id)

    async def watch(self, run_id: str, on_change: Callable[[RunStatus], Awaitable[None]]) -> None:
        """Call on_change with the status now and after each change, until it is terminal.

        One SSE stream is read throughout, so a slow on_change never makes the daemon drop
        us; whatever arrives while it runs is folded into the next call.
        """
        status = await self.get(run_id)
        changed = anyio.Event()
        failure: OdRunsError | None = None

        async def read(after: int) -> None:
            nonlocal failure
            try:
                while True:
                    resumed_at = after
                    async for event in self.stream(run_id, after):
                        after = event.id
                        changed.set()
                        if event.event == "end":
                            return
                    # The daemon ended the stream early (we fell behind): resume from the
                    # cursor, without spinning if it keeps ending with nothing new.
                    if after == resumed_at:
                        await anyio.sleep(RESUME_BACKOFF)
            except OdRunsError as exc:
                failure = exc
                changed.set()

        # Errors are carried out of the task group, so callers catch OdRunsError itself.
        async with anyio.create_task_group() as tg:
            tg.start_soon(read, status.lastEventId)
            try:
                while failure is None:
                    await on_change(status)
                    if status.status in TERMINAL_STATES:
                        break
                    await changed.wait()
                    changed = anyio.Event()
                    if failure is None:
                        status = await self.get(run_id)
            except OdRunsError as exc:
                failure = exc
            tg.cancel_scope.cancel()
        if failure is not None:
            raise failure


def _api_error(status: int, content: bytes) -> ApiError:
    try:
        error = json.loads(content)["error"]
        return ApiError(status, str(error["code"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        return ApiError(status, "HTTP_ERROR", f"HTTP {status}: {content[:200]!r}")


def _query(**params: object) -> dict[str, object]:
    """The query parameters that have a value (None means: not filtered on)."""
    return {name: value for name, value in params.items() if value is not None}
