"""A run held in memory: its status fields, its log, its readers, and what drives it."""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field

import anyio

from .agents import Adapter
from .conversations import Ticket
from .eventlog import LogLine
from .fanout import Fanout, Subscriber
from .models import TERMINAL_STATES, RunCreate, RunError, RunState, RunStatus, WorkspaceInfo
from .redact import Scrubber, summarize_bundle
from .storage import RunLog
from .workspaces import Plan

# Recent events a run keeps in memory; older ones are read back from the log (invariant 7).
TAIL_SIZE = 256
# SIGTERM -> SIGKILL grace used by cancel and shutdown unless the caller gives one.
DEFAULT_GRACE = 5.0


def request_hash(request: RunCreate) -> str:
    """A digest of a create payload, to tell an idempotent retry from a different request."""
    canonical = request.model_dump_json(exclude={"clientRequestId"})
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(eq=False)
class Run:
    """A run in memory: its status fields plus the machinery that drives it."""

    id: str
    request: RunCreate
    created_at: str
    log: RunLog
    scrubber: Scrubber
    events_log_path: str | None
    status: RunState = "queued"
    updated_at: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    cancel_requested: bool = False
    child_pid: int | None = None
    child_start_time: int | None = None
    exit_code: int | None = None
    signal: str | None = None
    error: RunError | None = None
    # The last id published (readers see up to it) and the last one handed to the log: they
    # differ while a database commit is in flight (storage.Commit).
    last_event_id: int = 0
    assigned_id: int = 0
    request_digest: str | None = None
    adapter: Adapter | None = None
    # The last signal the cancel ladder sent (None: the child ended without one).
    signal_sent: str | None = None
    cancel_grace: float = DEFAULT_GRACE
    # Set by the first finish(): its end may still be on its way to the database.
    ending: bool = False
    # True once a supervisor task owns the run (it alone finishes a run it supervises).
    supervised: bool = False
    tail: deque[LogLine] = field(default_factory=lambda: deque(maxlen=TAIL_SIZE))
    fanout: Fanout = field(default_factory=Fanout)
    # The event the next change (events, status) sets; made only once somebody waits, so
    # a batch nobody waits for costs no Event.
    _changed: anyio.Event | None = None
    done: anyio.Event = field(default_factory=anyio.Event)
    cancel_event: anyio.Event = field(default_factory=anyio.Event)
    # Set when events.jsonl cannot be written: nothing more is published (invariant 3).
    log_error: RunError | None = None
    # Why the daemon stopped the child itself (watchdog, adapter); cancel_event follows.
    stop_error: RunError | None = None
    ticket: Ticket | None = None
    finished_mono: float = 0.0
    # Set while a child process of the run's own exists (not for session turns).
    has_child: bool = False
    # A worktree run: its plan (workspaces.py) and what the status body shows of it.
    workspace: Plan | None = None
    # Several daemons (cluster.py): the executor, its lease epoch, the host of the log file.
    worker_id: str | None = None
    lease_epoch: int = 0
    host: str | None = None
    # Claimed from the queue and not started: the database still holds its request, and a
    # lost daemon's run like this is queued again rather than failed.
    requeueable: bool = False
    # A run another daemon executes, followed here (mirrors.py): its stored status body.
    remote_body: RunStatus | None = None
    workspace_info: WorkspaceInfo | None = None
    workspace_prepared: bool = False

    @property
    def changed(self) -> anyio.Event:
        """The event the run's next change sets: wait on it, then read the run again."""
        if self._changed is None:
            self._changed = anyio.Event()
        return self._changed

    def wake(self) -> None:
        """Wake everyone waiting on a change of the run."""
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    @property
    def terminal(self) -> bool:
        """True once the run has its final status."""
        return self.status in TERMINAL_STATES

    def status_body(self) -> RunStatus:
        """The status body: redacted, safe to show anyone."""
        if self.remote_body is not None:
            return self.remote_body.model_copy(update={"lastEventId": self.last_event_id})
        req = self.request
        return RunStatus(
            id=self.id,
            projectId=req.projectId,
            conversationId=req.conversationId,
            agentId=req.agentId,
            status=self.status,
            createdAt=self.created_at,
            updatedAt=self.updated_at or self.created_at,
            startedAt=self.started_at,
            finishedAt=self.finished_at,
            cancelRequested=self.cancel_requested,
            childPid=self.child_pid,
            exitCode=self.exit_code,
            signal=self.signal,
            error=self.error.message if self.error else None,
            errorCode=self.error.code if self.error else None,
            retryable=self.error.retryable if self.error else None,
            eventsLogPath=self.events_log_path,
            workerId=self.worker_id,
            eventsLogHost=self.host if self.events_log_path is not None else None,
            lastEventId=self.last_event_id,
            mediaExecution=req.mediaExecution,
            toolBundle=summarize_bundle(req.toolBundle),
            sessionRef=self.adapter.session_ref() if self.adapter is not None else None,
            usage=self.adapter.usage() if self.adapter is not None else None,
            workspace=self.workspace_info,
        )


@dataclass
class Attachment:
    """What a reader needs to follow a run: where to replay from, and live events if any."""

    log: RunLog
    head: int | None  # None: read the log to its end (a run no longer held in memory)
    subscriber: Subscriber | None
    run: Run | None


__all__ = ["DEFAULT_GRACE", "TAIL_SIZE", "Attachment", "Run", "request_hash"]
