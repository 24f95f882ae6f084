"""Agent adapters: one module per agent behind the small interface in base.py.

Adding an agent means adding its module and one line to ADAPTERS below; the API, the MCP
tool and the CLI read their list of agents from here.
"""

from __future__ import annotations

from ..errors import Invalid
from ..models import RunCreate
from .acp import AcpAdapter
from .app_server import CodexAppServerAdapter
from .base import Adapter
from .claude import ClaudeAdapter
from .codex import CodexAdapter
from .command import CommandAdapter
from .demo import DemoAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    adapter.agent_id: adapter
    for adapter in (
        DemoAdapter,
        CommandAdapter,
        CodexAdapter,
        ClaudeAdapter,
        CodexAppServerAdapter,
        AcpAdapter,
    )
}


def agent_ids() -> list[str]:
    """The agentIds a run may ask for."""
    return sorted(ADAPTERS)


def agent_help() -> str:
    """One line per agent for tool and option descriptions: `id: description; …`."""
    return "; ".join(
        f"{agent}: {ADAPTERS[agent].description}" if ADAPTERS[agent].description else agent
        for agent in agent_ids()
    )


def make_adapter(request: RunCreate) -> Adapter:
    """The adapter for a run request's agentId; 422 for an id no adapter is registered for."""
    adapter = ADAPTERS.get(request.agentId)
    if adapter is None:
        raise Invalid(
            f"agentId: unknown agent {request.agentId!r}; known agents: {', '.join(agent_ids())}"
        )
    return adapter(request)


__all__ = ["ADAPTERS", "Adapter", "agent_help", "agent_ids", "make_adapter"]
