"""Running a real agent CLI through a RunService and reading what its run logged.

Shared by the tests of the agents that drive a pinned CLI against a scripted model
(test_codex.py, test_claude.py, test_app_server.py, test_acp.py, test_tool_bundles.py).
"""

from __future__ import annotations

import subprocess
from typing import Any

import anyio
import psutil

from od_runs.agents.base import Adapter, Failed, Going, Outcome, TurnEnded
from od_runs.models import Event, RunCreate, RunError, RunStatus
from od_runs.runs import RunService

from .conftest import RUN_DEADLINE


async def run_to_end(service: RunService, request: RunCreate) -> tuple[RunStatus, list[Event]]:
    """Start a run, wait for its end, return its status body and every event."""
    started = await service.start(request)
    with anyio.fail_after(RUN_DEADLINE):
        body = await service.wait(started.id)
    return body, await all_events(service, started.id)


async def all_events(service: RunService, run_id: str) -> list[Event]:
    """Every event the run has logged so far (all of them fit in one page)."""
    items, more = await service.events(run_id, 0, 1000)
    assert not more
    return items


def agent(events: list[Event], kind: str | None = None) -> list[dict[str, Any]]:
    """The data of `agent` events, of one type if given."""
    return [
        e.data
        for e in events
        if e.event == "agent" and (kind is None or e.data.get("type") == kind)
    ]


def final_answer(events: list[Event]) -> str | None:
    """The text of the run's one final message, if it has one."""
    finals = [d["text"] for d in agent(events, "message") if d.get("final")]
    assert len(finals) <= 1
    return finals[0] if finals else None


def index_of(events: list[Event], predicate: Any) -> int:
    """The position of the first event that matches predicate."""
    return next(i for i, e in enumerate(events) if predicate(e))


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants (an agent's node wrapper, native binary, tools)."""
    return [pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))]


def ps_live_pids() -> set[int]:
    """Pids `ps` lists, zombies left out (a container's pid 1 may never reap orphans)."""
    listing = subprocess.run(
        ["ps", "-eo", "pid=,stat="], capture_output=True, text=True, check=True
    )
    rows = (line.split() for line in listing.stdout.splitlines() if line.strip())
    return {int(pid) for pid, stat, *_ in rows if not stat.startswith("Z")}


def ps_args() -> str:
    """`ps -eo args`: every process's command line, as anyone on the machine sees them."""
    return subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout


def error_of(outcome: Outcome) -> RunError | None:
    """The error an adapter's outcome carries (None for success or a run still going)."""
    return outcome.error if isinstance(outcome, Failed) else None


def ended(adapter: Adapter) -> bool:
    """True once a session adapter says its turn is over."""
    return isinstance(adapter.progress(), TurnEnded)


def after_tool(adapter: Adapter) -> bool:
    """True while a session adapter has seen only chatter since a tool call finished."""
    state = adapter.progress()
    return isinstance(state, Going) and state.after_tool
