"""Children started by vfork (agents/spawn.py): output read whole, exits seen, and no
descriptor lost or leaked while worker threads open files beside them.

The race spawn.py's _pipe_file avoids (uvloop closing a pipe's number twice, the second time
after a thread got it) is too narrow to hit here at will; it showed as EBADF in psutil's
worker threads when 400 short runs were posted to a daemon 24 at a time, and does not since.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading

import uvloop

from od_runs.agents.spawn import spawn

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def open_descriptors() -> int:
    """Descriptors this process has open, after a first uvloop (which keeps two of its own)."""
    uvloop.run(asyncio.sleep(0))
    return len(os.listdir("/proc/self/fd"))


def test_many_short_children_beside_busy_threads_all_read_whole_and_reaped() -> None:
    """Invariant 9's process code under load: 300 short children, 24 at a time, read to EOF
    and reaped, while three threads keep opening /proc files (psutil does that in worker threads).
    Each child's output arrives whole, every exit code is seen, no listing fails, and the
    daemon is left with the descriptors it had."""
    errors: list[str] = []
    stop = threading.Event()

    def read_own_stat() -> None:
        # Opens and closes a descriptor as fast as it can: one a child's pipe had a moment
        # ago is the first the kernel hands out again.
        pid = str(os.getpid()).encode()
        while not stop.is_set():
            try:
                fd = os.open("/proc/self/stat", os.O_RDONLY)
                try:
                    if not os.read(fd, 64).startswith(pid):
                        errors.append("read another file's bytes")
                finally:
                    os.close(fd)
            except OSError as exc:  # EBADF: someone closed our descriptor
                errors.append(repr(exc))

    async def one(n: int) -> tuple[bytes, int]:
        child = await spawn(
            [sys.executable, "-c", f"print({n}); raise SystemExit({n % 3})"],
            stdin=False,
            cwd=None,
            env=ENV,
            start_new_session=True,
        )
        assert child.stdout is not None
        out = b""
        async for chunk in child.stdout:
            out += chunk
        code = await child.wait()
        await child.aclose()
        return out, code

    async def main() -> list[tuple[bytes, int]]:
        gate = asyncio.Semaphore(24)

        async def guarded(n: int) -> tuple[bytes, int]:
            async with gate:
                return await one(n)

        return await asyncio.gather(*[guarded(n) for n in range(300)])

    before = open_descriptors()
    threads = [threading.Thread(target=read_own_stat) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        results = uvloop.run(main())
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
    assert results == [(b"%d\n" % n, n % 3) for n in range(300)]
    assert len(os.listdir("/proc/self/fd")) <= before


def test_a_child_that_cannot_start_raises_and_leaves_no_descriptor() -> None:
    """A missing program is FileNotFoundError from spawn itself, and its pipes are closed."""

    async def main() -> None:
        await spawn(
            ["/nonexistent/od-runs-child"], stdin=True, cwd=None, env=ENV, start_new_session=True
        )

    before = open_descriptors()
    try:
        uvloop.run(main())
    except FileNotFoundError:
        pass
    else:
        raise AssertionError("spawn of a missing program did not fail")
    assert len(os.listdir("/proc/self/fd")) <= before
