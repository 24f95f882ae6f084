"""RunService: the run lifecycle, the fan-out hub, waiters, cancel and shutdown.

Data flows one way: adapter -> emit -> log write -> subscribers and waiters.
Everything here runs on one event loop, so "note the head and register a subscriber"
is atomic simply because no await separates the two.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
from anyio.abc import Process, TaskGroup

from . import recovery
from .agents import Adapter, make_adapter
from .agents.base import SessionAdapter
from .agents.process import (
    DRAIN_TIMEOUT,
    child_env,
    feed_stdin,
    pump,
    signal_group,
    signal_name,
    signal_pid,
    spawn,
    start_time,
    terminate,
    wait_group_gone,
)
from .agents.watchdog import Watchdog
from .conversations import DEFAULT_LIMIT as CONVERSATION_LIMIT
from .conversations import Conversations, Ticket
from .errors import BadRequest, Conflict, NotFound
from .eventlog import EventLog, LogLine, MemoryLog, encode_lines, last_line, now_iso
from .failures import AgentFailure, failure
from .fanout import Fanout, Subscriber
from .models import (
    RUN_ID_PATTERN,
    TERMINAL_STATES,
    Event,
    RunCreate,
    RunError,
    RunState,
    RunStatus,
    SessionDetail,
    SessionStatus,
)
from .redact import Scrubber, bundle_secrets, daemon_secrets, secret_env_values, summarize_bundle
from .sessions import SessionManager
from .status_events import StatusHub
from .store import DB_NAME, RunRow, RunStore

log = logging.getLogger("od_runs.runs")

# Recent events a run keeps in memory; older ones are read back from the log.
TAIL_SIZE = 256
# How long a finished run stays in memory before only SQLite and the log hold it.
FINISHED_TTL = 300.0
# SIGTERM -> SIGKILL grace used by cancel and shutdown unless the caller gives one.
DEFAULT_GRACE = 5.0
_RUN_ID_RE = re.compile(RUN_ID_PATTERN)
# The marker every child inherits, so recovery can find a run's processes after a crash.
RUN_ID_ENV = "OD_RUNS_RUN_ID"


_T = TypeVar("_T")


async def _off_loop(items: Iterator[_T]) -> AsyncIterator[_T]:
    """Iterate a blocking iterator in a worker thread, one item per hop."""
    done = object()
    while True:
        item = await anyio.to_thread.run_sync(next, items, done)
        if item is done:
            return
        yield item  # type: ignore[misc]


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
    log: EventLog | MemoryLog
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
    last_event_id: int = 0
    request_digest: str | None = None
    adapter: Adapter | None = None
    process: Process | None = None
    signal_sent: str | None = None
    cancel_grace: float = DEFAULT_GRACE
    driven: bool = False
    tail: deque[LogLine] = field(default_factory=lambda: deque(maxlen=TAIL_SIZE))
    fanout: Fanout = field(default_factory=Fanout)
    tick: anyio.Event = field(default_factory=anyio.Event)
    done: anyio.Event = field(default_factory=anyio.Event)
    cancel_event: anyio.Event = field(default_factory=anyio.Event)
    # Set when events.jsonl cannot be written: nothing more is published (invariant 3).
    log_error: RunError | None = None
    # Why the daemon stopped the child itself (watchdog, adapter); cancel_event follows.
    stop_error: RunError | None = None
    ticket: Ticket | None = None
    finished_mono: float = 0.0

    @property
    def terminal(self) -> bool:
        """True once the run has its final status."""
        return self.status in TERMINAL_STATES

    def status_body(self) -> RunStatus:
        """The status body: redacted, safe to show anyone."""
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
            lastEventId=self.last_event_id,
            mediaExecution=req.mediaExecution,
            toolBundle=summarize_bundle(req.toolBundle),
            sessionRef=self.adapter.session_ref() if self.adapter is not None else None,
            usage=self.adapter.usage() if self.adapter is not None else None,
        )


@dataclass
class Attachment:
    """What a reader needs to follow a run: where to replay from, and live events if any."""

    log: EventLog | MemoryLog
    head: int | None  # None: read the log to its end (a run no longer held in memory)
    subscriber: Subscriber | None
    run: Run | None


class RunService:
    """Creates, drives, tracks, cancels and serves runs."""

    def __init__(
        self,
        store: RunStore,
        task_group: TaskGroup,
        log_root: Path | None,
        *,
        grace: float = DEFAULT_GRACE,
        finished_ttl: float = FINISHED_TTL,
        max_conversations: int = CONVERSATION_LIMIT,
    ) -> None:
        self.store = store
        self.log_root = log_root
        self.grace = grace
        self.finished_ttl = finished_ttl
        self._tg = task_group
        self._runs: dict[str, Run] = {}
        self._create_lock = anyio.Lock()
        self._daemon_secrets = daemon_secrets()
        # Status changes of every run, for GET /api/events (the web monitor's list).
        self.status_hub = StatusHub()
        self.conversations = Conversations(max_conversations)
        # Live agent sessions (codex-app-server): one process per conversation, runs are turns.
        self.sessions = SessionManager(store, task_group, grace)

    # Creating -----------------------------------------------------------------------------

    async def create(self, request: RunCreate, *, adapter: Adapter | None = None) -> Run:
        """Create a queued run (or return the one an idempotent retry refers to)."""
        adapter = adapter or make_adapter(request)
        await adapter.load_credentials()  # credentials.py: provider variables, their values
        if request.cwd is not None and not await anyio.Path(request.cwd).is_dir():
            raise BadRequest(f"cwd is not a directory: {request.cwd}")
        async with self._create_lock:
            digest = request_hash(request)
            if request.clientRequestId:
                existing = await self.store.by_request_id(request.clientRequestId)
                if existing is not None:
                    if existing.request_hash != digest:
                        raise Conflict(
                            f"clientRequestId {request.clientRequestId!r} was already used "
                            "with a different payload"
                        )
                    known = self._runs.get(existing.body.id)
                    if known is not None:
                        return known
                    raise _Existing(existing.body)
            run = self._new_run(request, digest, adapter.secret_values())
            run.adapter = adapter
            await self.store.insert(self._row(run))
            self._runs[run.id] = run
            # Under the lock: a conversation's runs take their places in creation order.
            run.ticket = self.conversations.enqueue(run.id, request, run.created_at)
        self._status_changed(run)
        return run

    def _new_run(self, request: RunCreate, digest: str, credentials: list[str]) -> Run:
        run_id = f"run-{secrets.token_hex(8)}"
        secrets_ = [
            *self._daemon_secrets,
            *credentials,
            *secret_env_values(request.env),
            *bundle_secrets(request.toolBundle),
        ]
        if self.log_root is not None:
            log: EventLog | MemoryLog = EventLog.create(self.log_root / run_id)
            path: str | None = str(log.path)
        else:
            log, path = MemoryLog(), None
        now = now_iso()
        return Run(
            id=run_id,
            request=request,
            created_at=now,
            updated_at=now,
            log=log,
            scrubber=Scrubber(secrets_),
            events_log_path=path,
            request_digest=digest,
        )

    async def start(self, request: RunCreate, *, adapter: Adapter | None = None) -> RunStatus:
        """Create a run and start driving it; returns its status body at once."""
        try:
            run = await self.create(request, adapter=adapter)
        except _Existing as existing:
            return existing.body
        if run.adapter is not None and not run.terminal and not run.driven:
            run.driven = True
            self._tg.start_soon(self._drive, run)
        return run.status_body()

    # Emitting -----------------------------------------------------------------------------

    def emit(self, run: Run, event: str, data: Any = None) -> None:
        """Append one event to the run."""
        self.emit_many(run, [(event, data)])

    def emit_many(self, run: Run, items: Sequence[tuple[str, Any]], *, force: bool = False) -> None:
        """Append events in one log write, then publish them (invariants 2-4)."""
        if not items or (run.terminal and not force):
            return
        first = run.last_event_id + 1
        raw, lines, lengths = encode_lines(first, items, now_iso(), run.scrubber.scrub_json)
        if isinstance(run.log, EventLog):
            if run.log_error is not None:
                return
            if run.log.writable:
                try:
                    run.log.append(first, raw, lengths)
                except OSError as exc:
                    self._log_broken(run, exc)
                    return
        else:
            run.log.append_lines(lines)
        run.last_event_id = lines[-1].id
        for event, data in items:
            if event == "error" and isinstance(data, dict) and isinstance(data.get("error"), dict):
                self._record_error(run, data["error"])
        self._publish(run, lines)
        self.store.schedule(self._row(run))

    def _log_broken(self, run: Run, exc: OSError) -> None:
        """The disk refused a write: stop the run, it cannot be recorded any more."""
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
        run.cancel_event.set()  # the signal ladder stops the child; _conclude says why

    def _record_error(self, run: Run, error: dict[str, Any]) -> None:
        code, message = error.get("code"), error.get("message")
        if isinstance(code, str) and isinstance(message, str):
            run.error = RunError(
                code=code,
                message=run.scrubber.scrub(message),
                retryable=bool(error.get("retryable", False)),
            )

    def _publish(self, run: Run, lines: list[LogLine]) -> None:
        run.tail.extend(lines)
        run.fanout.offer(lines)
        run.tick.set()
        run.tick = anyio.Event()

    def finish(
        self,
        run: Run,
        status: RunState,
        exit_code: int | None = None,
        signal: str | None = None,
        error: RunError | None = None,
    ) -> bool:
        """Move a run to a terminal status; only the first call counts (invariant 1)."""
        if run.terminal:
            return False
        if status not in TERMINAL_STATES:
            raise ValueError(f"not a terminal status: {status}")
        if error is not None:
            run.error = error.model_copy(update={"message": run.scrubber.scrub(error.message)})
        run.status = status
        run.exit_code = exit_code
        run.signal = signal
        run.finished_at = run.updated_at = now_iso()
        end: dict[str, Any] = {"status": status, "code": exit_code, "signal": signal}
        if run.error is not None and status == "failed":
            end["errorCode"] = run.error.code
            end["error"] = run.error.message
        self.emit_many(run, [("end", end)], force=True)
        run.log.close()
        if run.ticket is not None and not run.driven:
            self.conversations.abandon(run.ticket)
        run.finished_mono = anyio.current_time()
        run.done.set()
        self.store.schedule(self._row(run))
        self._status_changed(run)
        return True

    def _status_changed(self, run: Run) -> None:
        if len(self.status_hub):  # building a status body costs more than asking
            self.status_hub.publish(run.status_body())

    def _row(self, run: Run) -> RunRow:
        return RunRow(
            body=run.status_body(),
            client_request_id=run.request.clientRequestId,
            request_hash=run.request_digest,
            child_start_time=run.child_start_time,
        )

    # Driving ------------------------------------------------------------------------------

    async def _drive(self, run: Run) -> None:
        """Wait for the run's turn in its conversation, then run it."""
        adapter = run.adapter
        assert adapter is not None and run.ticket is not None
        async with self.conversations.turn(run.ticket, run.cancel_event, adapter.session_ref) as go:
            if not go:
                self.finish(run, "canceled")
                return
            await self._drive_now(run, adapter)

    async def _drive_now(self, run: Run, adapter: Adapter) -> None:
        """Spawn the run's child, pump its output, and finish the run however it ends."""
        if run.cancel_requested:
            self.finish(run, "canceled")
            return
        try:
            session = await self.conversations.session_to_resume(run.ticket, self._history)
            if session is not None:
                adapter.resume(session)
            if isinstance(adapter, SessionAdapter):
                await self._supervise_turn(run, adapter)
            else:
                await self._supervise(run, adapter)
        except AgentFailure as exc:
            self._emit_error(run, exc.error)
            self.finish(run, "failed", error=exc.error)
        except FileNotFoundError as exc:
            hint = f"; {adapter.install_hint}" if adapter.install_hint else ""
            self.finish(
                run,
                "failed",
                error=failure(
                    "AGENT_NOT_FOUND",
                    f"The agent's program was not found: {exc.filename or exc}{hint}.",
                ),
            )
        except PermissionError as exc:
            self.finish(
                run,
                "failed",
                error=RunError(code="AGENT_SPAWN_FAILED", message=f"Cannot start the agent: {exc}"),
            )
        except OSError as exc:
            log.exception("run %s: I/O failure", run.id)
            code = "LOG_WRITE_FAILED" if run.process is not None else "AGENT_SPAWN_FAILED"
            self.finish(run, "failed", error=RunError(code=code, message=f"{exc}"))
        except Exception as exc:
            log.exception("run %s: internal error", run.id)
            self.finish(
                run, "failed", error=RunError(code="INTERNAL_ERROR", message=type(exc).__name__)
            )
        finally:
            with anyio.CancelScope(shield=True):
                await self._reap(run)
                adapter.cleanup()
                if not run.terminal:
                    self.finish(run, "canceled" if run.cancel_requested else "failed")

    async def _history(self, conversation_id: str) -> list[RunStatus]:
        return await self.list(conversation_id=conversation_id, limit=50)

    async def _reap(self, run: Run) -> None:
        process = run.process
        if process is None:
            return
        if process.returncode is None:
            signal_group(process.pid, 9)
            await process.wait()
        await wait_group_gone(process.pid)
        await self._kill_escaped(run)

    async def _kill_escaped(self, run: Run) -> None:
        """SIGKILL descendants that left the run's process group (setsid) but kept its marker."""
        marker = f"{RUN_ID_ENV}={run.id}"
        for pid in await anyio.to_thread.run_sync(recovery.processes_marked, marker):
            if signal_pid(pid, 9):
                log.info("run %s: killed process %d that had left the run's group", run.id, pid)

    async def _supervise(self, run: Run, adapter: Adapter) -> None:
        env = child_env(adapter.env())
        env[RUN_ID_ENV] = run.id
        stdin = adapter.stdin()
        # An adapter that owns stdio (ACP) speaks its protocol over the child's stdin/stdout.
        talks = adapter.owns_stdio
        process = await spawn(
            adapter.argv(), env=env, cwd=run.request.cwd, stdin=talks or stdin is not None
        )
        run.process = process
        run.child_pid = process.pid
        run.child_start_time = start_time(process.pid)
        run.status = "running"
        run.started_at = run.updated_at = now_iso()
        self.emit(run, "start", {"agentId": run.request.agentId, "pid": process.pid})
        self._status_changed(run)
        # The pid must be durable before anything else: crash recovery kills by it.
        await self.store.flush()

        watchdog = Watchdog.for_run(run.request, adapter.default_idle_timeout_ms)

        def deliver(items: list[tuple[str, Any]]) -> None:
            watchdog.touch()
            self.emit_many(run, items)
            if adapter.failure is not None:
                self._stop(run, adapter.failure)

        def sink(stream: str) -> Any:
            def handle(lines: list[tuple[str, bool]]) -> None:
                deliver(adapter.translate(stream, lines))

            return handle

        async def watch() -> None:
            with watching:
                expiry = await watchdog.expired()
                self._stop(run, _expiry_error(expiry, watchdog))

        watching = anyio.CancelScope()
        assert process.stdout is not None and process.stderr is not None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_cancel, run, process, adapter)
            async with anyio.create_task_group() as readers:
                pumps_done = _Countdown(2)
                if talks:
                    readers.start_soon(pumps_done.wrap(adapter.converse), process, deliver)
                else:
                    readers.start_soon(pumps_done.wrap(pump), process.stdout, sink("stdout"))
                readers.start_soon(pumps_done.wrap(pump), process.stderr, sink("stderr"))
                readers.start_soon(watch)
                if stdin is not None and not talks:
                    readers.start_soon(feed_stdin, process, stdin)
                await process.wait()
                watching.cancel()
                # Grandchildren may hold the pipes open; they die with the run.
                with anyio.move_on_after(DRAIN_TIMEOUT):
                    await pumps_done.wait()
                await wait_group_gone(process.pid)
                await self._kill_escaped(run)
            if not run.cancel_event.is_set():
                tg.cancel_scope.cancel()
        self._conclude(run, adapter, process.returncode)

    async def _supervise_turn(self, run: Run, adapter: SessionAdapter) -> None:
        """Run one turn on the conversation's live session: no child of the run's own."""
        async with self.sessions.turn(run.id, run.request, adapter) as turn:
            run.child_pid, run.child_start_time = turn.pid, turn.start_time
            run.status = "running"
            run.started_at = run.updated_at = now_iso()
            start = {"agentId": run.request.agentId, "pid": turn.pid, "sessionId": turn.session_id}
            self.emit(run, "start", start)
            self._status_changed(run)
            await self.store.flush()
            if run.cancel_requested:
                self.finish(run, "canceled")
                return
            watchdog = Watchdog.for_turn(
                run.request, adapter.default_idle_timeout_ms, adapter.default_post_tool_timeout_ms
            )

            def deliver(items: list[tuple[str, Any]]) -> None:
                watchdog.touch(adapter.after_tool)
                self.emit_many(run, items)
                if adapter.failure is not None:
                    self._stop(run, adapter.failure)

            async def watch() -> None:
                self._stop(run, _expiry_error(await watchdog.expired(), watchdog))

            async def stop_on_cancel() -> None:
                await run.cancel_event.wait()
                with anyio.CancelScope(shield=True):
                    retire = run.stop_error is not None
                    run.signal_sent = await turn.stop(run.cancel_grace, retire)

            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                tg.start_soon(stop_on_cancel)
                await turn.run(deliver)
                tg.cancel_scope.cancel()
        # After the session settled (retired if it must be): the end says it all.
        if adapter.turn_status == "interrupted" and run.stop_error is None:
            run.cancel_requested = True  # interrupted by anyone is canceled, not failed
        self._conclude(run, adapter, None)

    def _conclude(self, run: Run, adapter: Adapter, returncode: int | None) -> None:
        killed_by = signal_name(returncode)
        exit_code = returncode if returncode is not None and returncode >= 0 else None
        if run.log_error is not None:
            self.finish(run, "failed", exit_code, killed_by or run.signal_sent, run.log_error)
            return
        self.emit_many(run, adapter.finish_events())
        if run.cancel_requested:
            self.finish(run, "canceled", exit_code, killed_by or run.signal_sent)
            return
        if run.stop_error is not None:
            self.finish(run, "failed", exit_code, killed_by or run.signal_sent, run.stop_error)
            return
        error = adapter.outcome(returncode if returncode is not None else -9)
        if error is None:
            self.finish(run, "succeeded", exit_code, None)
            return
        if error.code != "AGENT_EXITED":
            # The end event says "exit code N" well enough; anything subtler gets its line.
            self._emit_error(run, error)
        self.finish(run, "failed", exit_code, killed_by, error)

    def _stop(self, run: Run, error: RunError) -> None:
        """Stop the child on the daemon's own initiative (stall, timeout, adapter verdict)."""
        if run.stop_error is not None or run.cancel_event.is_set():
            return
        run.stop_error = error
        run.cancel_grace = self.grace
        self._emit_error(run, error)
        run.cancel_event.set()

    def _emit_error(self, run: Run, error: RunError) -> None:
        self.emit(run, "error", {"message": error.message, "error": error.model_dump()})

    async def _watch_cancel(self, run: Run, process: Process, adapter: Adapter) -> None:
        await run.cancel_event.wait()
        with anyio.CancelScope(shield=True):
            run.signal_sent = await terminate(process, run.cancel_grace, adapter.abort)

    # Cancelling ---------------------------------------------------------------------------

    async def cancel(self, run_id: str, grace: float | None = None) -> RunStatus:
        """Cancel a run and return once its process group is gone."""
        run = self._runs.get(run_id)
        if run is None or run.terminal:
            return await self.get(run_id)
        if not run.cancel_requested:
            run.cancel_requested = True
            run.updated_at = now_iso()
            self.store.schedule(self._row(run))
            self._status_changed(run)
        run.cancel_grace = self.grace if grace is None else grace
        if not run.driven:
            self.finish(run, "canceled")
        run.cancel_event.set()
        await run.done.wait()
        return run.status_body()

    async def shutdown_active(self, grace: float | None = None) -> list[RunStatus]:
        """Cancel every active run (abort, SIGTERM, grace, SIGKILL) and wait for all."""
        active = [r for r in self._runs.values() if not r.terminal]
        results: list[RunStatus] = []

        async def one(run: Run) -> None:
            results.append(await self.cancel(run.id, grace))

        async with anyio.create_task_group() as tg:
            for run in active:
                tg.start_soon(one, run)
        return results

    # Reading ------------------------------------------------------------------------------

    def find(self, run_id: str) -> Run | None:
        """The in-memory run, if it is still held."""
        return self._runs.get(run_id)

    async def get(self, run_id: str) -> RunStatus:
        """The status body of a run, from memory or SQLite."""
        run = self._runs.get(run_id)
        if run is not None:
            return run.status_body()
        row = await self._stored(run_id)
        return row.body

    async def _stored(self, run_id: str) -> RunRow:
        if not _RUN_ID_RE.match(run_id):
            raise NotFound(f"no run with id {run_id[:80]!r}")
        row = await self.store.get(run_id)
        if row is None:
            raise NotFound(f"no run with id {run_id!r}")
        return row

    async def list(
        self,
        project_id: str | None = None,
        conversation_id: str | None = None,
        status: str | None = None,
        limit: int = 200,
    ) -> list[RunStatus]:
        """Status bodies, newest first; status 'active' means not terminal."""
        statuses: list[str] | None
        if status is None:
            statuses = None
        elif status == "active":
            statuses = ["queued", "running"]
        elif status in ("queued", "running", *TERMINAL_STATES):
            statuses = [status]
        else:
            raise BadRequest(
                "status must be one of queued, running, succeeded, failed, canceled, active"
            )
        await self.store.flush()
        return await self.store.list(
            project_id=project_id, conversation_id=conversation_id, statuses=statuses, limit=limit
        )

    async def list_sessions(
        self, conversation_id: str | None = None, status: str | None = None, limit: int = 200
    ) -> list[SessionStatus]:
        """Agent sessions, most recently updated first (see sessions.py)."""
        if status is not None and status not in ("active", "idle", "retired"):
            raise BadRequest("status must be one of active, idle, retired")
        return await self.sessions.list(conversation_id, status, limit)

    async def get_session(self, session_id: str) -> SessionDetail:
        """A session with its recent events."""
        return await self.sessions.get(session_id)

    def active_count(self) -> int:
        """How many runs are queued or running."""
        return sum(1 for r in self._runs.values() if not r.terminal)

    async def wait(self, run_id: str, timeout: float | None = None) -> RunStatus:
        """The status body once the run is terminal (or as it is when timeout passes)."""
        run = self._runs.get(run_id)
        if run is None:
            return await self.get(run_id)
        with anyio.move_on_after(timeout):
            await run.done.wait()
        return run.status_body()

    async def wait_for_events(self, run_id: str, after: int, timeout: float) -> RunStatus:
        """Return when the run has events after `after`, is terminal, or timeout passes."""
        run = self._runs.get(run_id)
        if run is None:
            return await self.get(run_id)
        with anyio.move_on_after(timeout):
            while run.last_event_id <= after and not run.terminal:
                await run.tick.wait()
        return run.status_body()

    async def watch(self, run_id: str, on_change: Callable[[RunStatus], Awaitable[None]]) -> None:
        """Call on_change with the status now and after each change, until it is terminal.

        Changes that happen while on_change runs are folded into the next call.
        """
        run = self._runs.get(run_id)
        if run is None:
            await on_change(await self.get(run_id))
            return
        while True:
            tick = run.tick
            status = run.status_body()
            await on_change(status)
            if status.status in TERMINAL_STATES:
                return
            await tick.wait()

    async def attach(self, run_id: str) -> Attachment:
        """Register a live subscriber and note the head id in one step (invariant 5)."""
        run = self._runs.get(run_id)
        if run is not None:
            if run.terminal or run.log_error is not None:
                return Attachment(run.log, run.last_event_id, None, run)
            return Attachment(run.log, run.last_event_id, run.fanout.subscribe(), run)
        row = await self._stored(run_id)
        if row.body.eventsLogPath is None:
            return Attachment(MemoryLog(), 0, None, None)
        return Attachment(EventLog(Path(row.body.eventsLogPath)), None, None, None)

    def detach(self, attachment: Attachment) -> None:
        """Forget a subscriber."""
        if attachment.run is not None and attachment.subscriber is not None:
            attachment.run.fanout.unsubscribe(attachment.subscriber)

    async def replay(
        self, log_: EventLog | MemoryLog, after: int, upto: int | None
    ) -> AsyncIterator[list[LogLine]]:
        """Batches of logged events with after < id <= upto, read off the event loop."""
        async for batch in _off_loop(log_.read_after(after, upto)):
            yield batch

    async def replay_frames(
        self, log_: EventLog | MemoryLog, after: int, upto: int | None
    ) -> AsyncIterator[tuple[bytes, int, str]]:
        """SSE frames of logged events with after < id <= upto: (bytes, last id, last event)."""
        async for chunk in _off_loop(log_.read_frames_after(after, upto)):
            yield chunk

    async def events(
        self, run_id: str, after: int = 0, limit: int = 100
    ) -> tuple[list[Event], bool]:
        """Up to limit events after a cursor, and whether more exist."""
        if after < 0:
            raise BadRequest("cursor must be a non-negative integer")
        attachment = await self.attach(run_id)
        self.detach(attachment)
        items: list[Event] = []
        more = False
        async for batch in self.replay(attachment.log, after, None):
            for line in batch:
                if len(items) == limit:
                    more = True
                    break
                items.append(Event.model_validate(json.loads(line.line)))
            if more:
                break
        return items, more

    def final_line(self, attachment: Attachment) -> LogLine | None:
        """The end event of a finished run."""
        if attachment.run is not None and attachment.run.tail:
            return attachment.run.tail[-1]
        if isinstance(attachment.log, EventLog):
            return last_line(attachment.log.path)
        return None

    # Housekeeping -------------------------------------------------------------------------

    async def _janitor(self) -> None:
        """Drop finished runs from memory after the TTL (invariant 7)."""
        while True:
            await anyio.sleep(min(self.finished_ttl, 30.0))
            self.evict_finished()

    def evict_finished(self, older_than: float | None = None) -> int:
        """Forget finished runs nobody follows; SQLite and the log still have them."""
        ttl = self.finished_ttl if older_than is None else older_than
        now = anyio.current_time()
        stale = [
            run_id
            for run_id, run in self._runs.items()
            if run.terminal and not run.fanout.subscribers and now - run.finished_mono >= ttl
        ]
        for run_id in stale:
            del self._runs[run_id]
        return len(stale)


