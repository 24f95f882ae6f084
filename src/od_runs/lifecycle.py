"""The run lifecycle: create (idempotently), emit events, finish once, cancel, forget.

Invariants 1-4 live here: queued -> running -> one terminal status, the first finish wins and
logs the one `end` event; ids are dense per run; every batch is written to the run's log
before anyone is told of it; each write holds whole lines. Everything runs on one event
loop, so "append, then publish" needs no lock.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from .agents import Adapter, make_adapter
from .conversations import Conversations
from .encoding import now_iso
from .errors import BadRequest, Conflict
from .eventlog import LogLine, encode_lines
from .live_run import DEFAULT_GRACE, Run, request_hash
from .models import TERMINAL_STATES, RunCreate, RunError, RunState, RunStatus
from .redact import Scrubber, bundle_secrets, daemon_secrets, secret_env_values
from .status_events import StatusHub
from .storage import Commit, DuplicateRequest, EventStore, RunStore
from .store import RunRow
from .workspaces import Plan, Workspaces

log = logging.getLogger("od_runs.lifecycle")

# How long a finished run stays in memory before only the stores hold it (invariant 7).
FINISHED_TTL = 300.0


def new_run_id() -> str:
    """A fresh run id."""
    return f"run-{secrets.token_hex(8)}"


class ExistingRun(Exception):
    """An idempotent create that matched a run no longer in memory."""

    def __init__(self, body: RunStatus) -> None:
        super().__init__(body.id)
        self.body = body


class Lifecycle:
    """Holds the runs in memory and moves them through their states."""

    def __init__(
        self,
        store: RunStore,
        events: EventStore,
        conversations: Conversations,
        *,
        grace: float = DEFAULT_GRACE,
        finished_ttl: float = FINISHED_TTL,
    ) -> None:
        self.store = store
        self.events = events
        self.conversations = conversations
        self.grace = grace
        self.finished_ttl = finished_ttl
        self.runs: dict[str, Run] = {}
        self._create_lock = anyio.Lock()
        self._daemon_secrets = daemon_secrets()
        # Status changes of every run, for GET /api/events (the web monitor's list).
        self.status_hub = StatusHub()
        # Worktree runs (workspaces.py); RunService gives the data dir's, none by default.
        self.workspaces = Workspaces(None)
        # Several daemons (cluster.py): this daemon's worker id and host. A run made here is
        # claimed by it at once (lease epoch 1); a run claimed from the queue comes by adopt().
        self.worker: tuple[str, str] | None = None
        # Several daemons: called before a claimed run starts its agent; False if the run's
        # lease moved on (cluster.Cluster.starting). None: start at once.
        self.starting: Callable[[Run], Awaitable[bool]] | None = None

    # Creating -----------------------------------------------------------------------------

    async def create(self, request: RunCreate, *, adapter: Adapter | None = None) -> Run:
        """Create a queued run (or return the one an idempotent retry refers to)."""
        run_id = new_run_id()
        digest = request_hash(request)  # of the request as sent, for idempotent retries
        request, adapter, plan = await self.admit(request, run_id, adapter)
        async with self._create_lock:
            known = await self._retried(request, digest)
            if known is not None:
                return known
            epoch = 1 if self.worker is not None else 0
            run = self._new_run(request, digest, adapter, plan, run_id, epoch)
            try:
                await self.store.insert(self.row(run))
            except BaseException as exc:
                run.log.close()
                with suppress(Exception):  # what it made on disk goes too
                    await anyio.to_thread.run_sync(self.events.delete, run_id, run.events_log_path)
                if isinstance(exc, DuplicateRequest):  # another daemon made it meanwhile
                    known = await self._retried(request, digest)
                    if known is not None:
                        return known
                raise
            self.runs[run.id] = run
            # Under the lock: a conversation's runs take their places in creation order.
            run.ticket = self.conversations.enqueue(run.id, request, run.created_at)
        self.status_changed(run)
        return run

    async def _retried(self, request: RunCreate, digest: str) -> Run | None:
        """The run an idempotent retry names (ExistingRun if only the store has it), None if
        the request is new; Conflict for the same clientRequestId with another payload."""
        if not request.clientRequestId:
            return None
        existing = await self.store.by_request_id(request.clientRequestId)
        if existing is None:
            return None
        if existing.request_hash != digest:
            raise Conflict(
                f"clientRequestId {request.clientRequestId!r} was already used "
                "with a different payload"
            )
        known = self.runs.get(existing.body.id)
        if known is not None:
            return known
        raise ExistingRun(existing.body)

    async def admit(
        self, request: RunCreate, run_id: str, adapter: Adapter | None = None
    ) -> tuple[RunCreate, Adapter, Plan | None]:
        """Check a request (422s) and prepare it: its worktree plan, adapter, credentials."""
        plan = None
        if request.workspace is not None:
            # 422s for a bad repo or base; the agent's cwd becomes a path in the worktree.
            plan = await self.workspaces.plan(request, run_id)
            request = request.model_copy(update={"cwd": plan.cwd(request.cwd)})
        adapter = adapter or make_adapter(request)
        await adapter.load_credentials()  # credentials.py: provider variables, their values
        if plan is None and request.cwd is not None and not await anyio.Path(request.cwd).is_dir():
            raise BadRequest(f"cwd is not a directory: {request.cwd}")
        return request, adapter, plan

    def adopt(
        self,
        row: RunRow,
        request: RunCreate,
        admitted: tuple[RunCreate, Adapter, Plan | None] | None,
        epoch: int,
    ) -> Run:
        """Hold a run this daemon claimed from the cluster's queue (admitted None: it could
        not be prepared here, and the caller fails it)."""
        body = row.body
        if admitted is None:
            run = self._new_run(request, row.request_hash, None, None, body.id, epoch)
        else:
            run = self._new_run(
                admitted[0], row.request_hash, admitted[1], admitted[2], body.id, epoch
            )
        run.created_at = body.createdAt
        run.requeueable = True
        self.runs[run.id] = run
        run.ticket = self.conversations.enqueue(run.id, run.request, run.created_at)
        self.store.schedule(self.row(run))
        self.status_changed(run)
        return run

    def _new_run(
        self,
        request: RunCreate,
        digest: str | None,
        adapter: Adapter | None,
        plan: Plan | None,
        run_id: str,
        epoch: int,
    ) -> Run:
        credentials = adapter.secret_values() if adapter is not None else []
        secrets_ = [
            *self._daemon_secrets,
            *credentials,
            *secret_env_values(request.env),
            *bundle_secrets(request.toolBundle),
        ]
        run_log = self.events.create(run_id, epoch)
        now = now_iso()
        run = Run(
            id=run_id,
            request=request,
            created_at=now,
            updated_at=now,
            log=run_log,
            scrubber=Scrubber(secrets_),
            events_log_path=self.events.location(run_log),
            request_digest=digest,
            adapter=adapter,
            lease_epoch=epoch,
        )
        if plan is not None:
            run.workspace, run.workspace_info = plan, plan.info()
        if self.worker is not None:
            run.worker_id, run.host = self.worker
        return run

    # Emitting -----------------------------------------------------------------------------

    def emit(self, run: Run, event: str, data: Any = None) -> None:
        """Append one event to the run."""
        self.emit_many(run, [(event, data)])

    def emit_many(self, run: Run, items: Sequence[tuple[str, Any]], *, force: bool = False) -> None:
        """Append events in one log write, then publish them (invariants 2-4)."""
        self._append(run, items, force=force)

    def _append(
        self, run: Run, items: Sequence[tuple[str, Any]], *, force: bool = False
    ) -> Commit | None:
        """Write a batch; publish it now, or once its Commit resolves (a database log)."""
        if not items or ((run.terminal or run.ending) and not force) or run.log_error is not None:
            return None
        first = run.assigned_id + 1
        raw, lines, lengths = encode_lines(first, items, now_iso(), run.scrubber.scrub_json)
        if run.log.writable:
            try:
                commit = run.log.append_batch(first, raw, lines, lengths)
            except OSError as exc:
                self.log_broken(run, exc)
                return None
            run.assigned_id = lines[-1].id
            if commit is not None:
                commit.then(lambda error: self._committed(run, lines, error))
                return commit
        run.assigned_id = lines[-1].id
        self._published(run, lines)
        return None

    def _committed(self, run: Run, lines: list[LogLine], error: OSError | None) -> None:
        if error is None:
            self._published(run, lines)
        elif run.log_error is None:
            self.log_broken(run, error)

    def _published(self, run: Run, lines: list[LogLine]) -> None:
        run.last_event_id = lines[-1].id
        self._publish(run, lines)
        self.store.schedule_build(run.id, partial(self.row, run))

    def emit_error(self, run: Run, error: RunError) -> None:
        """Log an `error` event that says what went wrong, and why the run will fail."""
        run.error = error.model_copy(update={"message": run.scrubber.scrub(error.message)})
        self.emit(run, "error", {"message": error.message, "error": error.model_dump()})

    def log_broken(self, run: Run, exc: OSError) -> None:
        """The disk refused a write: stop the run, it cannot be recorded any more."""
        # A database write may say why itself (pg_events.LeaseLost: invariant 11).
        known: RunError | None = getattr(exc, "run_error", None)
        if known is not None:
            log.warning("run %s: %s", run.id, exc)
            run.log_error = known
            run.log.close()
            run.fanout.close()
            run.cancel_event.set()
            return
        log.error("run %s: cannot write %s: %s", run.id, run.events_log_path, exc)
        where = Path(run.events_log_path).parent if run.events_log_path else "the data dir"
        run.log_error = RunError(
            code="LOG_WRITE_FAILED",
            message=(
                f"The run's event log could not be written ({exc.strerror or exc}), so the run "
                f"was stopped. Check free space and permissions of {where}."
            ),
            retryable=True,
        )
        run.log.close()
        run.fanout.close()
        run.cancel_event.set()  # the supervisor stops the child, and the end says why

    def _publish(self, run: Run, lines: list[LogLine]) -> None:
        run.tail.extend(lines)
        run.fanout.offer(lines)
        run.wake()

    # Ending -------------------------------------------------------------------------------

    def finish(
        self,
        run: Run,
        status: RunState,
        exit_code: int | None = None,
        signal: str | None = None,
        error: RunError | None = None,
    ) -> bool:
        """Move a run to a terminal status; only the first call counts (invariant 1)."""
        if run.terminal or run.ending:
            return False
        if status not in TERMINAL_STATES:
            raise ValueError(f"not a terminal status: {status}")
        run.ending = True
        if error is not None:
            run.error = error.model_copy(update={"message": run.scrubber.scrub(error.message)})
        end: dict[str, Any] = {"status": status, "code": exit_code, "signal": signal}
        if run.error is not None and status == "failed":
            end["errorCode"] = run.error.code
            end["error"] = run.error.message
        commit = self._append(run, [("end", end)], force=True)
        run.log.close()
        # A database log: the status turns terminal once the end is committed and published,
        # so nobody sees a terminal run whose end they cannot read yet.
        if commit is None:
            self._ended(run, status, exit_code, signal)
        else:
            commit.then(lambda _: self._ended(run, status, exit_code, signal))
        return True

    def _ended(self, run: Run, status: RunState, exit_code: int | None, signal: str | None) -> None:
        if run.log_error is not None and run.log_error.code == "WORKER_LOST":
            # Another daemon concluded the run (invariant 12): what it stored is the run now,
            # so this daemon forgets its own view and reads answer from the stores.
            self.runs.pop(run.id, None)
        run.status = status
        run.exit_code = exit_code
        run.signal = signal
        run.finished_at = run.updated_at = now_iso()
        if run.ticket is not None and not run.supervised:
            self.conversations.abandon(run.ticket)
        run.finished_mono = anyio.current_time()
        run.done.set()
        run.wake()
        self.store.schedule(self.row(run))
        self.status_changed(run)

    def stop_with(self, run: Run, error: RunError) -> None:
        """Stop the run's child on the daemon's own initiative (stall, timeout, verdict)."""
        if run.stop_error is not None or run.cancel_event.is_set():
            return
        run.stop_error = error
        run.cancel_grace = self.grace
        self.emit_error(run, error)
        run.cancel_event.set()

    async def cancel(self, run_id: str, grace: float | None = None) -> Run | None:
        """Cancel a run held in memory and return it once its process group is gone."""
        run = self.runs.get(run_id)
        if run is None or run.terminal:
            return run
        if not run.cancel_requested:
            run.cancel_requested = True
            run.updated_at = now_iso()
            self.store.schedule(self.row(run))
            self.status_changed(run)
        run.cancel_grace = self.grace if grace is None else grace
        if not run.supervised:
            self.finish(run, "canceled")
        run.cancel_event.set()
        await run.done.wait()
        return run

    async def cancel_all(self, grace: float | None = None) -> list[RunStatus]:
        """Cancel every active run (abort, SIGTERM, grace, SIGKILL) and wait for all."""
        active = [r for r in self.runs.values() if not r.terminal]
        results: list[RunStatus] = []

        async def one(run: Run) -> None:
            await self.cancel(run.id, grace)
            results.append(run.status_body())

        async with anyio.create_task_group() as tg:
            for run in active:
                tg.start_soon(one, run)
        return results

    # Bookkeeping --------------------------------------------------------------------------

    def mark_running(self, run: Run, pid: int | None, start_time: int | None) -> None:
        """The run's agent is up: record its process (crash recovery kills by it)."""
        run.child_pid, run.child_start_time = pid, start_time
        run.status = "running"
        run.started_at = run.updated_at = now_iso()
        self.store.schedule(self.row(run))

    def status_changed(self, run: Run) -> None:
        """Tell the status hub's readers (the web monitor's list) about the run."""
        if len(self.status_hub):  # building a status body costs more than asking
            self.status_hub.publish(run.status_body())

    def row(self, run: Run) -> RunRow:
        """What the run store keeps of a run."""
        return RunRow(
            body=run.status_body(),
            client_request_id=run.request.clientRequestId,
            request_hash=run.request_digest,
            child_start_time=run.child_start_time,
            worker_id=run.worker_id,
            lease_epoch=run.lease_epoch,
        )

    def active_count(self) -> int:
        """How many runs are queued or running."""
        return sum(1 for r in self.runs.values() if not r.terminal)

    async def janitor(self) -> None:
        """Drop finished runs from memory after the TTL, forever (invariant 7)."""
        while True:
            await anyio.sleep(min(self.finished_ttl, 30.0))
            self.evict_finished()

    def evict_finished(self, older_than: float | None = None) -> int:
        """Forget finished runs nobody follows; the stores still have them."""
        ttl = self.finished_ttl if older_than is None else older_than
        now = anyio.current_time()
        stale = [
            run_id
            for run_id, run in self.runs.items()
            if run.terminal and not run.fanout.subscribers and now - run.finished_mono >= ttl
        ]
        for run_id in stale:
            del self.runs[run_id]
        return len(stale)


__all__ = ["FINISHED_TTL", "ExistingRun", "Lifecycle", "new_run_id"]
