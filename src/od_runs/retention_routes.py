"""REST routes of retention.py: DELETE /api/runs/{id} and POST /api/runs/prune."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request

from .models import ApiErrorBody
from .retention_models import DeleteResult, PruneRequest, PruneResult, parse_duration
from .runs import RunService

_ACTIVE: dict[int | str, dict[str, Any]] = {
    409: {"model": ApiErrorBody, "description": "RUN_ACTIVE: cancel the run first"},
}


def add_retention_routes(app: FastAPI, service_of: Callable[[Request], RunService]) -> None:
    """Add the delete and prune routes to the daemon's app."""

    # Before /api/runs/{run_id}/… routes would not matter (other methods), but keep it first.
    @app.post("/api/runs/prune", response_model=PruneResult, tags=["runs"])
    async def prune_runs(body: PruneRequest, request: Request) -> PruneResult:
        """Delete finished runs that ended longer ago than olderThan (30d, 12h, 90m)."""
        return await service_of(request).retention.prune(
            parse_duration(body.olderThan),
            status=body.status,
            project_id=body.projectId,
            dry_run=body.dryRun,
        )

    @app.delete("/api/runs/{run_id}", response_model=DeleteResult, tags=["runs"], responses=_ACTIVE)
    async def delete_run(
        run_id: str, request: Request, force: Annotated[bool, Query()] = False
    ) -> DeleteResult:
        """Delete a finished run: its row, its events and (once runs have one) its workspace."""
        return await service_of(request).retention.delete(run_id, force=force)


__all__ = ["add_retention_routes"]
