"""The storage seams: what the run lifecycle needs from a backend, as two small protocols.

RunStore keeps run metadata and sessions (SQLite today: store.py); EventStore keeps each run's
events (files today: eventlog.py, or memory for a daemon without a data dir). The lifecycle,
supervision and reads talk to these protocols only, so another backend (PostgreSQL, for
several daemons) implements the same methods. tests/test_storage_contract.py runs the
invariants that depend on storage against every backend.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

from .eventlog import EventLog, LogLine, MemoryLog
from .models import RUN_ID_PATTERN, RunStatus, SessionDetail, SessionStatus
from .store import RunRow

# A run directory on its way out (FileEventStore.delete); recovery sweeps leftovers.
DELETING_PREFIX = ".deleting-"
_RUN_ID_RE = re.compile(RUN_ID_PATTERN)


class DuplicateRequest(Exception):
    """insert(): a run with this clientRequestId exists already (another daemon made it)."""


class RunStore(Protocol):
    """Run metadata and sessions: durable creation, batched status updates, queries."""

    async def insert(self, row: RunRow) -> None:
        """Write a new (or recovered) run now; returns once it is durable.

        DuplicateRequest if its clientRequestId is taken (only several daemons can race).
        """

    def schedule(self, row: RunRow) -> None:
        """Queue a status update; later rows of the same run replace earlier ones."""

    def schedule_build(self, run_id: str, build: Callable[[], RunRow]) -> None:
        """Queue an update that build() makes when it is written (a live run's state then)."""

    async def flush(self) -> None:
        """Return once every update scheduled so far is durable."""

    async def run_writer(self) -> None:
        """The background writer of scheduled updates, until cancelled."""

    async def get(self, run_id: str) -> RunRow | None:
        """One run, or None."""

    async def by_request_id(self, client_request_id: str) -> RunRow | None:
        """The run an idempotent create with this clientRequestId made, or None."""

    async def list(
        self,
        *,
        project_id: str | None = None,
        conversation_id: str | None = None,
        statuses: Sequence[str] | None = None,
        limit: int = 200,
    ) -> builtins.list[RunStatus]:
        """Status bodies, newest first, filtered."""

    async def unfinished(self) -> builtins.list[RunRow]:
        """Runs left queued or running (start-up recovery)."""

    async def save_session(self, detail: SessionDetail, pid_start_time: int | None) -> None:
        """Write a session (with its process's start time, for crash recovery)."""

    async def get_session(self, session_id: str) -> SessionDetail | None:
        """One session with its recent events, or None."""

    async def session_of(self, conversation_id: str, agent_id: str) -> SessionDetail | None:
        """The session of a conversation and agent, or None."""

    async def list_sessions(
        self,
        *,
        conversation_id: str | None = None,
        status: str | None = None,
        limit: int = 200,
    ) -> builtins.list[SessionStatus]:
        """Sessions, most recently updated first."""

    async def live_sessions(self) -> builtins.list[tuple[SessionDetail, int | None]]:
        """Sessions that had a process when the daemon stopped (start-up recovery)."""

    async def close(self) -> None:
        """Write what is pending and close; idempotent."""

    async def delete(self, run_id: str) -> bool:
        """Remove a finished run's row for good (and any update still queued for it).

        Idempotent: False if there was no row. The caller (retention.py) has checked that
        the run is finished and has written its delete intent first.
        """


class Commit:
    """A batch on its way to a database: what to do once it is committed, or failed.

    A file or memory log is durable when append_batch() returns; a database is not (its
    write is a round trip the event loop must not block on). Such a log returns a Commit,
    and the lifecycle publishes the batch from then() (invariant 3). Commits of one log
    resolve in append order.
    """

    __slots__ = ("_callbacks", "done", "error")

    def __init__(self) -> None:
        self._callbacks: builtins.list[Callable[[OSError | None], None]] = []
        self.done = False
        self.error: OSError | None = None

    def then(self, callback: Callable[[OSError | None], None]) -> None:
        """Call callback(error) once resolved (at once if it already is); error None: done."""
        if self.done:
            callback(self.error)
        else:
            self._callbacks.append(callback)

    def resolve(self, error: OSError | None = None) -> None:
        """The batch is committed (error None) or failed: run the callbacks in order."""
        self.done, self.error = True, error
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(error)


class RunLog(Protocol):
    """One run's events in a backend: a single writer while the run is active, readers always.

    append_batch() returns None once the batch is durable to readers of this backend, or a
    Commit that resolves when it is (invariant 3: nothing is published before). Ids are
    dense and start at 1 (invariant 2).
    """

    @property
    def writable(self) -> bool:
        """True until close()."""

    def append_batch(
        self, first_id: int, raw: bytes, lines: builtins.list[LogLine], lengths: builtins.list[int]
    ) -> Commit | None:
        """Append whole lines (raw is their bytes, lines the same parsed) in one write."""

    def close(self) -> None:
        """Close the writer; idempotent. Reading stays possible."""

    def read_after(self, cursor: int, upto: int | None = None) -> Iterator[builtins.list[LogLine]]:
        """Batches of the events with cursor < id <= upto (blocking: run it off the loop)."""

    def read_frames_after(
        self, cursor: int, upto: int | None = None
    ) -> Iterator[tuple[bytes, int, str]]:
        """The same as SSE frames: (bytes, last id, last event name) per chunk."""

    def last(self) -> LogLine | None:
        """The newest event (the head), or None for an empty log."""


class EventStore(Protocol):
    """Where runs keep their events."""

    def create(self, run_id: str, lease_epoch: int = 0) -> RunLog:
        """A new, empty, writable log for a new run (a database log fences its writes by
        the executor's lease epoch: invariant 11)."""

    def open(self, run_id: str, location: str | None) -> RunLog:
        """The read-only log of a run no longer held in memory."""

    def location(self, log: RunLog) -> str | None:
        """What the status body's eventsLogPath says for this log (None: nothing on disk)."""

    def usage(self, run_id: str, location: str | None) -> int:
        """Bytes a run's events take in this backend, 0 if none (blocking: off the loop)."""

    def delete(self, run_id: str, location: str | None) -> int:
        """Remove a finished run's events for good; the bytes freed (blocking: off the loop).

        Idempotent (0 when nothing is left), and safe to call again after a crash part-way
        through. A reader that is replaying the log when it goes either finishes what it
        opened or sees an empty log; it never sees a torn line.
        """


class FileEventStore:
    """runs_log/<run-id>/events.jsonl: a person can `tail -F` it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def create(self, run_id: str, lease_epoch: int = 0) -> RunLog:
        """Create the run's private directory and its empty log."""
        return EventLog.create(self.root / run_id)

    def open(self, run_id: str, location: str | None) -> RunLog:
        """The log at the run's recorded path (an empty memory log if it had none)."""
        if location is None:
            return MemoryLog()
        return EventLog(Path(location))

    def location(self, log: RunLog) -> str | None:
        """The log file's path."""
        return str(log.path) if isinstance(log, EventLog) else None

    def usage(self, run_id: str, location: str | None) -> int:
        """The size of the run's directory."""
        return tree_size(self._run_dir(run_id))

    def delete(self, run_id: str, location: str | None) -> int:
        """Rename the run's directory out of the way, then remove it."""
        doomed = self.root / f"{DELETING_PREFIX}{run_id}"
        # The rename is atomic: a reader opening the log from now on finds none, and one that
        # has it open keeps reading the unlinked file to its end.
        with contextlib.suppress(FileNotFoundError):
            os.rename(self._run_dir(run_id), doomed)
        freed = tree_size(doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        return freed

    def _run_dir(self, run_id: str) -> Path:
        # Always a direct child of the root named after the run, never the path a row merely
        # points at: a corrupt row cannot make us remove anything else.
        if not _RUN_ID_RE.match(run_id):
            raise ValueError(f"not a run id: {run_id!r}")
        return self.root / run_id


class MemoryEventStore:
    """Events in memory only, for a daemon without a data dir (nothing written to disk)."""

    def create(self, run_id: str, lease_epoch: int = 0) -> RunLog:
        """A new memory log."""
        return MemoryLog()

    def open(self, run_id: str, location: str | None) -> RunLog:
        """A run not held in memory has nothing left to read."""
        return MemoryLog()

    def location(self, log: RunLog) -> str | None:
        """Nothing on disk."""
        return None

    def usage(self, run_id: str, location: str | None) -> int:
        """Nothing on disk."""
        return 0

    def delete(self, run_id: str, location: str | None) -> int:
        """The events go with the Run object that holds them."""
        return 0


def tree_size(path: Path) -> int:
    """Bytes of the regular files under path (0 if it is gone)."""
    total = 0
    for parent, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(parent, name)).st_size
    return total


__all__ = [
    "DELETING_PREFIX",
    "Commit",
    "DuplicateRequest",
    "EventStore",
    "FileEventStore",
    "MemoryEventStore",
    "RunLog",
    "RunStore",
    "tree_size",
]
