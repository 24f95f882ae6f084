"""Conversations: one run at a time per conversation, in order; conversations in parallel.

Ported from seed 001 (per-session serialisation, parallel new sessions) onto real `command`
children of a real RunService: each child waits for a gate file the test creates, so the
test decides when a run may end and observes what the others do meanwhile.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import anyio
import pytest

from od_runs.conversations import Conversations
from od_runs.models import RunCreate, RunStatus, SessionRef
from od_runs.runs import RunService, open_service

from .conftest import RUN_DEADLINE

pytestmark = pytest.mark.anyio

# Says "ready", then waits until its gate file exists.
GATED = """
import os, sys, time
print("ready", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
"""


def gated(gate: Path, conversation: str | None) -> RunCreate:
    return RunCreate(
        agentId="command",
        command=[sys.executable, "-c", GATED, str(gate)],
        conversationId=conversation,
    )


async def wait_ready(service: RunService, run_id: str) -> None:
    """Until the child has printed "ready" (its event after `start`)."""
    with anyio.fail_after(RUN_DEADLINE):
        while (body := await service.get(run_id)).lastEventId < 2:
            await service.wait_for_events(run_id, body.lastEventId, 1.0)


async def wait_all(service: RunService, *run_ids: str) -> list[RunStatus]:
    with anyio.fail_after(RUN_DEADLINE):
        return [await service.wait(run_id) for run_id in run_ids]


async def test_runs_of_one_conversation_take_turns_in_creation_order(tmp_path: Path) -> None:
    """Seed 001: same session, never in flight together; later runs wait as `queued`."""
    gate = tmp_path / "gate"
    async with open_service(None) as service:
        runs = [await service.start(gated(gate, "c-1")) for _ in range(3)]
        await wait_ready(service, runs[0].id)
        later = [await service.get(r.id) for r in runs[1:]]
        assert [(b.status, b.lastEventId, b.childPid) for b in later] == [("queued", 0, None)] * 2
        gate.touch()
        bodies = await wait_all(service, *(r.id for r in runs))
    assert [b.status for b in bodies] == ["succeeded"] * 3
    for before, after in itertools.pairwise(bodies):
        assert before.finishedAt is not None and after.startedAt is not None
        assert after.startedAt >= before.finishedAt


async def test_runs_of_different_conversations_and_loose_runs_run_in_parallel(
    tmp_path: Path,
) -> None:
    """Seed 001: different sessions (and runs with no conversation) are in flight at once."""
    gate = tmp_path / "gate"
    async with open_service(None) as service:
        runs = [
            await service.start(gated(gate, conversation))
            for conversation in ("c-a", "c-b", None, None)
        ]
        for run in runs:
            await wait_ready(service, run.id)
        assert [(await service.get(r.id)).status for r in runs] == ["running"] * 4
        gate.touch()
        bodies = await wait_all(service, *(r.id for r in runs))
    assert [b.status for b in bodies] == ["succeeded"] * 4


async def test_a_queued_run_can_be_canceled_and_the_queue_moves_on(tmp_path: Path) -> None:
    """Canceling the middle run ends it at once; the first is untouched, the third runs next."""
    gate = tmp_path / "gate"
    async with open_service(None) as service:
        first, middle, last = [await service.start(gated(gate, "c-2")) for _ in range(3)]
        await wait_ready(service, first.id)
        with anyio.fail_after(5):
            canceled = await service.cancel(middle.id)
        assert (canceled.status, canceled.childPid, canceled.startedAt) == ("canceled", None, None)
        items, _ = await service.events(middle.id)
        assert [e.event for e in items] == ["end"]
        assert (await service.get(first.id)).status == "running"
        assert (await service.get(last.id)).status == "queued"
        gate.touch()
        a, c = await wait_all(service, first.id, last.id)
    assert (a.status, c.status) == ("succeeded", "succeeded")
    assert c.startedAt is not None and a.finishedAt is not None and c.startedAt >= a.finishedAt


async def test_the_conversation_limit_bounds_how_many_run_at_once(tmp_path: Path) -> None:
    """With max_conversations=1 a second conversation waits for the first to finish."""
    gate = tmp_path / "gate"
    async with open_service(None, max_conversations=1) as service:
        one = await service.start(gated(gate, "c-x"))
        two = await service.start(gated(gate, "c-y"))
        loose = await service.start(gated(gate, None))
        await wait_ready(service, one.id)
        await wait_ready(service, loose.id)
        assert (await service.get(two.id)).status == "queued"
        gate.touch()
        bodies = await wait_all(service, one.id, two.id, loose.id)
    assert [b.status for b in bodies] == ["succeeded"] * 3


async def test_a_lane_hands_its_session_to_the_next_run_and_then_forgets_it() -> None:
    """Memory follows live runs: the lane is gone once its last run has left."""
    lanes = Conversations(limit=2)
    request = RunCreate(agentId="codex", conversationId="c-mem")
    first = lanes.enqueue("run-1", request, "2025-01-01T00:00:00.000Z")
    second = lanes.enqueue("run-2", request, "2025-01-01T00:00:00.001Z")
    never = anyio.Event()
    async with lanes.turn(first, never, lambda: SessionRef(threadId="t-1")) as go:
        assert go

    async def no_history(conversation_id: str) -> list[RunStatus]:
        raise AssertionError("the lane knows the session")

    assert await lanes.session_to_resume(second, no_history) == SessionRef(threadId="t-1")
    async with lanes.turn(second, never, lambda: None) as go:
        assert go
    assert lanes._lanes == {}
