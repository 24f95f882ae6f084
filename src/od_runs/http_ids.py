"""Ids in paths that must never swallow a sibling route's literal segment.

`/api/runs/prune` and `/api/worktrees/prune` are routes of their own; without these
convertors `{run_id}` and `{worktree_id}` would match "prune" too, so a 405 there would list
the methods of the id routes (Allow, RFC 9110) and GET /api/runs/prune would look for a run.
"""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor

from .models import RUN_ID_PATTERN


class _IdConvertor(Convertor[str]):
    """An id as it is, if it has the id's form."""

    def convert(self, value: str) -> str:
        """The id as it is."""
        return value

    def to_string(self, value: str) -> str:
        """The id as it is."""
        return value


class RunIdConvertor(_IdConvertor):
    """A run id: run-<16 hex digits>."""

    regex = RUN_ID_PATTERN.removeprefix("^").removesuffix("$")


class WorktreeIdConvertor(_IdConvertor):
    """A worktree id: a run's (run-…) or a conversation's (conv-…)."""

    regex = r"(?:run|conv)-[^/]+"


register_url_convertor("run_id", RunIdConvertor())
register_url_convertor("worktree_id", WorktreeIdConvertor())

__all__ = ["RunIdConvertor", "WorktreeIdConvertor"]
