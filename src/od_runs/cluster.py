"""Several daemons on one PostgreSQL acting as one service: placement, leases, worker loss.

Every daemon on a database is a worker (pg_cluster.py holds the SQL). Its loops:
- the claimer takes queued runs while it has capacity (FOR UPDATE SKIP LOCKED) and executes
  them; a run posted here without a conversation, while there is room, it claims at creation;
- the heartbeat renews its lease, checks that it still holds the runs it executes (a daemon
  that was paused past its lease finds them concluded, stops their agents and writes nothing:
  invariant 11), picks up cancels, and concludes the runs of daemons whose lease ran out
  (WORKER_LOST, invariant 12);
- the listener turns notifications (ids only) into wake-ups: new queued runs for the
  claimer, new heads and statuses for the mirrors (mirrors.py), cancels, deletes.
"""

from __future__ import annotations

import hashlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import psycopg
from anyio.abc import TaskGroup

from .agents import Adapter
from .agents.process import kill_recorded_group
from .config import LEASE_SECONDS
from .encoding import now_iso
from .errors import Conflict, NotFound, OdRunsError, Unavailable
from .lifecycle import Lifecycle, new_run_id
from .live_run import Run, request_hash
from .mirrors import Mirrors
from .models import TERMINAL_STATES, RunCreate, RunError, RunStatus, WorkerInfo
from .pg_cluster import Claim, ClusterDb
from .pg_store import CHANNEL, DatabaseUnavailable, connect
from .redact import summarize_bundle
from .storage import FileEventStore
from .store import RunRow

if TYPE_CHECKING:
    from .pg_events import PgEventStore
    from .pg_store import PgRunStore
    from .sessions import SessionManager

log = logging.getLogger("od_runs.cluster")

# The claimer looks at the queue this often even without a notification (one may be lost).
CLAIM_POLL = 1.0
# Runs one claim takes at most: the others get their share of a burst.
CLAIM_BATCH = 16


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """How this daemon takes part in a cluster (used only with a database_url)."""

    worker_id: str | None = None
    lease_seconds: float = LEASE_SECONDS
    max_runs: int | None = None


def default_worker_id(data_dir: Path | None) -> str:
    """The host name and a digest of the data dir: stable across restarts of one daemon."""
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:8]
    return f"{socket.gethostname()}-{digest}"


