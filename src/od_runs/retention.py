"""Keeping the disk in check: delete a run, prune old runs, a retention policy, a free-space floor.

A delete removes three things in a fixed order: it writes an intent (DeleteJournal) that
survives a crash, removes the run's row (so nobody finds it any more: GET is 404, lists skip
it), then its events (EventStore.delete), and only then drops the intent. A crash anywhere in
between leaves the intent, and recovery.finish_deletes completes the delete at the next start:
there is never a row without its log, nor a log without its row, once the daemon is up.

Nothing here deletes on its own unless asked: the retention policy (--retain) is off by default.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

import anyio

from .errors import BadRequest, Conflict, NotFound, OdRunsError
from .lifecycle import Lifecycle
from .models import RUN_ID_PATTERN, TERMINAL_STATES, DataDirUsage, RunStatus
from .retention_models import DeleteResult, PruneResult, format_bytes
from .storage import DELETING_PREFIX, tree_size

log = logging.getLogger("od_runs.retention")

# Where delete intents live under the data dir: one empty file per run being deleted.
JOURNAL_NAME = ".delete-intents"
# The default free-space floor below which new runs are refused (--min-free).
DEFAULT_MIN_FREE = 1 << 30
# How long /api/health may show a data dir size (walking a big dir is not free).
USAGE_TTL = 30.0
# How long a free-space reading holds for admitting runs (statvfs is cheap, but per run).
FREE_TTL = 1.0

_RUN_ID_RE = re.compile(RUN_ID_PATTERN)

# What the worktree work plugs in (issue 12): called with a finished run's status body and
# the caller's force flag before anything is removed; it removes the run's workspace, or
# raises Conflict (409) to keep the run, e.g. because its worktree has uncommitted changes.
WorkspaceCleanup = Callable[[RunStatus, bool], Awaitable[None]]


class InsufficientStorage(OdRunsError):
    """The data dir's filesystem is below the free-space floor: new runs are refused."""

    status = 507
    code = "INSUFFICIENT_STORAGE"


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on path's filesystem.

    The seam for tests of the floor: replace it (monkeypatch) to simulate a small filesystem.
    """
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def sweep_leftovers(data_dir: Path) -> int:
    """Remove run directories a crash left renamed for deletion (blocking); how many."""
    count = 0
    for entry in os.scandir(data_dir):
        if entry.name.startswith(DELETING_PREFIX) and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
            count += 1
    return count


class DeleteJournal:
    """Delete intents as files under the data dir; None for a daemon without one."""

    def __init__(self, data_dir: Path | None) -> None:
        self.root = data_dir / JOURNAL_NAME if data_dir is not None else None

    def add(self, run_id: str) -> None:
        """Record, durably, that the run is being deleted (blocking)."""
        if self.root is None:
            return
        self.root.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(self.root / run_id, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(self.root)

    def drop(self, run_id: str) -> None:
        """The delete is complete: forget its intent (blocking)."""
        if self.root is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.root / run_id)

    def pending(self) -> builtins.list[str]:
        """Runs whose delete a crash interrupted (blocking)."""
        if self.root is None:
            return []
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(name for name in names if _RUN_ID_RE.match(name))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ended_at(body: RunStatus) -> float:
    stamp = body.finishedAt or body.updatedAt
    return datetime.fromisoformat(stamp).timestamp()


class Retention:
    """Deletes runs one by one or by age, and guards the free-space floor."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        data_dir: Path | None,
        *,
        min_free: int = 0,
        retain: float | None = None,
    ) -> None:
        self.lifecycle = lifecycle
        self.data_dir = data_dir
        self.min_free = min_free
        self.retain = retain
        self.journal = DeleteJournal(data_dir)
        # Set by the worktree work (issue 12); None: runs have no workspace to remove.
        self.workspace_cleanup: WorkspaceCleanup | None = None
        # Told of each delete before it happens (several daemons: cluster.deleted_here).
        self.on_delete: Callable[[str], None] | None = None
        # One delete at a time: a prune and a DELETE of the same run must not interleave.
        self._lock = anyio.Lock()
        self._usage: tuple[float, DataDirUsage] | None = None
        self._usage_lock = anyio.Lock()
        self._free: tuple[float, int] | None = None

    # Deleting -----------------------------------------------------------------------------

    async def delete(self, run_id: str, *, force: bool = False) -> DeleteResult:
        """Delete one finished run: row, events, workspace. 409 RUN_ACTIVE if it is not."""
        async with self._lock:
            body = await self._finished_body(run_id)
            if self.workspace_cleanup is not None:
                await self.workspace_cleanup(body, force)
            freed = await self._remove(body)
        return DeleteResult(id=run_id, bytes=freed)

    async def _finished_body(self, run_id: str) -> RunStatus:
        if not _RUN_ID_RE.match(run_id):
            raise NotFound(f"no run with id {run_id[:80]!r}")
        run = self.lifecycle.runs.get(run_id)
        if run is not None:
            body = run.status_body()
        else:
            row = await self.lifecycle.store.get(run_id)
            if row is None:
                raise NotFound(f"no run with id {run_id!r}")
            body = row.body
        if body.status not in TERMINAL_STATES:
            raise Conflict(
                f"run {run_id} is {body.status}; cancel it first (od-runs cancel {run_id})",
                code="RUN_ACTIVE",
            )
        return body

    async def _remove(self, body: RunStatus) -> int:
        """Intent, row, events, intent gone: the order recovery.finish_deletes relies on."""
        run_id = body.id
        await anyio.to_thread.run_sync(self.journal.add, run_id)
        run = self.lifecycle.runs.pop(run_id, None)
        if run is not None:
            run.fanout.close()  # live readers still attached get the end, then their stream ends
        if self.on_delete is not None:
            self.on_delete(run_id)
        await self.lifecycle.store.delete(run_id)
        freed = await anyio.to_thread.run_sync(
            self.lifecycle.events.delete, run_id, body.eventsLogPath
        )
        await anyio.to_thread.run_sync(self.journal.drop, run_id)
        self.lifecycle.status_hub.publish_deleted(body)
        self._usage = None
        log.info("deleted run %s (%s)", run_id, format_bytes(freed))
        return freed

    # Pruning ------------------------------------------------------------------------------

    async def prune(
        self,
        older_than: float,
        *,
        status: str | None = None,
        project_id: str | None = None,
        dry_run: bool = False,
    ) -> PruneResult:
        """Delete finished runs that ended more than older_than seconds ago.

        Never an active run, nor a run whose conversation has a live session (its agent
        process may still resume that run's thread).
        """
        if status is not None and status not in TERMINAL_STATES:
            raise BadRequest("status must be one of succeeded, failed, canceled")
        store = self.lifecycle.store
        await store.flush()
        statuses = [status] if status is not None else sorted(TERMINAL_STATES)
        # Every finished run of the filter: a prune is rare, and the store has no age index.
        bodies = await store.list(project_id=project_id, statuses=statuses, limit=1 << 62)
        live = await self._live_conversations()
        cutoff = time.time() - older_than
        doomed = [
            b
            for b in bodies
            if _ended_at(b) < cutoff and (b.conversationId is None or b.conversationId not in live)
        ]
        removed: builtins.list[str] = []
        total = 0
        for body in doomed:
            if dry_run:
                total += await anyio.to_thread.run_sync(
                    self.lifecycle.events.usage, body.id, body.eventsLogPath
                )
                removed.append(body.id)
                continue
            async with self._lock:
                try:
                    body = await self._finished_body(body.id)
                except NotFound:
                    continue  # deleted meanwhile by somebody else
                if self.workspace_cleanup is not None:
                    try:
                        await self.workspace_cleanup(body, False)
                    except Conflict as exc:
                        log.warning("prune keeps run %s: %s", body.id, exc.message)
                        continue
                total += await self._remove(body)
            removed.append(body.id)
        return PruneResult(dryRun=dry_run, runs=removed, count=len(removed), bytes=total)

    async def _live_conversations(self) -> set[str]:
        store = self.lifecycle.store
        live: set[str] = set()
        for state in ("active", "idle"):
            for session in await store.list_sessions(status=state, limit=1 << 62):
                if session.conversationId is not None:
                    live.add(session.conversationId)
        return live

    async def run_policy(self) -> None:
        """Prune runs older than --retain now and then periodically, until cancelled."""
        if self.retain is None:
            return
        # Often enough that nothing outlives the policy by much, rarely enough to cost nothing.
        interval = min(max(self.retain / 24, 60.0), 3600.0)
        while True:
            try:
                result = await self.prune(self.retain)
                if result.count:
                    log.warning(
                        "retention: removed %d runs (%s)", result.count, format_bytes(result.bytes)
                    )
            except Exception:
                # A failed pass must not take the daemon down; the next one tries again.
                log.exception("retention pass failed")
            await anyio.sleep(interval)

    # The free-space floor -----------------------------------------------------------------

    async def admit(self) -> None:
        """Refuse a new run (507) when the data dir's filesystem is below the floor."""
        if self.data_dir is None or self.min_free <= 0:
            return
        now = time.monotonic()
        if self._free is None or now - self._free[0] > FREE_TTL:
            self._free = (now, await anyio.to_thread.run_sync(free_bytes, self.data_dir))
        free = self._free[1]
        if free < self.min_free:
            raise InsufficientStorage(
                f"only {format_bytes(free)} free on the filesystem of {self.data_dir}, below "
                f"the floor of {format_bytes(self.min_free)} (--min-free, OD_RUNS_MIN_FREE): "
                "new runs are refused. Free space, e.g. with `od-runs prune --older-than 30d`."
            )

    async def usage(self) -> DataDirUsage | None:
        """The data dir's size and free space, computed off the loop and cached."""
        if self.data_dir is None:
            return None
        async with self._usage_lock:
            cached = self._usage
            if cached is not None and time.monotonic() - cached[0] < USAGE_TTL:
                return cached[1]
            data_dir = self.data_dir
            size = await anyio.to_thread.run_sync(tree_size, data_dir)
            free = await anyio.to_thread.run_sync(free_bytes, data_dir)
            usage = DataDirUsage(bytes=size, freeBytes=free)
            self._usage = (time.monotonic(), usage)
            return usage


__all__ = [
    "DEFAULT_MIN_FREE",
    "DeleteJournal",
    "InsufficientStorage",
    "Retention",
    "WorkspaceCleanup",
    "free_bytes",
    "sweep_leftovers",
]
