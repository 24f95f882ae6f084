"""What a route may answer besides success, for /openapi.json: every error an ApiErrorBody."""

from __future__ import annotations

from typing import Any

from .models import ApiErrorBody

# Every error answer is an ApiErrorBody; each route lists the statuses it can answer with.
_WHY: dict[int, str] = {
    400: "Malformed request: not JSON, a bad cursor, a value the agent cannot use",
    403: "Host or Origin not allowed (DNS-rebinding guard)",
    404: "No such run, session or worktree",
    507: "The data dir is below its free-space floor",
    409: "Conflicts with what is stored",
    413: "Request body too large",
    422: "A field or parameter fails validation",
}


def errors(*statuses: int, why: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route: 403 and these statuses, each an ApiErrorBody."""
    why = why or {}
    return {
        status: {"model": ApiErrorBody, "description": why.get(status, _WHY[status])}
        for status in (403, *statuses)
    }


__all__ = ["errors"]
