"""REST routes of retention.py: DELETE /api/runs/{id} and POST /api/runs/prune."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import FastAPI, Query, Request

from . import http_ids  # noqa: F401  (registers the {…:run_id} path convertor)
from .http_responses import errors
from .retention_models import DeleteResult, PruneRequest, PruneResult, parse_duration
from .runs import RunService

_ACTIVE = "RUN_ACTIVE: cancel the run first; WORKTREE_DIRTY: its worktree has changes"


def add_retention_routes(app: FastAPI, service_of: Callable[[Request], RunService]) -> None:
    """Add the delete and prune routes to the daemon's app."""

    # Before /api/runs/{run_id}/… routes would not matter (other methods), but keep it first.
    @app.post(
        "/api/runs/prune",
        response_model=PruneResult,
        tags=["runs"],
        responses=errors(400, 413, 422, why={400: "Not JSON, or a duration like 30d it is not"}),
    )
    async def prune_runs(body: PruneRequest, request: Request) -> PruneResult:
        """Delete finished runs that ended longer ago than olderThan (30d, 12h, 90m)."""
        return await service_of(request).retention.prune(
            parse_duration(body.olderThan),
            status=body.status,
            project_id=body.projectId,
            dry_run=body.dryRun,
        )

    @app.delete(
        "/api/runs/{run_id:run_id}",
        response_model=DeleteResult,
        tags=["runs"],
        responses=errors(404, 409, 422, why={409: _ACTIVE}),
    )
    async def delete_run(
        run_id: str, request: Request, force: Annotated[bool, Query()] = False
    ) -> DeleteResult:
        """Delete a finished run: its row, its events and (once runs have one) its workspace."""
        return await service_of(request).retention.delete(run_id, force=force)


__all__ = ["add_retention_routes"]
