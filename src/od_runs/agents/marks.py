"""Processes carrying a run's marker: the escapees of a process group, found in one walk.

Every managed child's environment has a marker (NAME=value) its descendants inherit, so a
descendant that left the group (setsid, a daemonising tool) can still be found and killed
when its run ends. Finding them means reading every process's environment, which is the most
expensive thing a run's end does: on a busy daemon, psutil's walk took a fifth of a core at
36 runs/s, in a worker thread that holds the GIL against the event loop. So:

- on Linux the walk reads /proc/<pid>/environ as bytes and looks for the marker, without
  building a dict per process (five times cheaper than psutil); elsewhere psutil walks;
- runs that end while a walk is under way share the next one (Sweeper): at most one walk at a
  time, and each walk answers for every marker asked for meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Collection
from pathlib import Path

import anyio
import psutil

_PROC = Path("/proc")


def find_marked(markers: Collection[str]) -> dict[str, list[int]]:
    """Pids whose environment carries each marker (NAME=value), other than this process."""
    if not markers:
        return {}
    if _PROC.joinpath("self", "environ").exists():
        return _find_in_proc(markers)
    return _find_with_psutil(markers)


def processes_marked(marker: str) -> list[int]:
    """Pids whose environment carries marker (NAME=value): our children's descendants."""
    return find_marked([marker]).get(marker, [])


def _find_in_proc(markers: Collection[str]) -> dict[str, list[int]]:
    # Each variable in /proc/<pid>/environ ends in a NUL: b"\0NAME=value\0" finds exactly one
    # variable once the block is framed by NULs on both sides.
    needles = {m: b"\0" + m.encode() + b"\0" for m in markers}
    found: dict[str, list[int]] = {}
    me = os.getpid()
    for entry in os.scandir(_PROC):
        name = entry.name
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                block = b"\0" + f.read()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if not block.endswith(b"\0"):
            block += b"\0"
        for marker, needle in needles.items():
            if needle in block:
                found.setdefault(marker, []).append(int(name))
    return found


def _find_with_psutil(markers: Collection[str]) -> dict[str, list[int]]:
    wanted = {}
    for marker in markers:
        name, _, value = marker.partition("=")
        wanted[marker] = (name, value)
    found: dict[str, list[int]] = {}
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            env = proc.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
        for marker, (name, value) in wanted.items():
            if env.get(name) == value:
                found.setdefault(marker, []).append(proc.pid)
    return found


class _Walk:
    """The markers one walk looks for, and what it found."""

    def __init__(self) -> None:
        self.markers: set[str] = set()
        self.found: dict[str, list[int]] = {}
        self.done = False


class Sweeper:
    """One walk at a time; callers arriving during a walk share the next one."""

    def __init__(self) -> None:
        self._next: _Walk | None = None
        self._busy = False
        self._changed = anyio.Event()

    async def find(self, marker: str) -> list[int]:
        """Pids carrying marker, from a walk that began after this call."""
        walk = self._next
        if walk is None:
            walk = self._next = _Walk()
        walk.markers.add(marker)
        while not walk.done:
            if self._busy:
                await self._changed.wait()
                continue
            # Nobody walks and ours is not done: it is the next walk, and this caller leads it.
            self._busy, self._next = True, None
            try:
                walk.found = await anyio.to_thread.run_sync(find_marked, frozenset(walk.markers))
            finally:
                walk.done, self._busy = True, False
                changed, self._changed = self._changed, anyio.Event()
                changed.set()
        return walk.found.get(marker, [])


# One sweeper per event loop: its events belong to the loop that waits on them.
_sweepers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Sweeper] = (
    weakref.WeakKeyDictionary()
)


def sweeper() -> Sweeper:
    """The running loop's sweeper."""
    loop = asyncio.get_running_loop()
    found = _sweepers.get(loop)
    if found is None:
        found = _sweepers[loop] = Sweeper()
    return found


__all__ = ["Sweeper", "find_marked", "processes_marked", "sweeper"]
