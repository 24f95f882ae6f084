"""Child processes: managed_process() owns every agent process from spawn to reap.

One-shot runs (supervision.py) and long-lived session processes (sessions.py) both start
their children here and nowhere else. A managed child:

- leads a new session and process group (start_new_session), so the whole tree is signalled
  at once and survives nothing of ours;
- gets an allowlisted environment, the caller's variables, and a marker (NAME=value) that its
  descendants inherit, so the ones that leave the group (setsid) can still be found;
- has its pid and start time read at once, for the caller to record before anything else
  (crash recovery kills by them, and never a reused pid);
- has its stderr drained by a sibling task, so a chatty child never blocks on a full pipe;
- is stopped on the way out, shielded from cancellation: adapter abort, SIGTERM to the group,
  a grace period, SIGKILL; then whatever is left of the group and every marked escapee dies.

Portability: identity (pid + create time) and group membership come from psutil, which reads
/proc on Linux and sysctl/libproc on macOS, so one code path serves both; marker scans
(marks.py) read /proc directly where it exists and fall back to psutil.
Process groups and signals are POSIX (os.killpg). Windows is not supported.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager

import anyio
import psutil
from anyio.abc import Process

from .lines import LineSink, pump
from .marks import processes_marked, sweeper
from .spawn import spawn

# After the leader exits, grandchildren holding the pipes get this long before we stop reading.
DRAIN_TIMEOUT = 1.0
# How long we wait for a SIGKILLed group to disappear before reporting it stuck.
REAP_TIMEOUT = 5.0
# The default SIGTERM -> SIGKILL grace of a child stopped on the way out.
DEFAULT_GRACE = 5.0
_POLL = 0.01

# Variables a child inherits from the daemon; everything else it gets is explicit.
ENV_ALLOWLIST = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TERM",
    "TMPDIR",
    "TZ",
    "PYTHONPATH",
    "VIRTUAL_ENV",
)

# TLS and proxy settings an agent that calls its provider over the network inherits.
NETWORK_ENV = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
)

Abort = Callable[[], Awaitable[None]]


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The daemon's allowlisted variables plus the run's own."""
    env = {k: v for k, v in os.environ.items() if k in ENV_ALLOWLIST or k.startswith("LC_")}
    env.update(extra)
    return env


# Identity ---------------------------------------------------------------------------------


def start_time(pid: int) -> int | None:
    """The process's creation time in milliseconds since the epoch; None if it is gone.

    Together with the pid it names one process: a pid reused later has a later start time.
    """
    try:
        return round(psutil.Process(pid).create_time() * 1000)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def is_alive(pid: int) -> bool:
    """True if pid is a live, non-zombie process (a killed child is a zombie until reaped)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _no_group(pgid: int) -> bool:
    """True if the group has no member at all, not even a zombie (one cheap syscall)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in a process group."""
    if _no_group(pgid):
        return []  # no walk over every process
    members: list[int] = []
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) != pgid:
                continue
        except (ProcessLookupError, PermissionError):
            continue
        if is_alive(pid):
            members.append(pid)
    return members


# Signals ----------------------------------------------------------------------------------


def signal_group(pgid: int, sig: int) -> bool:
    """Send sig to a process group; False if the group is gone (or not ours)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def signal_pid(pid: int, sig: int) -> bool:
    """Send sig to one process; False if it is gone (or not ours)."""
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def signal_name(returncode: int | None) -> str | None:
    """'SIGTERM' for a child killed by SIGTERM, else None."""
    if returncode is None or returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"SIG{-returncode}"


async def wait_group_gone(pgid: int, timeout: float = REAP_TIMEOUT) -> bool:
    """SIGKILL whatever is left of a group and wait until no live member remains."""
    with anyio.move_on_after(timeout):
        while True:
            if _no_group(pgid):
                return True
            members = await anyio.to_thread.run_sync(group_members, pgid)
            if not members:
                return True
            signal_group(pgid, signal.SIGKILL)
            await anyio.sleep(_POLL)
    return False


async def kill_marked(marker: str) -> list[int]:
    """SIGKILL every process carrying marker (those that left their group); their pids."""
    pids = await sweeper().find(marker)
    return [pid for pid in pids if signal_pid(pid, signal.SIGKILL)]