class Cluster:
    """This daemon's part in a cluster of daemons sharing one database."""

    def __init__(
        self,
        settings: ClusterSettings,
        lifecycle: Lifecycle,
        store: PgRunStore,
        events: PgEventStore,
        data_dir: Path | None,
        launch: Callable[[Run], None],
    ) -> None:
        self.settings = settings
        self.worker_id = settings.worker_id or default_worker_id(data_dir)
        self.host = socket.gethostname()
        self.lifecycle = lifecycle
        self.store = store
        self.events = events
        self.data_dir = data_dir
        self.launch = launch
        self.db = ClusterDb(store.pool, self.worker_id, self.host, settings.lease_seconds)
        self.mirrors: Mirrors | None = None
        # The daemon's sessions (runs.py sets them): those another daemon took over stop here.
        self.sessions: SessionManager | None = None
        self._wake = anyio.Event()
        self._deleted_here: set[str] = set()
        store.worker_id = events.worker_id = self.worker_id
        lifecycle.worker = (self.worker_id, self.host)
        lifecycle.starting = self.starting

    async def join(self, kill: Callable[[RunRow], None]) -> int:
        """Register, then reap and end what this worker left behind (before serving)."""
        await self.db.register(self.data_dir)
        reaped = await self.db.reap_lost_sessions(kill_recorded_group)
        if reaped:
            log.info("reaped %d session processes left from before this worker was lost", reaped)
        return await self.db.recover_own(kill, self.data_dir)

    async def run(self, task_group: TaskGroup) -> None:
        """Start the loops (they end with the task group)."""
        self.mirrors = Mirrors(self.lifecycle, task_group)
        self._tg = task_group
        task_group.start_soon(self._listen)
        task_group.start_soon(self._claim_loop)
        task_group.start_soon(self._heartbeat)

    async def leave(self) -> None:
        """A clean stop: give back the runs that never started, and say this daemon left."""
        unstarted = [
            r.id
            for r in self.lifecycle.runs.values()
            if r.status == "queued" and not r.terminal and r.child_pid is None
        ]
        try:
            for run_id in await self.db.release(unstarted):
                run = self.lifecycle.runs.pop(run_id, None)
                if run is not None:
                    # Another daemon executes it now: nothing of it stays here.
                    run.log.close()
                    await anyio.to_thread.run_sync(_remove_local, self.data_dir, run_id)
            await self.db.leave()
        except (psycopg.Error, DatabaseUnavailable, Unavailable) as exc:
            log.warning("cannot tell the database this daemon stops: %s", exc)

    # Placement ----------------------------------------------------------------------------

    def _capacity(self) -> tuple[int, int]:
        """Runs without a conversation, and conversation runs, this daemon may still take."""
        active = [r for r in self.lifecycle.runs.values() if not r.terminal]
        cap = self.settings.max_runs
        plain = CLAIM_BATCH if cap is None else max(0, cap - len(active))
        talking = sum(1 for r in active if r.request.conversationId is not None)
        in_turn = min(plain, max(0, self.lifecycle.conversations.limit - talking))
        return min(plain, CLAIM_BATCH), in_turn

    async def accept(self, request: RunCreate, adapter: Adapter | None) -> RunStatus | None:
        """Queue a run for the cluster; None: this daemon executes it itself, from creation."""
        plain, _ = self._capacity()
        if request.conversationId is None and plain > 0:
            return None
        run_id = new_run_id()
        digest = request_hash(request)
        _, _, plan = await self.lifecycle.admit(request, run_id, adapter)  # the 422s, here
        now = now_iso()
        body = RunStatus(
            id=run_id,
            projectId=request.projectId,
            conversationId=request.conversationId,
            agentId=request.agentId,
            status="queued",
            createdAt=now,
            updatedAt=now,
            mediaExecution=request.mediaExecution,
            toolBundle=summarize_bundle(request.toolBundle),
            workspace=plan.info() if plan is not None else None,
        )
        row = RunRow(body, request.clientRequestId, digest)
        if not await self.db.enqueue(row, request.model_dump_json()):
            assert request.clientRequestId is not None  # only its uniqueness can conflict
            existing = await self.store.by_request_id(request.clientRequestId)
            if existing is None:
                raise Conflict("the run of this clientRequestId was deleted meanwhile; retry")
            if existing.request_hash != digest:
                raise Conflict(
                    f"clientRequestId {request.clientRequestId!r} was already used "
                    "with a different payload"
                )
            return existing.body
        self._wake.set()
        return body

    async def _claim_loop(self) -> None:
        while True:
            with anyio.move_on_after(CLAIM_POLL):
                await self._wake.wait()
            self._wake = anyio.Event()
            plain, in_turn = self._capacity()
            if plain <= 0 and in_turn <= 0:
                continue
            try:
                claims = await self.db.claim(plain, in_turn)
            except (psycopg.Error, DatabaseUnavailable, Unavailable) as exc:
                log.warning("cannot claim queued runs: %s", exc)
                continue
            for claim in claims:
                await self._adopt(claim)
            if len(claims) >= plain:
                self._wake.set()  # there may be more

    async def _adopt(self, claim: Claim) -> None:
        """Execute a run claimed from the queue, prepared here from its stored request."""
        row = claim.row
        request = RunCreate.model_validate_json(claim.request or "{}")
        error: RunError | None = None
        admitted = None
        try:
            admitted = await self.lifecycle.admit(request, row.body.id)
        except OdRunsError as exc:
            error = RunError(code="RUN_REJECTED", message=f"{self.worker_id}: {exc}")
        except Exception as exc:  # a broken request must not stop the claimer
            log.exception("run %s: cannot prepare it", row.body.id)
            error = RunError(code="INTERNAL_ERROR", message=type(exc).__name__)
        run = self.lifecycle.adopt(row, request, admitted, claim.epoch)
        if error is not None or run.adapter is None:
            self.lifecycle.emit_error(run, error or RunError(code="INTERNAL_ERROR", message=""))
            self.lifecycle.finish(run, "failed", error=error)
            return
        run.supervised = True
        self.launch(run)

    async def starting(self, run: Run) -> bool:
        """A claimed run is about to start its agent: make that durable first (False: its
        lease moved on, the run is stopped here). Waits out an outage of the database."""
        while run.requeueable:
            try:
                if not await self.db.start(run.id, run.lease_epoch):
                    self._lost_here(run.id)
                    return False
                run.requeueable = False
            except Unavailable as exc:
                log.warning("run %s waits for the database to start: %s", run.id, exc)
                with anyio.move_on_after(CLAIM_POLL):
                    await run.cancel_event.wait()
                if run.cancel_event.is_set():
                    return False
        return True

    # Heartbeat, leases, worker loss -------------------------------------------------------

    async def _heartbeat(self) -> None:
        lease = self.settings.lease_seconds
        interval = lease / 3
        # Judging others needs a full lease of our own contact: after an outage of the
        # database every heartbeat is old, and those daemons are not lost, only unheard.
        connected_since: float | None = anyio.current_time()
        while True:
            await anyio.sleep(interval)
            try:
                await self.db.beat()
                if connected_since is None:
                    connected_since = anyio.current_time()
                held = {
                    r.id: r.lease_epoch
                    for r in self.lifecycle.runs.values()
                    if not r.terminal and r.worker_id == self.worker_id
                }
                lost, canceled = await self.db.check(held)
                for run_id in lost:
                    self._lost_here(run_id)
                for run_id in canceled:
                    self._cancel_here(run_id)
                await self._check_sessions()
                if anyio.current_time() - connected_since < lease:
                    continue
                for worker in await self.db.lost_workers():
                    ended, requeued = await self.db.conclude_lost(worker)
                    if ended or requeued:
                        log.warning(
                            "worker %s is lost: ended %d running runs, requeued %d",
                            worker,
                            ended,
                            requeued,
                        )
            except (psycopg.Error, DatabaseUnavailable, Unavailable) as exc:
                connected_since = None
                log.warning("heartbeat failed: %s", exc)

    async def _check_sessions(self) -> None:
        """Stop the processes of sessions here whose rows another daemon retired (this one
        was lost, e.g. paused past its lease) or resumed: now, not after the idle TTL."""
        if self.sessions is None:
            return
        held = self.sessions.held()
        moved = self.sessions.moved_away(await self.db.sessions_moved(list(held)), held)
        for session_id in moved:
            log.warning("session %s was retired or taken over elsewhere: stopping it", session_id)

    def _lost_here(self, run_id: str) -> None:
        """Another daemon concluded a run this one executes: stop it, write nothing more."""
        from .pg_events import LeaseLost

        run = self.lifecycle.runs.get(run_id)
        if run is None or run.terminal or run.log_error is not None:
            return
        self.lifecycle.log_broken(run, LeaseLost(f"the lease on {run_id} moved on"))

    def _cancel_here(self, run_id: str) -> None:
        run = self.lifecycle.runs.get(run_id)
        if run is not None and not run.terminal and not run.cancel_requested:
            self._tg.start_soon(self.lifecycle.cancel, run_id)

    async def cancel(self, run_id: str) -> RunStatus:
        """Cancel a run another daemon executes (or nobody yet); return once it is terminal."""
        body = await self.db.cancel_queued(run_id)
        if body is not None:
            return body
        row = await self.store.get(run_id)
        if row is None:
            raise NotFound(f"no run with id {run_id!r}")
        if row.body.status in TERMINAL_STATES:
            return row.body
        await self.db.request_cancel(run_id)
        body = await self.db.cancel_queued(run_id)  # released to the queue meanwhile?
        if body is not None:
            return body
        assert self.mirrors is not None
        mirror = await self.mirrors.follow(row)
        await mirror.done.wait()
        stored = await self.store.get(run_id)
        return stored.body if stored is not None else mirror.status_body()

    async def workers(self) -> list[WorkerInfo]:
        """Every daemon on the database."""
        return await self.db.workers()

    # Reading runs of other daemons ---------------------------------------------------------

    async def remote(self, run_id: str) -> Run | None:
        """The mirror of an active run another daemon executes; None if it is not active."""
        assert self.mirrors is not None
        mirror = self.mirrors.runs.get(run_id)
        if mirror is not None:
            return mirror
        row = await self.store.get(run_id)
        if row is None or row.body.status in TERMINAL_STATES:
            return None
        return await self.mirrors.follow(row)

    # Notifications ------------------------------------------------------------------------

    async def _listen(self) -> None:
        url = self.events.url
        while True:
            try:
                conn = await connect(url)
            except DatabaseUnavailable as exc:
                log.warning("cannot listen for notifications: %s", exc)
                await anyio.sleep(CLAIM_POLL)
                continue
            try:
                await conn.execute(f"LISTEN {CHANNEL}")
                # Whatever happened while nobody listened: look again.
                self._wake.set()
                if self.mirrors is not None:
                    self.mirrors.poke_all()
                async for note in conn.notifies():
                    self._dispatch(note.payload)
            except psycopg.Error as exc:
                log.warning("notifications interrupted: %s", exc)
                await anyio.sleep(CLAIM_POLL)
            finally:
                with anyio.CancelScope(shield=True):
                    await conn.close()

    def _dispatch(self, payload: str) -> None:
        kind, _, rest = payload.partition(" ")
        run_id, _, extra = rest.partition(" ")
        mirrors = self.mirrors
        if kind == "q":
            self._wake.set()
        elif kind == "e" and mirrors is not None:
            mirrors.poke(run_id)
        elif kind == "s":
            status, _, conversation = extra.partition(" ")
            if mirrors is not None:
                mirrors.poke(run_id, status=True)
            # A run's end frees a place here (ours), or lets its conversation's next run go:
            # otherwise the queue has nothing new for this daemon.
            if status in TERMINAL_STATES and (conversation or run_id in self.lifecycle.runs):
                self._wake.set()
            if len(self.lifecycle.status_hub) and run_id not in self.lifecycle.runs:
                self._tg.start_soon(self._publish_status, run_id)
        elif kind == "c":
            self._cancel_here(run_id)
        elif kind == "d":
            project, _, conversation = extra.partition(" ")
            self._tg.start_soon(self._deleted, run_id, project or None, conversation or None)

    async def _publish_status(self, run_id: str) -> None:
        """The list stream (GET /api/events) shows runs of other daemons too."""
        row = await self.store.get(run_id)
        if row is not None:
            self.lifecycle.status_hub.publish(row.body)

    def deleted_here(self, run_id: str) -> None:
        """This daemon deleted the run itself: its own notification needs no action."""
        self._deleted_here.add(run_id)

    async def _deleted(
        self, run_id: str, project_id: str | None, conversation_id: str | None
    ) -> None:
        """Another daemon deleted a run: drop it here, and its local files if this host has
        them (the run executed here)."""
        if run_id in self._deleted_here:
            self._deleted_here.discard(run_id)
            return
        run = self.lifecycle.runs.pop(run_id, None)
        if self.mirrors is not None:
            mirror = self.mirrors.runs.get(run_id)
            run = run or mirror
            self.mirrors.gone(run_id)
        if run is not None:
            run.fanout.close()
            self.lifecycle.status_hub.publish_deleted(run.status_body())
        else:
            self.lifecycle.status_hub.publish_deleted(_unknown(run_id, project_id, conversation_id))
        if self.data_dir is not None and (self.data_dir / run_id).exists():
            await anyio.to_thread.run_sync(_remove_local, self.data_dir, run_id)


def _remove_local(data_dir: Path | None, run_id: str) -> None:
    """The local directory a run claimed here made, now that it runs elsewhere."""
    if data_dir is not None:
        FileEventStore(data_dir).delete(run_id, None)


def _unknown(run_id: str, project_id: str | None, conversation_id: str | None) -> RunStatus:
    """What a list stream needs of a deleted run this daemon never held: whom it concerns."""
    now = now_iso()
    return RunStatus(
        id=run_id,
        projectId=project_id,
        conversationId=conversation_id,
        agentId="demo",
        status="canceled",
        createdAt=now,
        updatedAt=now,
    )


__all__ = ["Cluster", "ClusterSettings", "default_worker_id"]
