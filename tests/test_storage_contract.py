"""The storage contract: the invariants that depend on storage, run against every backend.

A backend is a RunStore plus an EventStore (storage.py): SQLite with per-run JSONL files (the
default), SQLite in memory with memory logs (a daemon without a data dir), and PostgreSQL with
the executing daemon's local JSONL files (a throwaway server: tests/pg.py). Every test here
runs on each of them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from od_runs.eventlog import LogLine
from od_runs.models import RunCreate
from od_runs.runs import RunService, open_service

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Backend:
    """How to open a service on one storage backend, and whether it outlives the service."""

    name: str
    # Opens a service on a temp dir and, for a database backend, a database URL.
    start: Callable[[Path, str | None], AbstractAsyncContextManager[RunService]]
    # Whether runs outlive the service (a memory backend keeps nothing, by design).
    durable: bool
    database: bool = False
    url: str | None = None

    def open(self, tmp: Path) -> AbstractAsyncContextManager[RunService]:
        """A service on this backend (the same database each time: restarts see it)."""
        return self.start(tmp, self.url)


BACKENDS = [
    Backend("sqlite+files", lambda tmp, _: open_service(tmp / "data"), durable=True),
    Backend("memory", lambda tmp, _: open_service(None), durable=False),
    Backend(
        "postgres",
        lambda tmp, url: open_service(tmp / "data", database_url=url),
        durable=True,
        database=True,
    ),
]


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def backend(request: pytest.FixtureRequest) -> Backend:
    chosen: Backend = request.param
    if chosen.database:
        return replace(chosen, url=request.getfixturevalue("pg_url"))
    return chosen


async def logged(service: RunService, run_id: str) -> list[LogLine]:
    """Every event the backend holds for the run, read back through the event store."""
    attachment = await service.attach(run_id)
    service.detach(attachment)
    lines: list[LogLine] = []
    async for batch in service.replay(attachment.log, 0, None):
        lines += batch
    return lines


def printing(count: int) -> RunCreate:
    """A command run that prints count numbered lines."""
    code = f"for i in range({count}): print('line', i)"
    return RunCreate(agentId="command", command=[sys.executable, "-c", code])


async def test_the_backend_keeps_one_end_event_last_and_the_first_finish(
    backend: Backend, tmp_path: Path
) -> None:
    """Invariant 1: the first terminal transition wins; one `end`, always the last event."""
    async with backend.open(tmp_path) as service:
        run = await service.create(RunCreate())
        service.emit(run, "stdout", {"text": "hello"})
        assert service.finish(run, "succeeded", 0) is True
        assert service.finish(run, "failed", 1) is False
        service.emit(run, "stdout", {"text": "too late"})
        # A database backend publishes (and ends) once the commit is back.
        await service.wait(run.id, timeout=10)
        lines = await logged(service, run.id)
        assert [line.event for line in lines] == ["stdout", "end"]
        assert json.loads(lines[-1].line)["data"]["status"] == "succeeded"
        assert (await service.get(run.id)).status == "succeeded"


async def test_the_backend_gives_dense_ids_from_one(backend: Backend, tmp_path: Path) -> None:
    """Invariant 2: ids are 1, 2, 3 … per run, with no gap, whatever the batch sizes."""
    async with backend.open(tmp_path) as service:
        status = await service.start(printing(3000))
        final = await service.wait(status.id, timeout=30)
        assert final.status == "succeeded"
        ids = [line.id for line in await logged(service, status.id)]
        assert ids == list(range(1, final.lastEventId + 1))
        assert len(ids) == 3000 + 2  # the lines, `start` and `end`


async def test_a_batch_is_in_the_backend_before_anyone_is_offered_it(
    backend: Backend, tmp_path: Path
) -> None:
    """Invariant 3: at the moment a batch is published, the event store already holds it."""
    async with backend.open(tmp_path) as service:
        run = await service.create(RunCreate())
        offered: list[int] = []
        missing: list[int] = []
        publish = run.fanout.offer

        def checking_offer(lines: list[LogLine]) -> None:
            held = {line.id for batch in run.log.read_after(0) for line in batch}
            offered.extend(line.id for line in lines)
            missing.extend(line.id for line in lines if line.id not in held)
            publish(lines)

        run.fanout.offer = checking_offer  # type: ignore[method-assign]
        for n in range(50):
            service.emit_many(run, [("stdout", {"text": f"{n}-{k}"}) for k in range(5)])
        service.finish(run, "succeeded", 0)
        await service.wait(run.id, timeout=10)
        assert offered == list(range(1, 252))
        assert missing == []


async def test_replay_from_every_cursor_gives_exactly_the_events_after_it(
    backend: Backend, tmp_path: Path
) -> None:
    """Invariant 5: replay from any cursor is gap-free and duplicate-free."""
    async with backend.open(tmp_path) as service:
        status = await service.start(printing(700))
        final = await service.wait(status.id, timeout=30)
        head = final.lastEventId
        for cursor in (0, 1, 255, 256, 257, 500, head - 1, head, head + 5):
            events, more = await service.events(status.id, after=cursor, limit=10_000)
            assert [e.id for e in events] == list(range(cursor + 1, head + 1)), cursor
            assert not more


@pytest.mark.parametrize(
    "backend", [b for b in BACKENDS if b.durable], ids=lambda b: b.name, indirect=True
)
async def test_a_run_reads_back_the_same_after_a_restart(backend: Backend, tmp_path: Path) -> None:
    """Invariants 2 and 5: after a restart a durable backend replays the run as logged."""
    async with backend.open(tmp_path) as service:
        status = await service.start(printing(400))
        final = await service.wait(status.id, timeout=30)
        before = [line.line for line in await logged(service, status.id)]
    async with backend.open(tmp_path) as service:
        again = await service.get(status.id)
        after = [line.line for line in await logged(service, status.id)]
    assert again.status == final.status == "succeeded"
    assert again.lastEventId == final.lastEventId
    assert after == before


async def test_a_deleted_run_is_gone_from_the_backend_and_an_active_one_is_kept(
    backend: Backend, tmp_path: Path
) -> None:
    """Issue 15: delete removes a finished run's row and events; an active run is refused."""
    from od_runs.errors import Conflict, NotFound

    async with backend.open(tmp_path) as service:
        done = await service.create(RunCreate())
        service.emit(done, "stdout", {"text": "hello"})
        service.finish(done, "succeeded", 0)
        await service.wait(done.id)  # a database backend finishes once its end is committed
        active = await service.create(RunCreate())
        with pytest.raises(Conflict) as refused:
            await service.retention.delete(active.id)
        assert refused.value.code == "RUN_ACTIVE"
        await service.retention.delete(done.id)
        with pytest.raises(NotFound):
            await service.get(done.id)
        with pytest.raises(NotFound):
            await service.events(done.id)
        assert [r.id for r in await service.list()] == [active.id]
        assert (await service.get(active.id)).status == "queued"
        service.finish(active, "canceled")
        await service.wait(active.id)
    if backend.durable:
        async with backend.open(tmp_path) as service:
            assert [r.id for r in await service.list()] == [active.id]
            assert not (tmp_path / "data" / done.id).exists()