def _expiry_error(expiry: str, watchdog: Watchdog) -> RunError:
    if expiry == "timeout":
        return failure(
            "AGENT_TIMEOUT",
            f"The run reached its time limit of {watchdog.timeout:g} s (timeoutMs) "
            "and was stopped.",
        )
    if expiry == "quiet":
        return failure(
            "AGENT_STALLED",
            f"The agent went silent for {watchdog.post_tool:g} s after a tool call finished "
            "(postToolIdleTimeoutMs) and was stopped; its session was retired.",
        )
    return failure(
        "AGENT_STALLED",
        f"The agent printed nothing for {watchdog.idle:g} s (idleTimeoutMs) and was stopped; "
        "it may be waiting on something that never comes.",
    )


class _Existing(Exception):
    """An idempotent create that matched a run no longer in memory."""

    def __init__(self, body: RunStatus) -> None:
        super().__init__(body.id)
        self.body = body


class _Countdown:
    """An event that fires after n wrapped coroutines have finished."""

    def __init__(self, n: int) -> None:
        self._left = n
        self._event = anyio.Event()

    def wrap(self, fn: Any) -> Any:
        async def wrapped(*args: Any) -> None:
            try:
                await fn(*args)
            finally:
                self._left -= 1
                if self._left == 0:
                    self._event.set()

        return wrapped

    async def wait(self) -> None:
        await self._event.wait()


