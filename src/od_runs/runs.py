"""RunService: the one object the API layers (REST, SSE, MCP, CLI) talk to.

It composes the parts, each in its own module: the lifecycle (lifecycle.py: create, emit,
finish, cancel), supervision (supervision.py: driving adapters and sessions), and reads
(reads.py: get, list, wait, replay), over the storage protocols (storage.py). This module
only wires them together and opens and closes them (open_service).
"""

from __future__ import annotations

import builtins
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio
from anyio.abc import TaskGroup

from . import recovery
from .agents import Adapter
from .cluster import Cluster, ClusterSettings
from .conversations import DEFAULT_LIMIT as CONVERSATION_LIMIT
from .conversations import Conversations
from .encoding import now_iso
from .errors import BadRequest, NotFound, Unavailable
from .eventlog import LogLine
from .lifecycle import FINISHED_TTL, ExistingRun, Lifecycle
from .live_run import DEFAULT_GRACE, Attachment, Run
from .models import (
    DiffPage,
    Event,
    RunCreate,
    RunError,
    RunState,
    RunStatus,
    SessionDetail,
    SessionStatus,
    WorkerInfo,
    WorktreeEntry,
)
from .reads import RunReads
from .retention import Retention
from .sessions import SessionManager
from .status_events import StatusHub
from .storage import EventStore, FileEventStore, MemoryEventStore, RunLog, RunStore
from .store import DB_NAME, SqliteRunStore
from .supervision import RUN_ID_ENV, Supervisor
from .workspaces import MAX_DIFF_BYTES, Workspaces

if TYPE_CHECKING:
    from .pg_events import PgEventStore
    from .pg_store import PgRunStore


