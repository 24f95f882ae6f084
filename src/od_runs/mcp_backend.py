"""The runs interface the MCP server is written against, and the results its tools return.

RunService implements RunsBackend inside the daemon; DaemonClient implements it over HTTP
for `od-runs mcp` on stdio.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Protocol

from pydantic import BaseModel, Field

from .mcp_cut import McpEvent
from .mcp_watch import OnChange
from .models import DiffPage, Event, RunCreate, RunStatus, SessionDetail, SessionStatus


class RunsBackend(Protocol):
    """The runs interface both RunService and DaemonClient implement."""

    # Below the `list` method, a bare `list[...]` in an annotation names that method, hence
    # `builtins.list`.

    async def start(self, request: RunCreate) -> RunStatus: ...
    async def get(self, run_id: str) -> RunStatus: ...
    async def list(
        self,
        project_id: str | None = None,
        conversation_id: str | None = None,
        status: str | None = None,
        limit: int = 200,
    ) -> list[RunStatus]: ...
    async def cancel(self, run_id: str, grace: float | None = None) -> RunStatus: ...
    async def wait(self, run_id: str, timeout: float | None = None) -> RunStatus: ...
    async def wait_for_events(self, run_id: str, after: int, timeout: float) -> RunStatus: ...
    async def events(
        self, run_id: str, after: int = 0, limit: int = 100
    ) -> tuple[builtins.list[Event], bool]: ...
    async def watch(self, run_id: str, on_change: OnChange) -> None: ...
    async def list_sessions(
        self, conversation_id: str | None = None, status: str | None = None, limit: int = 200
    ) -> builtins.list[SessionStatus]: ...
    async def get_session(self, session_id: str) -> SessionDetail: ...
    async def diff(
        self, run_id: str, path: str | None = None, offset: int = 0, max_bytes: int | None = None
    ) -> DiffPage: ...


# The backend is looked up on every call rather than held: the daemon builds the server
# before its RunService exists, and a call in between is told the service is not ready.
GetBackend = Callable[[], RunsBackend]


class RunView(BaseModel):
    """A run's status plus a hint on how to follow it."""

    summary: str = Field(default="", description="One sentence: where the run stands, what next.")
    run: RunStatus
    hint: str


class RunListView(BaseModel):
    """Runs, newest first."""

    runs: list[RunStatus]
    leftOut: int | None = Field(
        default=None, description="Runs left out to fit the result budget (pass a smaller limit)."
    )


class WaitResult(BaseModel):
    """What wait_run saw: the status, the latest events after the cursor, where to go on."""

    summary: str = Field(default="", description="One sentence: where the run stands, what next.")
    run: RunStatus
    done: bool = Field(description="True when the run has reached a terminal status.")
    events: list[McpEvent] = Field(
        description="The most recent events after the cursor that fit the result budget; "
        "an event too big is cut (see its `cut`)."
    )
    skipped: int = Field(description="Events after the cursor left out (see get_run_events).")
    nextCursor: int = Field(description="Pass as `after` to the next wait_run call.")


class EventsPage(BaseModel):
    """A page of events in order."""

    items: list[McpEvent] = Field(
        description="Whole events in order; only a first event too big for the budget is cut "
        "(its `cut.nextOffset` reads on)."
    )
    nextCursor: int
    hasMore: bool


__all__ = ["EventsPage", "GetBackend", "RunListView", "RunView", "RunsBackend", "WaitResult"]