@asynccontextmanager
async def open_service(
    data_dir: Path | None,
    *,
    grace: float = DEFAULT_GRACE,
    finished_ttl: float = FINISHED_TTL,
    max_conversations: int = CONVERSATION_LIMIT,
) -> AsyncIterator[RunService]:
    """Open the store, recover from a crash, run the service, and shut it down cleanly."""
    lock: int | None = None
    if data_dir is not None:
        data_dir = Path(await anyio.Path(data_dir).resolve())
        await anyio.to_thread.run_sync(recovery.prepare_data_dir, data_dir)
        # Before recovery: a second daemon on this dir must not reap the first one's runs.
        lock = recovery.lock_data_dir(data_dir)
        try:
            store = await RunStore.open(data_dir / DB_NAME)
        except BaseException:
            os.close(lock)
            raise
    else:
        store = await RunStore.open(Path(":memory:"))
    try:
        if data_dir is not None:
            await recovery.recover(store, RUN_ID_ENV)
        async with anyio.create_task_group() as tg:
            service = RunService(
                store,
                tg,
                data_dir,
                grace=grace,
                finished_ttl=finished_ttl,
                max_conversations=max_conversations,
            )
            tg.start_soon(store.run_writer)
            tg.start_soon(service._janitor)
            tg.start_soon(service.sessions.janitor)
            if data_dir is not None:
                await service.sessions.recover()
            try:
                yield service
            finally:
                with anyio.CancelScope(shield=True):
                    await service.shutdown_active(grace)
                    await service.sessions.close()
                    service.status_hub.close()
                    await store.flush()
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await store.close()
        if lock is not None:
            os.close(lock)


__all__ = ["Attachment", "Run", "RunService", "now_iso", "open_service"]
