"""REST routes of worktree runs: a run's diff, and the worktrees od-runs made (ls, rm, prune)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import PlainTextResponse, Response

from . import http_ids  # noqa: F401  (registers the {…:worktree_id} path convertor)
from .http_responses import errors
from .models import DiffPage, WorktreeEntry, WorktreeList
from .runs import RunService
from .workspaces import MAX_DIFF_BYTES


def diff_marker(page: DiffPage) -> str:
    """The line a cut diff ends with: where it was cut and how to read on."""
    return (
        f"\n# od-runs: diff cut at byte {page.nextOffset}; more follows "
        f"(GET ...?offset={page.nextOffset})\n"
    )


def add_worktree_routes(app: FastAPI, service_of: Callable[[Request], RunService]) -> None:
    """Register /api/runs/{id}/diff and /api/worktrees on the app."""

    @app.get(
        "/api/runs/{run_id}/diff",
        tags=["runs"],
        response_model=DiffPage,
        responses={
            200: {"content": {"text/x-diff": {}}},
            **errors(404, 422, why={404: "No such run, or it has no workspace"}),
        },
    )
    async def run_diff(
        run_id: str,
        request: Request,
        path: Annotated[str | None, Query(max_length=4096)] = None,
        offset: Annotated[int, Query(ge=0)] = 0,
        maxBytes: Annotated[int, Query(ge=1, le=MAX_DIFF_BYTES)] = MAX_DIFF_BYTES,
        format: Annotated[Literal["text", "json"], Query()] = "text",
    ) -> Response | DiffPage:
        """The unified diff of the run's worktree against its base (untracked files too)."""
        page = await service_of(request).diff(run_id, path, offset, maxBytes)
        if format == "json":
            return page
        text = page.diff + (diff_marker(page) if page.hasMore else "")
        return PlainTextResponse(text, media_type="text/x-diff")

    @app.get("/api/worktrees", response_model=WorktreeList, tags=["worktrees"], responses=errors())
    async def list_worktrees(request: Request) -> WorktreeList:
        """The worktrees od-runs made, with whether they have uncommitted changes."""
        return WorktreeList(worktrees=await service_of(request).list_worktrees())

    @app.delete(
        "/api/worktrees/{worktree_id:worktree_id}",
        response_model=WorktreeEntry,
        tags=["worktrees"],
        responses=errors(404, 409, 422, why={409: "Uncommitted changes, or busy"}),
    )
    async def remove_worktree(
        worktree_id: str, request: Request, force: bool = False
    ) -> WorktreeEntry:
        """Remove a worktree (force: even with uncommitted changes); its branch stays if it
        has commits."""
        return await service_of(request).remove_worktree(worktree_id, force)

    @app.post(
        "/api/worktrees/prune", response_model=WorktreeList, tags=["worktrees"], responses=errors()
    )
    async def prune_worktrees(request: Request) -> WorktreeList:
        """Remove every idle worktree without changes; returns the removed ones."""
        return WorktreeList(worktrees=await service_of(request).prune_worktrees())


__all__ = ["add_worktree_routes", "diff_marker"]