def kill_recorded_group(pid: int, recorded_start: int | None) -> bool:
    """After a crash: SIGKILL a recorded group only if it is still provably ours."""
    current = start_time(pid)
    if current is not None and current != recorded_start:
        return False  # the pid now belongs to some other process
    # The leader is ours, or gone: a pgid cannot be reused while any member of it lives.
    return signal_group(pid, signal.SIGKILL)


async def terminate(process: Process, grace: float, abort: Abort | None = None) -> str | None:
    """The ladder: adapter abort, SIGTERM to the group, grace, SIGKILL. Returns the last signal."""
    pgid = process.pid
    if abort is not None:
        with anyio.move_on_after(grace):
            await abort()
            await process.wait()
        if process.returncode is not None:
            return None
    sent: str | None = None
    if signal_group(pgid, signal.SIGTERM):
        sent = "SIGTERM"
    with anyio.move_on_after(grace):
        await process.wait()
    if process.returncode is None and signal_group(pgid, signal.SIGKILL):
        sent = "SIGKILL"
    await process.wait()
    return sent


# The owner --------------------------------------------------------------------------------


class Child:
    """A managed child: its process, identity, and the one way to stop it."""

    def __init__(self, process: Process, marker: str) -> None:
        self.process = process
        self.pid = process.pid
        self.start_time = start_time(process.pid)
        self.marker = marker
        # The last signal the ladder sent (None: it exited by itself or on the abort).
        self.signal_sent: str | None = None
        # Set once stderr reached EOF (or was never read).
        self.stderr_closed = anyio.Event()

    @property
    def returncode(self) -> int | None:
        """The exit status once the leader has exited (negative: killed by that signal)."""
        return self.process.returncode

    async def wait(self) -> int:
        """Wait for the leader to exit; its exit status."""
        return await self.process.wait()

    async def stop(self, grace: float, abort: Abort | None = None) -> str | None:
        """Run the ladder (shielded) unless the child has exited; the last signal it sent.

        Callers may overlap (a cancel while the adapter hangs up): each climbs its own
        ladder, so a short one is never held up by a long grace elsewhere.
        """
        with anyio.CancelScope(shield=True):
            if self.process.returncode is None:
                sent = await terminate(self.process, grace, abort)
                self.signal_sent = sent or self.signal_sent
        return self.signal_sent

    async def close_stdin(self) -> None:
        """Close the child's stdin (many agents exit on it); a closed pipe is fine."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                await self.process.stdin.aclose()


async def _spawn(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None, stdin: bool
) -> Process:
    # Not anyio.open_process: under uvloop that forks the whole daemon (spawn.py).
    return await spawn(argv, stdin=stdin, cwd=cwd, env=env, start_new_session=True)


@asynccontextmanager
async def managed_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | None,
    stdin: bool,
    marker: tuple[str, str],
    stderr: LineSink | None = None,
    grace: float = DEFAULT_GRACE,
    abort: Abort | None = None,
) -> AsyncIterator[Child]:
    """Spawn argv in its own group; on exit stop it (abort, SIGTERM, grace, SIGKILL) and reap.

    env is added to the daemon's allowlist (child_env); marker (NAME, value) is set in the
    child's environment. stderr, if given, receives stderr's lines from a sibling task;
    otherwise stderr is drained and dropped. A spawn failure (FileNotFoundError,
    PermissionError) propagates before anything is yielded.
    """
    full_env = child_env(env)
    full_env[marker[0]] = marker[1]
    process = await _spawn(argv, env=full_env, cwd=cwd, stdin=stdin)
    child = Child(process, f"{marker[0]}={marker[1]}")

    async def drain() -> None:
        assert process.stderr is not None
        try:
            await pump(process.stderr, stderr or _discard)
        finally:
            child.stderr_closed.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(drain)
            try:
                yield child
            finally:
                with anyio.CancelScope(shield=True):
                    await child.stop(grace, abort)
                    with anyio.move_on_after(DRAIN_TIMEOUT):
                        await child.stderr_closed.wait()
                    tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await wait_group_gone(child.pid)
            await kill_marked(child.marker)
            await process.aclose()


def _discard(lines: list[tuple[str, bool]]) -> None:
    pass


__all__ = [
    "DRAIN_TIMEOUT",
    "ENV_ALLOWLIST",
    "NETWORK_ENV",
    "Child",
    "child_env",
    "group_members",
    "is_alive",
    "kill_marked",
    "kill_recorded_group",
    "managed_process",
    "processes_marked",
    "signal_name",
    "start_time",
    "wait_group_gone",
]
