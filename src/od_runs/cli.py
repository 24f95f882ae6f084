"""The od-runs command line: serve, mcp, start, ls, get, cancel, tail, rm, prune, sessions,
worktrees, workers, mcp-config.

The group lives in cli_group; each cli_* module registers its commands on it when imported,
so importing them here is what makes `od-runs` (the console script `od_runs.cli:main`) whole.
"""

from __future__ import annotations

from . import (  # noqa: F401 (registers commands)
    cli_mcpconfig,
    cli_prune,
    cli_runs,
    cli_serve,
    cli_sessions,
    cli_workers,
    cli_worktrees,
)
from .cli_group import main

__all__ = ["main"]
