"""Several daemons on one PostgreSQL acting as one service: placement, leases, worker loss.

(Being built: issue 11.) ClusterSettings is what `od-runs serve` passes down.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import LEASE_SECONDS


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """How this daemon takes part in a cluster (used only with a database_url)."""

    worker_id: str | None = None
    lease_seconds: float = LEASE_SECONDS
    max_runs: int | None = None


__all__ = ["ClusterSettings"]
