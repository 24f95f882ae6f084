"""Several real daemons on one PostgreSQL, for the multi-daemon tests (issue 11).

A Cluster is N `od-runs serve` subprocesses (tests/conftest.py's Daemon), each with its own
data dir and worker id (w1, w2, ...), all on one database. It tells which daemon executes a
run (the status body's workerId), reads a run's SSE or JSON pages from any daemon, and
crashes (kill -9), freezes (SIGSTOP) or restarts a daemon. Children of the runs it started are
killed at teardown if a test left one behind, so a failing test cannot leak processes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import psutil

from od_runs.agents.process import group_members

from .conftest import RUN_DEADLINE, TERMINAL, Daemon, parse_frames, poll, process_alive

# Short, so that the tests about worker loss wait seconds, not the default 15.
LEASE_SECONDS = 2.0
# What a loaded 2-core machine may add to a bound of the design (lease + one heartbeat).
LOAD_SLACK = 8.0
RUN_ID_ENV = "OD_RUNS_RUN_ID"


def loss_bound(lease: float) -> float:
    """Invariant 12's bound (lease TTL plus one heartbeat, lease/3), plus slack for load."""
    return lease + lease / 3 + LOAD_SLACK


class Cluster:
    """Daemons w1..wN on one database URL, each with its own data dir under root."""

    def __init__(
        self,
        root: Path,
        database_url: str,
        *,
        size: int = 3,
        lease_seconds: float = LEASE_SECONDS,
        max_runs: int | None = None,
    ) -> None:
        self.root = root
        self.database_url = database_url
        self.lease = lease_seconds
        self.max_runs = max_runs
        self.ids = [f"w{i}" for i in range(1, size + 1)]
        self.daemons: dict[str, Daemon] = {}
        self.paused: set[str] = set()
        self.run_ids: set[str] = set()

    # Starting and stopping --------------------------------------------------------------

    def _args(self, worker_id: str) -> list[str]:
        args = [
            "--database-url",
            self.database_url,
            "--worker-id",
            worker_id,
            "--lease-seconds",
            str(self.lease),
        ]
        if self.max_runs is not None:
            args += ["--max-runs", str(self.max_runs)]
        return args

    def start(self) -> Cluster:
        """Start every daemon and wait until each sees all of them alive."""
        try:
            # Side by side (they also race to migrate the database, which must happen once),
            # all spawned from this thread: a Daemon's PDEATHSIG is tied to the thread that
            # forks it, so helper threads would take their daemons with them when they end.
            for worker_id in self.ids:
                data_dir = self.root / worker_id / "runs_log"
                data_dir.mkdir(parents=True)
                daemon = Daemon(data_dir, None, *self._args(worker_id))
                self.daemons[worker_id] = daemon
                daemon.spawn()
            for daemon in self.daemons.values():
                daemon.wait_healthy()
            for worker_id in self.ids:
                self.wait_workers(worker_id, alive=set(self.ids))
        except BaseException:
            self.stop()  # a `with` never reaches __exit__ when __enter__ fails
            raise
        return self

    def stop(self) -> None:
        """Stop every daemon still running, then kill what the tests' runs left behind."""
        for worker_id in list(self.paused):
            self.resume(worker_id)
        for daemon in self.daemons.values():
            if daemon.proc is None or daemon.proc.poll() is not None:
                continue
            daemon.proc.send_signal(signal.SIGTERM)
        for daemon in self.daemons.values():
            if daemon.proc is None:
                continue
            try:
                daemon.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.proc.kill()
                daemon.proc.wait(timeout=10)
        for pid in self.leftovers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def leftovers(self) -> list[int]:
        """Live processes carrying the run id of a run this cluster's tests created."""
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.environ().get(RUN_ID_ENV) in self.run_ids and process_alive(proc.pid):
                    found.append(proc.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
                continue
        return found

    # Faults -----------------------------------------------------------------------------

    def kill(self, worker_id: str) -> None:
        """kill -9 a daemon: a crash, its children left running."""
        self.daemons[worker_id].kill()

    def pause(self, worker_id: str) -> None:
        """SIGSTOP a daemon: alive but silent, as a daemon in a long GC pause or a VM freeze."""
        proc = self.daemons[worker_id].proc
        assert proc is not None
        proc.send_signal(signal.SIGSTOP)
        self.paused.add(worker_id)

    def resume(self, worker_id: str) -> None:
        """SIGCONT a paused daemon."""
        proc = self.daemons[worker_id].proc
        assert proc is not None
        proc.send_signal(signal.SIGCONT)
        self.paused.discard(worker_id)

    def restart(self, worker_id: str) -> Daemon:
        """Start a stopped or killed daemon again: same worker id, port and data dir."""
        old = self.daemons[worker_id]
        assert old.proc is not None and old.proc.poll() is not None, "still running"
        daemon = Daemon(old.data_dir, old.port, *self._args(worker_id))
        self.daemons[worker_id] = daemon
        return daemon.start()

    # Reading the cluster ----------------------------------------------------------------

    def __getitem__(self, worker_id: str) -> Daemon:
        return self.daemons[worker_id]

    def others(self, *worker_ids: str) -> list[str]:
        """The worker ids of the cluster but these."""
        return [w for w in self.ids if w not in worker_ids]

    def create(self, worker_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST /api/runs on one daemon; the new run's status body."""
        run = self.daemons[worker_id].create(body)
        self.run_ids.add(run["id"])
        return run

    def status(self, run_id: str, via: str) -> dict[str, Any]:
        """GET /api/runs/{id} on one daemon."""
        with self.daemons[via].client() as http:
            response = http.get(f"/api/runs/{run_id}")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def executor(self, run_id: str, via: str, deadline: float = RUN_DEADLINE) -> str:
        """The worker id of the daemon that claimed the run (its workerId), once it has one."""
        worker_id: str = poll(
            f"run {run_id} to be claimed", lambda: self.status(run_id, via)["workerId"], deadline
        )
        assert worker_id in self.ids, f"workerId {worker_id!r} is none of {self.ids}"
        return worker_id

    def wait_status(
        self,
        run_id: str,
        via: str,
        done: Callable[[dict[str, Any]], bool],
        what: str,
        deadline: float = RUN_DEADLINE,
    ) -> dict[str, Any]:
        """Poll one daemon's status body of a run until done(body)."""

        def probe() -> dict[str, Any] | None:
            body = self.status(run_id, via)
            return body if done(body) else None

        return poll(f"run {run_id} {what} on {via}", probe, deadline)  # type: ignore[no-any-return]

    def wait_terminal(
        self, run_id: str, via: str, deadline: float = RUN_DEADLINE
    ) -> dict[str, Any]:
        """Poll one daemon until the run is terminal there."""
        return self.wait_status(run_id, via, lambda b: b["status"] in TERMINAL, "to end", deadline)

    def child_pid(self, run_id: str, via: str) -> int:
        """The pid of the run's child once one daemon's status body shows it running."""
        body = self.wait_status(
            run_id, via, lambda b: b["status"] == "running" and b["childPid"], "to show its pid"
        )
        return int(body["childPid"])

    def health(self, worker_id: str) -> dict[str, Any]:
        """GET /api/health on one daemon."""
        with self.daemons[worker_id].client(timeout=10) as http:
            response = http.get("/api/health")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def workers_seen(self, worker_id: str) -> dict[str, dict[str, Any]]:
        """The workers one daemon's /api/health lists, by id."""
        workers = self.health(worker_id)["workers"]
        assert workers is not None, f"{worker_id}: /api/health lists no workers"
        return {w["id"]: w for w in workers}

    def wait_workers(
        self,
        via: str,
        *,
        alive: set[str] | None = None,
        dead: set[str] | None = None,
        deadline: float = RUN_DEADLINE,
    ) -> dict[str, dict[str, Any]]:
        """Poll a daemon's /api/health until the given workers show alive, the others dead."""

        def probe() -> dict[str, dict[str, Any]] | None:
            seen = self.workers_seen(via)
            ok = all(w in seen and seen[w]["alive"] for w in alive or ()) and all(
                w in seen and not seen[w]["alive"] for w in dead or ()
            )
            return seen if ok else None

        return poll(f"{via} to see alive={alive} dead={dead}", probe, deadline)  # type: ignore[no-any-return]


# Events from any daemon -------------------------------------------------------------------


class SseStream:
    """A run's SSE stream on one daemon, read a frame at a time while it stays open."""

    def __init__(
        self,
        daemon: Daemon,
        run_id: str,
        *,
        after: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.frames: list[dict[str, str]] = []
        self.closed = False
        self._stack = contextlib.ExitStack()
        http = self._stack.enter_context(daemon.client())
        response = self._stack.enter_context(
            http.stream(
                "GET",
                f"/api/runs/{run_id}/events",
                params={} if after is None else {"after": str(after)},
                headers=headers or {},
            )
        )
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        self._chunks: Iterator[str] = response.iter_text()
        self._buffer = ""

    def read_until(self, done: Callable[[list[dict[str, str]]], bool]) -> list[dict[str, str]]:
        """Read until done(frames so far) or the stream closes; every frame so far."""
        while not self.closed and not done(self.frames):
            chunk = next(self._chunks, None)
            if chunk is None:
                self.closed = True
                break
            self._buffer += chunk
            complete, _, self._buffer = self._buffer.rpartition("\n\n")
            self.frames += parse_frames(complete)
        return self.frames

    def read_to_end(self) -> list[dict[str, str]]:
        """Read until the daemon closes the stream (after a run's `end`)."""
        return self.read_until(lambda _: False)

    def close(self) -> None:
        """Hang up."""
        self._stack.close()

    def __enter__(self) -> SseStream:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


def read_sse(
    daemon: Daemon, run_id: str, *, headers: dict[str, str] | None = None
) -> list[dict[str, str]]:
    """A run's whole SSE stream on one daemon, to its close."""
    with SseStream(daemon, run_id, headers=headers) as stream:
        return stream.read_to_end()


def event_page(daemon: Daemon, run_id: str, after: int, limit: int = 1000) -> dict[str, Any]:
    """One JSON page of a run's events after a cursor (format=json)."""
    with daemon.client() as http:
        response = http.get(
            f"/api/runs/{run_id}/events",
            params={"format": "json", "after": str(after), "limit": str(limit)},
        )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def all_events(daemon: Daemon, run_id: str, after: int = 0, limit: int = 1000) -> list[dict]:
    """Every event after a cursor, page by page, as one daemon serves them now."""
    events: list[dict] = []
    while True:
        page = event_page(daemon, run_id, after, limit)
        events += page["items"]
        after = page["nextCursor"]
        if not page["hasMore"]:
            return events


def has_output(daemon: Daemon, run_id: str, text: str) -> bool:
    """True once one of the run's stdout events, as this daemon serves them, is text."""
    return any(
        e["event"] == "stdout" and (e["data"] or {}).get("text") == text
        for e in all_events(daemon, run_id)
    )


def wait_output(daemon: Daemon, run_id: str, text: str, deadline: float = RUN_DEADLINE) -> None:
    """Poll a daemon until the run printed a line (a child saying it is ready)."""
    poll(f"run {run_id} to print {text!r}", lambda: has_output(daemon, run_id, text), deadline)


# Children ---------------------------------------------------------------------------------


def open_gate(path: Path) -> bool:
    """Let every child blocked opening the FIFO at path go on (they read EOF); False if none."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # no reader yet
            return False
        raise
    os.close(fd)
    return True


def release(path: Path, deadline: float = RUN_DEADLINE) -> None:
    """Wait for a child to block on the FIFO at path, then let it go on."""
    poll(f"a child to wait on {path.name}", lambda: open_gate(path), deadline)


def make_gate(path: Path) -> Path:
    """A FIFO children block on until the test opens it (open_gate, release)."""
    os.mkfifo(path)
    return path


def group_gone(pid: int) -> bool:
    """True when neither the process nor any member of its process group is alive."""
    return not process_alive(pid) and not group_members(pid)


def http_error(response: httpx.Response, status: int, code: str) -> str:
    """Assert an error response's status and code; its message."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return str(error["message"])
