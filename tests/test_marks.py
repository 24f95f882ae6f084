"""Finding the processes that carry a run's marker (agents/marks.py): the escapees of a
process group that a run's end must still kill (invariant 9), found by one walk over /proc
shared by every run that ends meanwhile."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Collection, Iterator

import anyio
import pytest

from od_runs.agents import marks
from od_runs.agents.marks import Sweeper, find_marked

from .conftest import poll

pytestmark = pytest.mark.anyio

NAME = "OD_RUNS_TEST_MARK"


def marked_sleeper(value: str) -> subprocess.Popen[bytes]:
    """A process in its own session (as an escapee would be) carrying NAME=value."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), NAME: value}
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], env=env, start_new_session=True
    )
    # Until the child has exec'd, /proc shows the environment it was forked with, not NAME.
    needle = f"{NAME}={value}\0".encode()
    poll(f"{NAME} in the sleeper's environment", lambda: needle in _environ(proc.pid))
    return proc


def _environ(pid: int) -> bytes:
    """A process's environment as /proc holds it (empty if it cannot be read)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def test_the_walk_finds_exactly_the_processes_with_the_marker(
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    """A marker names one variable and one value: a longer value, or the value under another
    name, is not a match; the /proc walk and psutil's agree."""
    run = f"run-{os.getpid()}"
    sleepers += [marked_sleeper(run), marked_sleeper(run), marked_sleeper(run + "0")]
    wanted = f"{NAME}={run}"
    longer = f"{NAME}={run}0"
    other_name = f"X{NAME}={run}"

    for finder in (marks._find_in_proc, marks._find_with_psutil):
        found = finder([wanted, longer, other_name])
        assert sorted(found[wanted]) == sorted(p.pid for p in sleepers[:2]), finder
        assert found[longer] == [sleepers[2].pid], finder
        assert other_name not in found, finder
    assert find_marked([]) == {}
    assert marks.processes_marked(f"{NAME}=nobody-{os.getpid()}") == []


async def test_runs_ending_during_a_walk_share_the_next_one(
    monkeypatch: pytest.MonkeyPatch, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    """Thirty runs ending while a walk is under way cost one more walk, not thirty, and each
    gets the pids of its own marker; and a walk that answers a caller began after its call,
    so a process marked before the call is never missed."""
    walks: list[frozenset[str]] = []
    release = threading.Event()
    first_walk_started = threading.Event()
    real = marks.find_marked

    def counted(markers: Collection[str]) -> dict[str, list[int]]:
        walks.append(frozenset(markers))
        if len(walks) == 1:
            first_walk_started.set()
            release.wait(10)  # the first walk is slow: everyone else arrives meanwhile
        return real(markers)

    monkeypatch.setattr(marks, "find_marked", counted)
    sweeper = Sweeper()
    results: dict[str, list[int]] = {}

    async def ask(marker: str) -> None:
        results[marker] = await sweeper.find(marker)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ask, f"{NAME}=first")
        await anyio.to_thread.run_sync(first_walk_started.wait, 10)
        # Marked after the first walk began: only a later walk can see it.
        late = marked_sleeper(f"late-{os.getpid()}")
        sleepers.append(late)
        for n in range(30):
            tg.start_soon(ask, f"{NAME}=none-{n}")
        tg.start_soon(ask, f"{NAME}=late-{os.getpid()}")
        await anyio.wait_all_tasks_blocked()
        release.set()

    assert len(walks) == 2
    assert len(walks[1]) == 31
    assert results[f"{NAME}=late-{os.getpid()}"] == [late.pid]
    assert all(results[f"{NAME}=none-{n}"] == [] for n in range(30))
