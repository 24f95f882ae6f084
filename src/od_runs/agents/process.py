"""Child processes: spawn in a new process group, read output in chunks, signal ladder."""

from __future__ import annotations

import codecs
import contextlib
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import anyio
from anyio.abc import ByteReceiveStream, Process

READ_SIZE = 64 * 1024
# Longest piece of a line we hold; a longer line is split into continuation events.
MAX_LINE_BYTES = 64 * 1024
# After the leader exits, grandchildren holding the pipes get this long before we stop reading.
DRAIN_TIMEOUT = 1.0
# How long we wait for a SIGKILLed group to disappear before reporting it stuck.
REAP_TIMEOUT = 5.0
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

LineSink = Callable[[list[tuple[str, bool]]], None]


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The daemon's allowlisted variables plus the run's own."""
    env = {k: v for k, v in os.environ.items() if k in ENV_ALLOWLIST or k.startswith("LC_")}
    env.update(extra)
    return env


async def spawn(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None, stdin: bool
) -> Process:
    """Start argv as the leader of a new session and process group."""
    return await anyio.open_process(
        list(argv),
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=dict(env),
        start_new_session=True,
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


class LineSplitter:
    """Bytes in, decoded lines out; an over-long line comes out in bounded pieces.

    Invalid UTF-8 becomes U+FFFD. A character cut at a piece boundary is decoded whole,
    because the pieces of one line share an incremental decoder.
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._rest = b""
        self._max = max_line
        # Pieces of the line in _rest already went out (the decoder may hold half a char).
        self._mid_line = False

    def feed(self, chunk: bytes) -> list[tuple[str, bool]]:
        """Return (text, partial) pairs; partial means the line goes on in the next piece."""
        data = self._rest + chunk if self._rest else chunk
        cut = data.rfind(b"\n")
        whole = data[:cut] if cut >= 0 else b""
        parts = whole.split(b"\n") if cut >= 0 else []
        if parts and not self._mid_line and max(map(len, parts)) <= self._max:
            # The common case, decoded in one call: no newline hides inside a UTF-8
            # sequence, so decoding the block and splitting it equals splitting then decoding.
            text = whole.decode("utf-8", "replace")
            lines = text.split("\n")
            if "\r" in text:
                lines = [line[:-1] if line.endswith("\r") else line for line in lines]
            out = [(line, False) for line in lines]
        else:
            out = []
            for part in parts:
                pieces = [part[i : i + self._max] for i in range(0, len(part), self._max)] or [b""]
                last = pieces.pop()
                out += [(self._decoder.decode(p), True) for p in pieces]
                if last.endswith(b"\r"):
                    last = last[:-1]
                out.append((self._decoder.decode(last, final=True), False))
                self._mid_line = False
        rest = data[cut + 1 :] if cut >= 0 else data
        while len(rest) > self._max:
            out.append((self._decoder.decode(rest[: self._max]), True))
            rest = rest[self._max :]
            self._mid_line = True
        self._rest = rest
        return out

    def finish(self) -> list[tuple[str, bool]]:
        """Flush a last line that had no newline."""
        rest, self._rest = self._rest, b""
        text = self._decoder.decode(rest, final=True)
        return [(text, False)] if text or rest else []


async def pump(stream: ByteReceiveStream, sink: LineSink) -> None:
    """Read a pipe to EOF in large chunks; hand each chunk's lines to sink as one batch."""
    splitter = LineSplitter()
    try:
        while True:
            try:
                chunk = await stream.receive(READ_SIZE)
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                break
            lines = splitter.feed(chunk)
            if lines:
                sink(lines)
    finally:
        last = splitter.finish()
        if last:
            sink(last)


async def feed_stdin(process: Process, data: bytes) -> None:
    """Write data to the child's stdin and close it; a child that does not read is fine."""
    assert process.stdin is not None
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        if data:
            await process.stdin.send(data)
    with contextlib.suppress(OSError, anyio.BrokenResourceError):
        await process.stdin.aclose()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[19])


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in a process group."""
    members: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        # fields[0] is the state, fields[2] the process group.
        if int(fields[2]) == pgid and fields[0] != b"Z":
            members.append(int(entry.name))
    return members


def signal_group(pgid: int, sig: int) -> bool:
    """Send sig to a process group; False if the group is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def signal_pid(pid: int, sig: int) -> bool:
    """Send sig to one process; False if it is gone (or not ours)."""
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def wait_group_gone(pgid: int, timeout: float = REAP_TIMEOUT) -> bool:
    """SIGKILL whatever is left of a group and wait until no live member remains."""
    with anyio.move_on_after(timeout):
        while True:
            members = await anyio.to_thread.run_sync(group_members, pgid)
            if not members:
                return True
            signal_group(pgid, signal.SIGKILL)
            await anyio.sleep(_POLL)
    return False


async def terminate(
    process: Process, grace: float, abort: Callable[[], Awaitable[None]] | None = None
) -> str | None:
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


def signal_name(returncode: int | None) -> str | None:
    """'SIGTERM' for a child killed by SIGTERM, else None."""
    if returncode is None or returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"SIG{-returncode}"


def kill_recorded_group(pid: int, recorded_start: int | None) -> bool:
    """After a crash: SIGKILL a recorded group only if it is still provably ours."""
    current = start_time(pid)
    if current is not None and current != recorded_start:
        return False  # the pid now belongs to some other process
    # The leader is ours, or gone: a pgid cannot be reused while any member of it lives.
    return signal_group(pid, signal.SIGKILL)


# Longest JSON line an agent adapter reassembles from pieces before giving up on it.
MAX_JSON_LINE = 16 * 1024 * 1024
# What LineJoiner.feed returns for a line it skipped for being over MAX_JSON_LINE.
OVERLONG = object()


class LineJoiner:
    """Reassembles a line the reader delivered in bounded pieces; skips an absurd one."""

    def __init__(self, limit: int = MAX_JSON_LINE) -> None:
        self._limit = limit
        self._pending: list[str] = []
        self._size = 0
        self._dropping = False

    def feed(self, text: str, partial: bool) -> str | object | None:
        """The whole line once its last piece arrives, OVERLONG once, or None meanwhile."""
        if self._dropping:
            self._dropping = partial
            return None
        if not partial and not self._pending:
            return text
        self._pending.append(text)
        self._size += len(text)
        if self._size > self._limit:
            self._pending, self._size = [], 0
            self._dropping = partial
            return OVERLONG
        if partial:
            return None
        whole = "".join(self._pending)
        self._pending, self._size = [], 0
        return whole
