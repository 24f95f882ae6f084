"""The `command` agent: any argv; its output lines become stdout/stderr events."""

from __future__ import annotations

from ..errors import BadRequest
from ..models import RunCreate
from .base import Adapter


class CommandAdapter(Adapter):
    """Runs request.command as is."""

    agent_id = "command"
    description = "run `command` (an argv list) as is, its output lines as events"
    needs_command = True

    def __init__(self, request: RunCreate) -> None:
        if not request.command:
            raise BadRequest("agentId 'command' needs a non-empty 'command' argv list")
        super().__init__(request)

    def argv(self) -> list[str]:
        """The caller's argv."""
        assert self.request.command is not None
        return list(self.request.command)
