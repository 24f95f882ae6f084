"""The daemon behind `od-runs mcp`, reached (or started) only when a call needs it.

An editor launches its MCP servers at start-up and lists their tools; that alone must not
leave a daemon behind. Tool, resource and prompt lists are static, so the MCP server answers
them itself; LazyDaemon contacts the daemon on the first tool call or resource read, starts
one if none answers, and starts it again if it has since stopped (its --idle-exit).
"""

from __future__ import annotations

import builtins
import os
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import anyio
import httpx

from .client import DaemonClient, DaemonUnavailable
from .config import DEFAULT_HOST, DEFAULT_PORT
from .mcp_watch import OnChange
from .models import DiffPage, Event, RunCreate, RunStatus, SessionDetail, SessionStatus

T = TypeVar("T")

# How long a call waits for a daemon it started to answer /api/health.
DAEMON_START_TIMEOUT = 20.0
# Daemons one call may start: a second or third try covers one that gave up because the
# port or the data dir was still held by a daemon that was stopping.
MAX_SPAWNS = 3
HEALTH_POLL = 0.1
LOG_NAME = "daemon.log"


@dataclass(frozen=True)
class SpawnPlan:
    """How to start the daemon when none answers."""

    url: str
    data_dir: Path
    token: str | None
    idle_exit: float | None


def _refused(exc: DaemonUnavailable) -> bool:
    """True if nothing accepted the connection: the request never reached a daemon."""
    return isinstance(exc.__cause__, httpx.ConnectError)


def say(message: str) -> None:
    """One line for the user on stderr (stdout carries MCP messages only)."""
    print(f"od-runs mcp: {message}", file=sys.stderr, flush=True)


def spawn_daemon(plan: SpawnPlan) -> subprocess.Popen[bytes]:
    """Start `od-runs serve` in its own session; its output goes to <data-dir>/daemon.log."""
    parsed = httpx.URL(plan.url)
    host, port = parsed.host or DEFAULT_HOST, parsed.port or DEFAULT_PORT
    data_dir = plan.data_dir.resolve()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "od_runs", "serve", "--host", host, "--port", str(port)]
    argv += ["--data-dir", str(data_dir)]
    if plan.idle_exit:
        argv += ["--idle-exit", f"{plan.idle_exit:g}"]
    # The token the client will send guards the daemon too; by env, so `ps` never shows it.
    env = {**os.environ, "OD_RUNS_TOKEN": plan.token} if plan.token else None
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    log_fd = os.open(data_dir / LOG_NAME, flags, 0o600)
    try:
        # The log may hold run errors and paths: private even if an older one was not.
        os.fchmod(log_fd, 0o600)
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            start_new_session=True,
        )
    finally:
        os.close(log_fd)
    # The daemon is our child until we exit: reap it when it stops (an idle exit), so no
    # zombie waits for an editor that keeps `od-runs mcp` open for days.
    threading.Thread(target=proc.wait, name="reap-daemon", daemon=True).start()
    return proc


async def ensure_daemon(client: DaemonClient, plan: SpawnPlan | None) -> None:
    """Make sure a daemon answers at the client's URL, starting one if plan allows."""
    try:
        await client.health()
        return
    except DaemonUnavailable:
        if plan is None:
            raise
    proc: subprocess.Popen[bytes] | None = None
    spawns = 0
    log_path = plan.data_dir.resolve() / LOG_NAME
    with anyio.move_on_after(DAEMON_START_TIMEOUT):
        while True:
            # returncode, not poll(): the reaper thread holds the wait.
            if (proc is None or proc.returncode is not None) and spawns < MAX_SPAWNS:
                proc = await anyio.to_thread.run_sync(spawn_daemon, plan)
                spawns += 1
                idle = f"; it stops after {plan.idle_exit:g} s idle" if plan.idle_exit else ""
                say(
                    f"started the od-runs daemon for {plan.url} (pid {proc.pid}, data in "
                    f"{plan.data_dir.resolve()}); its log is {log_path}{idle}"
                )
            await anyio.sleep(HEALTH_POLL)
            try:
                await client.health()
                return
            except DaemonUnavailable:
                pass
    raise DaemonUnavailable(
        f"started a daemon for {plan.url} but it did not answer within "
        f"{DAEMON_START_TIMEOUT:.0f}s; see {log_path}"
    )


class LazyDaemon:
    """The RunsBackend of `od-runs mcp`: a DaemonClient that reaches the daemon on first use."""

    def __init__(self, client: DaemonClient, plan: SpawnPlan | None) -> None:
        self._client = client
        self._plan = plan
        self._lock = anyio.Lock()
        self._ready = False

    async def _ensure(self) -> None:
        async with self._lock:
            if not self._ready:
                await ensure_daemon(self._client, self._plan)
                self._ready = True

    async def _call(self, request: Callable[[], Awaitable[T]]) -> T:
        if not self._ready:
            await self._ensure()
        try:
            return await request()
        except DaemonUnavailable as exc:
            if not _refused(exc):
                raise
            # The daemon is gone (an idle exit, a restart) and the request never reached it:
            # start it again and send the request once more.
            self._ready = False
            await self._ensure()
            return await request()

    async def start(self, request: RunCreate) -> RunStatus:
        """POST /api/runs."""
        return await self._call(lambda: self._client.start(request))

    async def get(self, run_id: str) -> RunStatus:
        """GET /api/runs/{id}."""
        return await self._call(lambda: self._client.get(run_id))

    async def list(
        self,
        project_id: str | None = None,
        conversation_id: str | None = None,
        status: str | None = None,
        limit: int = 200,
    ) -> builtins.list[RunStatus]:
        """GET /api/runs with filters."""
        return await self._call(
            lambda: self._client.list(project_id, conversation_id, status, limit)
        )

    async def cancel(self, run_id: str, grace: float | None = None) -> RunStatus:
        """POST /api/runs/{id}/cancel."""
        return await self._call(lambda: self._client.cancel(run_id, grace))

    async def wait(self, run_id: str, timeout: float | None = None) -> RunStatus:
        """The status once terminal (or when timeout passes)."""
        return await self._call(lambda: self._client.wait(run_id, timeout))

    async def wait_for_events(self, run_id: str, after: int, timeout: float) -> RunStatus:
        """Return when the run has events after `after`, is terminal, or timeout passes."""
        return await self._call(lambda: self._client.wait_for_events(run_id, after, timeout))

    async def events(
        self, run_id: str, after: int = 0, limit: int = 100
    ) -> tuple[builtins.list[Event], bool]:
        """A JSON page of events after a cursor, and whether more exist."""
        return await self._call(lambda: self._client.events(run_id, after, limit))

    async def watch(self, run_id: str, on_change: OnChange) -> None:
        """Call on_change with the status now and after each change, until it is terminal."""
        await self._call(lambda: self._client.watch(run_id, on_change))

    async def list_sessions(
        self, conversation_id: str | None = None, status: str | None = None, limit: int = 200
    ) -> builtins.list[SessionStatus]:
        """GET /api/sessions with filters."""
        return await self._call(lambda: self._client.list_sessions(conversation_id, status, limit))

    async def get_session(self, session_id: str) -> SessionDetail:
        """GET /api/sessions/{id}."""
        return await self._call(lambda: self._client.get_session(session_id))

    async def diff(
        self, run_id: str, path: str | None = None, offset: int = 0, max_bytes: int | None = None
    ) -> DiffPage:
        """GET /api/runs/{id}/diff: a page of a worktree run's diff."""
        return await self._call(lambda: self._client.diff(run_id, path, offset, max_bytes))
