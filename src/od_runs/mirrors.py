"""Runs another daemon executes, followed here so that this daemon serves them live too.

A mirror is a read-only Run: its events come from the database, read after each
notification of a new head (ids only, never data: pg_cluster.py) or after a slow poll in case
a notification was lost. It publishes them to its own fanout exactly as the executor's
lifecycle does, so SSE, the JSON pages, wait_run and the resources work unchanged, with the
same replay -> live handoff (invariant 5). A mirror lives while its run is active and somebody
asked for it; it ends when the run's stored status is terminal.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from itertools import islice

import anyio
from anyio.abc import TaskGroup

from .eventlog import LogLine
from .lifecycle import Lifecycle
from .live_run import Run
from .models import RunCreate
from .redact import Scrubber
from .store import RunRow

log = logging.getLogger("od_runs.mirrors")

# A lost notification costs at most this much delay.
POLL_SECONDS = 1.0
# Pages (pg_events.PAGE rows each) read per hop to a worker thread.
PAGES_PER_READ = 8


class Mirrors:
    """The mirrors of this daemon, by run id."""

    def __init__(self, lifecycle: Lifecycle, task_group: TaskGroup) -> None:
        self.lifecycle = lifecycle
        self.runs: dict[str, Run] = {}
        self._wakes: dict[str, anyio.Event] = {}
        self._refresh: set[str] = set()
        self._tg = task_group

    async def follow(self, row: RunRow) -> Run:
        """The mirror of a run another daemon executes (made now if there is none)."""
        known = self.runs.get(row.body.id)
        if known is not None:
            return known
        body = row.body
        run_log = self.lifecycle.events.open(body.id, body.eventsLogPath)
        last = await anyio.to_thread.run_sync(run_log.last)
        known = self.runs.get(body.id)  # another reader made it meanwhile
        if known is not None:
            return known
        run = Run(
            id=body.id,
            request=RunCreate(agentId=body.agentId),
            created_at=body.createdAt,
            log=run_log,
            scrubber=Scrubber([]),
            events_log_path=body.eventsLogPath,
            status=body.status,
            remote_body=body,
        )
        run.supervised = True  # nothing here may finish it
        if last is not None:
            run.last_event_id = run.assigned_id = last.id
            run.tail.append(last)
        self.runs[run.id] = run
        self._wakes[run.id] = anyio.Event()
        self._tg.start_soon(self._feed, run)
        return run

    def poke(self, run_id: str, status: bool = False) -> None:
        """A notification: new events (or, with status, a new status row) for run_id."""
        wake = self._wakes.get(run_id)
        if wake is not None:
            if status:
                self._refresh.add(run_id)
            wake.set()

    def poke_all(self) -> None:
        """After notifications may have been lost (a reconnect): everyone reads again."""
        for run_id in list(self._wakes):
            self.poke(run_id, status=True)

    def gone(self, run_id: str) -> None:
        """The run was deleted: its readers end."""
        run = self.runs.get(run_id)
        if run is not None:
            run.fanout.close()
            self.poke(run_id, status=True)

    async def _feed(self, run: Run) -> None:
        try:
            while not run.terminal:
                wake = self._wakes[run.id]
                with anyio.move_on_after(POLL_SECONDS):
                    await wake.wait()
                self._wakes[run.id] = anyio.Event()
                try:
                    ended = await self._catch_up(run)
                    refresh = run.id in self._refresh
                    self._refresh.discard(run.id)
                    # A poll (no wake-up) re-reads the status too.
                    stale = ended or refresh or not wake.is_set()
                    if stale and not await self._refresh_status(run):
                        return
                except Exception as exc:  # the database went away: its readers wait for it
                    log.warning("mirror of run %s cannot read the database: %s", run.id, exc)
        finally:
            self.runs.pop(run.id, None)
            self._wakes.pop(run.id, None)
            self._refresh.discard(run.id)
            run.fanout.close()
            run.done.set()
            run.wake()

    async def _catch_up(self, run: Run) -> bool:
        """Publish the rows past what this mirror has; True once the `end` is among them."""
        while True:
            batches: list[list[LogLine]] = await anyio.to_thread.run_sync(
                _read, run.log.read_after(run.last_event_id)
            )
            for lines in batches:
                lines = [x for x in lines if x.id > run.last_event_id]
                if lines:
                    run.last_event_id = run.assigned_id = lines[-1].id
                    run.tail.extend(lines)
                    run.fanout.offer(lines)
                    run.wake()
            if len(batches) < PAGES_PER_READ:
                return bool(run.tail) and run.tail[-1].event == "end"

    async def _refresh_status(self, run: Run) -> bool:
        """Take the stored status body; False if the run is gone (deleted)."""
        row = await self.lifecycle.store.get(run.id)
        if row is None:
            return False
        run.remote_body = row.body
        run.status = row.body.status
        run.worker_id = row.body.workerId
        run.wake()
        return True


def _read(pages: Iterator[list[LogLine]]) -> list[list[LogLine]]:
    return list(islice(pages, PAGES_PER_READ))


__all__ = ["POLL_SECONDS", "Mirrors"]