class RunService:
    """Creates, drives, tracks, cancels and serves runs."""

    def __init__(
        self,
        store: RunStore,
        events: EventStore,
        task_group: TaskGroup,
        *,
        grace: float = DEFAULT_GRACE,
        finished_ttl: float = FINISHED_TTL,
        max_conversations: int = CONVERSATION_LIMIT,
        workspaces: Workspaces | None = None,
        data_dir: Path | None = None,
        min_free: int = 0,
        retain: float | None = None,
    ) -> None:
        self.store = store
        self.grace = grace
        self._tg = task_group
        self.lifecycle = Lifecycle(
            store, events, Conversations(max_conversations), grace=grace, finished_ttl=finished_ttl
        )
        # Live agent sessions (codex-app-server): one process per conversation, runs are turns.
        self.sessions = SessionManager(store, task_group, grace)
        if workspaces is not None:
            self.lifecycle.workspaces = workspaces
        self.supervisor = Supervisor(self.lifecycle, self.sessions)
        self.reads = RunReads(self.lifecycle)
        # Delete, prune, the retention policy and the free-space floor (retention.py).
        self.retention = Retention(self.lifecycle, data_dir, min_free=min_free, retain=retain)
        self.retention.workspace_cleanup = self._remove_workspace_of
        # Several daemons on one database (cluster.py); None for SQLite or memory.
        self.cluster: Cluster | None = None

    def launch(self, run: Run) -> None:
        """Supervise a run in the service's task group."""
        run.supervised = True
        self._tg.start_soon(self.supervisor.supervise, run)

    @property
    def status_hub(self) -> StatusHub:
        """Status changes of every run (GET /api/events)."""
        return self.lifecycle.status_hub

    @property
    def conversations(self) -> Conversations:
        """The conversation lanes (one run at a time per conversation)."""
        return self.lifecycle.conversations

    # Lifecycle ----------------------------------------------------------------------------

    async def create(self, request: RunCreate, *, adapter: Adapter | None = None) -> Run:
        """Create a queued run without starting it (or the run an idempotent retry names)."""
        return await self.lifecycle.create(request, adapter=adapter)

    async def start(self, request: RunCreate, *, adapter: Adapter | None = None) -> RunStatus:
        """Create a run and start supervising it; returns its status body at once."""
        await self.retention.admit()
        if self.cluster is not None:
            # Queued for whichever daemon claims it, unless this one has room for it now.
            queued = await self.cluster.accept(request, adapter)
            if queued is not None:
                return queued
        try:
            run = await self.lifecycle.create(request, adapter=adapter)
        except ExistingRun as existing:
            return existing.body
        if run.adapter is not None and not run.terminal and not run.supervised:
            self.launch(run)
        return run.status_body()

    def emit(self, run: Run, event: str, data: Any = None) -> None:
        """Append one event to the run."""
        self.lifecycle.emit(run, event, data)

    def emit_many(self, run: Run, items: Sequence[tuple[str, Any]], *, force: bool = False) -> None:
        """Append events in one log write, then publish them (invariants 2-4)."""
        self.lifecycle.emit_many(run, items, force=force)

    def finish(
        self,
        run: Run,
        status: RunState,
        exit_code: int | None = None,
        signal: str | None = None,
        error: RunError | None = None,
    ) -> bool:
        """Move a run to a terminal status; only the first call counts (invariant 1)."""
        return self.lifecycle.finish(run, status, exit_code, signal, error)

    async def cancel(self, run_id: str, grace: float | None = None) -> RunStatus:
        """Cancel a run and return once its process group is gone (on any daemon)."""
        if self.cluster is not None and run_id not in self.lifecycle.runs:
            await self.reads.get(run_id)  # 404 for an unknown id
            return await self.cluster.cancel(run_id)
        run = await self.lifecycle.cancel(run_id, grace)
        return run.status_body() if run is not None else await self.reads.get(run_id)

    async def shutdown_active(self, grace: float | None = None) -> list[RunStatus]:
        """Cancel every active run (abort, SIGTERM, grace, SIGKILL) and wait for all."""
        return await self.lifecycle.cancel_all(grace)

    async def workers(self) -> builtins.list[WorkerInfo] | None:
        """The daemons on the database (None without one, or while it is unreachable)."""
        if self.cluster is None:
            return None
        try:
            return await self.cluster.workers()
        except Unavailable:
            return None  # the daemon itself is alive: health still answers

    @property
    def worker_id(self) -> str | None:
        """This daemon's worker id (None without a database)."""
        return self.cluster.worker_id if self.cluster is not None else None

    def find(self, run_id: str) -> Run | None:
        """The in-memory run, if it is still held."""
        return self.lifecycle.runs.get(run_id)

    def active_count(self) -> int:
        """How many runs are queued or running."""
        return self.lifecycle.active_count()

    def evict_finished(self, older_than: float | None = None) -> int:
        """Forget finished runs nobody follows; the stores still have them (invariant 7)."""
        return self.lifecycle.evict_finished(older_than)

    # Reads --------------------------------------------------------------------------------

    async def get(self, run_id: str) -> RunStatus:
        """The status body of a run, from memory or the run store."""
        return await self.reads.get(run_id)

    async def list(
        self,
        project_id: str | None = None,
        conversation_id: str | None = None,
        status: str | None = None,
        limit: int = 200,
    ) -> builtins.list[RunStatus]:
        """Status bodies, newest first; status 'active' means not terminal."""
        return await self.reads.list(project_id, conversation_id, status, limit)

    async def wait(self, run_id: str, timeout: float | None = None) -> RunStatus:
        """The status body once the run is terminal (or as it is when timeout passes)."""
        return await self.reads.wait(run_id, timeout)

    async def wait_for_events(self, run_id: str, after: int, timeout: float) -> RunStatus:
        """Return when the run has events after `after`, is terminal, or timeout passes."""
        return await self.reads.wait_for_events(run_id, after, timeout)

    async def watch(self, run_id: str, on_change: Callable[[RunStatus], Awaitable[None]]) -> None:
        """Call on_change with the status now and after each change, until it is terminal."""
        await self.reads.watch(run_id, on_change)

    async def attach(self, run_id: str) -> Attachment:
        """Register a live subscriber and note the head id in one step (invariant 5)."""
        return await self.reads.attach(run_id)

    def detach(self, attachment: Attachment) -> None:
        """Forget a subscriber."""
        self.reads.detach(attachment)

    def replay(
        self, run_log: RunLog, after: int, upto: int | None
    ) -> AsyncIterator[builtins.list[LogLine]]:
        """Batches of logged events with after < id <= upto, read off the event loop."""
        return self.reads.replay(run_log, after, upto)

    def replay_frames(
        self, run_log: RunLog, after: int, upto: int | None
    ) -> AsyncIterator[tuple[bytes, int, str]]:
        """SSE frames of logged events with after < id <= upto."""
        return self.reads.replay_frames(run_log, after, upto)

    async def events(
        self, run_id: str, after: int = 0, limit: int = 100
    ) -> tuple[builtins.list[Event], bool]:
        """Up to limit events after a cursor, and whether more exist."""
        return await self.reads.events(run_id, after, limit)

    def final_line(self, attachment: Attachment) -> LogLine | None:
        """The end event of a finished run."""
        return self.reads.final_line(attachment)

    # Worktrees (workspaces.py) -----------------------------------------------------------

    async def diff(
        self, run_id: str, path: str | None = None, offset: int = 0, max_bytes: int | None = None
    ) -> DiffPage:
        """A page of the run's worktree diff against its base; NotFound without a workspace."""
        info = (await self.get(run_id)).workspace
        if info is None:
            raise NotFound(f"run {run_id} has no workspace", code="NO_WORKSPACE")
        size = MAX_DIFF_BYTES if max_bytes is None else min(max_bytes, MAX_DIFF_BYTES)
        text, next_offset, more = await self.lifecycle.workspaces.diff(info, path, offset, size)
        return DiffPage(diff=text, offset=offset, nextOffset=next_offset, hasMore=more)

    def _active_workspaces(self) -> set[str]:
        return {
            r.workspace.id
            for r in self.lifecycle.runs.values()
            if r.workspace is not None and not r.terminal
        }

    async def list_worktrees(self) -> builtins.list[WorktreeEntry]:
        """Every worktree od-runs made, oldest first."""
        return await self.lifecycle.workspaces.entries(self._active_workspaces())

    async def remove_worktree(self, worktree_id: str, force: bool = False) -> WorktreeEntry:
        """Remove one worktree; uncommitted changes need force, an active run forbids it."""
        active = self._active_workspaces()
        return await self.lifecycle.workspaces.remove(worktree_id, force=force, active=active)

    async def _remove_workspace_of(self, body: RunStatus, force: bool) -> None:
        """Before a run is deleted: remove its worktree, refusing (409) one with uncommitted
        changes unless forced. A worktree already gone (its keep policy) is fine."""
        if body.workspace is None:
            return
        active = self._active_workspaces()
        with suppress(NotFound):
            await self.lifecycle.workspaces.remove(body.workspace.id, force=force, active=active)

    async def prune_worktrees(self) -> builtins.list[WorktreeEntry]:
        """Remove idle worktrees without changes and git's stale worktree entries."""
        return await self.lifecycle.workspaces.prune(self._active_workspaces())

    async def list_sessions(
        self, conversation_id: str | None = None, status: str | None = None, limit: int = 200
    ) -> builtins.list[SessionStatus]:
        """Agent sessions, most recently updated first (see sessions.py)."""
        if status is not None and status not in ("active", "idle", "retired"):
            raise BadRequest("status must be one of active, idle, retired")
        return await self.sessions.list(conversation_id, status, limit)

    async def get_session(self, session_id: str) -> SessionDetail:
        """A session with its recent events."""
        return await self.sessions.get(session_id)


