"""Agent adapters: one module per agent behind the small interface in base.py."""

from __future__ import annotations

from ..models import RunCreate
from .base import Adapter
from .command import CommandAdapter
from .demo import DemoAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    DemoAdapter.agent_id: DemoAdapter,
    CommandAdapter.agent_id: CommandAdapter,
}


def make_adapter(request: RunCreate) -> Adapter:
    """The adapter for a run request's agentId."""
    return ADAPTERS[request.agentId](request)


__all__ = ["ADAPTERS", "Adapter", "make_adapter"]