@asynccontextmanager
async def open_service(
    data_dir: Path | None,
    *,
    grace: float = DEFAULT_GRACE,
    finished_ttl: float = FINISHED_TTL,
    max_conversations: int = CONVERSATION_LIMIT,
    min_free: int = 0,
    retain: float | None = None,
    database_url: str | None = None,
    cluster: ClusterSettings | None = None,
) -> AsyncIterator[RunService]:
    """Open the stores, recover from a crash, run the service, and shut it down cleanly.

    With a database_url the runs, sessions and events live in PostgreSQL (pg_store.py,
    pg_events.py); data_dir still holds the lock and each run's local events.jsonl.
    """
    if database_url is not None and data_dir is None:
        raise ValueError("a database_url needs a data_dir too (its lock and local logs)")
    lock: int | None = None
    store: RunStore
    events: EventStore
    pg_events: PgEventStore | None = None
    if data_dir is not None:
        data_dir = Path(await anyio.Path(data_dir).resolve())
        await anyio.to_thread.run_sync(recovery.prepare_data_dir, data_dir)
        # Before recovery: a second daemon on this dir must not reap the first one's runs.
        lock = recovery.lock_data_dir(data_dir)
        try:
            if database_url is not None:
                store, pg_events = await _open_postgres(database_url, data_dir)
                events = pg_events
            else:
                store = await SqliteRunStore.open(data_dir / DB_NAME)
                events = FileEventStore(data_dir)
        except BaseException:
            os.close(lock)
            raise
    else:
        store = await SqliteRunStore.open(Path(":memory:"))
        events = MemoryEventStore()
    try:
        workspaces = Workspaces(data_dir)
        if data_dir is not None:
            await recovery.finish_deletes(store, events, data_dir)
        if pg_events is None and data_dir is not None:
            await recovery.recover(store, RUN_ID_ENV)
        if data_dir is not None:

            async def run_exists(run_id: str) -> bool:
                return await store.get(run_id) is not None

            # Stale `git worktree` entries, and worktrees whose runs are gone, a crash left.
            await workspaces.reconcile(run_exists)
        async with anyio.create_task_group() as tg:
            service = RunService(
                store,
                events,
                tg,
                grace=grace,
                finished_ttl=finished_ttl,
                max_conversations=max_conversations,
                workspaces=workspaces,
                data_dir=data_dir,
                min_free=min_free,
                retain=retain,
            )
            if pg_events is not None:
                service.cluster = Cluster(
                    cluster or ClusterSettings(),
                    service.lifecycle,
                    cast("PgRunStore", store),
                    pg_events,
                    data_dir,
                    service.launch,
                )
                # Before serving: reap and end what this worker left (pid + start time).
                await service.cluster.join(lambda row: recovery.kill_leftovers(row, RUN_ID_ENV))
                service.reads.remote = service.cluster.remote
                service.cluster.sessions = service.sessions
                service.retention.on_delete = service.cluster.deleted_here
            tg.start_soon(store.run_writer)
            if pg_events is not None:
                tg.start_soon(pg_events.run_writer)
            if service.cluster is not None:
                await service.cluster.run(tg)
            tg.start_soon(service.lifecycle.janitor)
            tg.start_soon(service.sessions.janitor)
            if data_dir is not None:
                await service.sessions.recover()
            tg.start_soon(service.retention.run_policy)
            try:
                yield service
            finally:
                with anyio.CancelScope(shield=True):
                    if service.cluster is not None:
                        await service.cluster.leave()  # unstarted runs go back to the queue
                    await service.shutdown_active(grace)
                    await service.sessions.close()
                    service.status_hub.close()
                    if pg_events is not None:
                        await pg_events.flush()
                    await store.flush()
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            if pg_events is not None:
                await pg_events.close()
            await store.close()
        if lock is not None:
            os.close(lock)


async def _open_postgres(url: str, data_dir: Path) -> tuple[RunStore, PgEventStore]:
    """The PostgreSQL run store and event store (imported here: an optional dependency)."""
    try:
        from .pg_events import PgEventStore
        from .pg_store import PgRunStore
    except ImportError as exc:
        raise RuntimeError(
            f"--database-url needs the postgres extra (pip install 'od-runs[postgres]'): {exc}"
        ) from None
    store = await PgRunStore.open(url)
    try:
        events = await PgEventStore.connect(url, data_dir)
    except BaseException:
        await store.close()
        raise
    return store, events


__all__ = ["RUN_ID_ENV", "Attachment", "Run", "RunService", "now_iso", "open_service"]
